//! podinit: PID 1 of every pvecri pod CT.
//!
//! `podinit [--pod-dir DIR] [--grace-period SECS] [--host-ipc] [--log-level LEVEL] [--log-file PATH]`
//!
//! `--host-ipc`: the pod shares the host's IPC namespace and `/dev/shm`; podinit mounts none.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use podinit::server::{self, Options};

const USAGE: &str = "usage: podinit [--pod-dir DIR] [--grace-period SECS] [--host-ipc] [--log-level error|warn|info|debug|trace] [--log-file PATH]";

struct Args {
    pod_dir: PathBuf,
    grace: Duration,
    host_ipc: bool,
    level: tracing::Level,
    log_file: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        pod_dir: PathBuf::from(podinit::api::DEFAULT_POD_DIR),
        grace: Duration::from_secs(10),
        host_ipc: false,
        level: tracing::Level::INFO,
        log_file: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{key} needs a value\n{USAGE}"))
        };
        match key.as_str() {
            "--pod-dir" => args.pod_dir = PathBuf::from(value()?),
            "--grace-period" => {
                let v = value()?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| format!("bad --grace-period {v:?}"))?;
                args.grace = Duration::from_secs_f64(secs);
            }
            "--log-level" => {
                let v = value()?;
                args.level = v.parse().map_err(|_| format!("bad --log-level {v:?}"))?;
            }
            "--log-file" => args.log_file = Some(PathBuf::from(value()?)),
            "--host-ipc" if inline.is_none() => args.host_ipc = true,
            "--version" => {
                return Err(format!("podinit {}", env!("CARGO_PKG_VERSION")));
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(args.level)
        .with_ansi(false)
        .with_target(false);
    match &args.log_file {
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => builder.with_writer(std::sync::Mutex::new(f)).init(),
            Err(e) => {
                eprintln!("podinit: opening log file {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        None => builder.with_writer(std::io::stderr).init(),
    }
    match server::run(Options {
        pod_dir: args.pod_dir,
        grace: args.grace,
        host_ipc: args.host_ipc,
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("podinit: {e}");
            ExitCode::FAILURE
        }
    }
}
