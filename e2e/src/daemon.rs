//! The pvecri daemon for one test: its own config, socket, state directory and log.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::cri_client::{self, ImageClient, RuntimeClient};
use crate::mounts::unmount_under;

/// Environment variable naming the daemon binary to test.
pub const PVECRI_BIN_ENV: &str = "PVECRI_BIN";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// How to run the daemon.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// TOML appended to the generated config (which sets `socket`, `state_dir` and
    /// `log_level`), e.g. `[storage]` sections.
    pub config_toml_extra: String,
    pub log_level: String,
    /// Extra arguments after `serve --config FILE`.
    pub extra_args: Vec<String>,
    /// Extra environment variables for the daemon.
    pub env: Vec<(String, String)>,
    /// Run the daemon in the mount and UTS namespaces of this process (the pve-harness's
    /// namespace holder, where `/etc/pve` is); its mounts are undone there at the end.
    pub namespace_of: Option<u32>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            config_toml_extra: String::new(),
            log_level: "debug".to_owned(),
            extra_args: Vec::new(),
            env: Vec::new(),
            namespace_of: None,
        }
    }
}

/// A running (or deliberately stopped) daemon. Drop stops it, unmounts anything left
/// under its state directory, prints its log if the test is failing, and removes its files.
pub struct Daemon {
    child: Option<Child>,
    dir: Option<TempDir>,
    binary: PathBuf,
    options: DaemonOptions,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl Daemon {
    /// Writes the config, spawns the daemon and waits until its socket accepts connections.
    pub fn start(options: DaemonOptions) -> anyhow::Result<Daemon> {
        let binary = binary_path()?;
        let dir = tempfile::Builder::new()
            .prefix("pvecri-daemon-")
            .tempdir()?;
        let socket = dir.path().join("pvecri.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "socket path {} is too long for a Unix socket: set TMPDIR to a shorter directory",
                socket.display()
            );
        }
        let state_dir = dir.path().join("state");
        let config_path = dir.path().join("config.toml");
        let config = render_config(&socket, &state_dir, &options)?;
        std::fs::write(&config_path, config)?;
        let mut daemon = Daemon {
            child: None,
            log_path: dir.path().join("daemon.log"),
            dir: Some(dir),
            binary,
            options,
            socket,
            state_dir,
            config_path,
        };
        daemon.spawn()?;
        Ok(daemon)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        // Appending keeps the log of earlier runs (before a kill9 or restart).
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut cmd = match self.options.namespace_of {
            // nsenter execs the daemon (no fork for mount and UTS namespaces): the child's pid
            // is the daemon's, for kill9 and the like.
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.arg("--target")
                    .arg(pid.to_string())
                    .args(["--mount", "--uts", "--"])
                    .arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .args(&self.options.extra_args)
            .envs(
                self.options
                    .env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "pvecri exited during start-up ({status}); log:\n{}",
                    self.log()
                );
            }
            if UnixStream::connect(&self.socket).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "pvecri did not accept on {} within {START_TIMEOUT:?}; log:\n{}",
                    self.socket.display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the daemon logged so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL, as a crash would: no cleanup by the daemon, stale socket left behind.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("cannot SIGKILL pvecri")?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait for the exit (SIGKILL and an error after a timeout).
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("pvecri is not running");
        };
        terminate(&mut child, STOP_TIMEOUT)
    }

    /// Stops the daemon if it runs, then starts it again on the same config and state.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.stop()?;
        }
        self.spawn()
    }

    pub async fn runtime_client(&self) -> anyhow::Result<RuntimeClient> {
        cri_client::runtime_client(&self.socket).await
    }

    pub async fn image_client(&self) -> anyhow::Result<ImageClient> {
        cri_client::image_client(&self.socket).await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Err(e) = terminate(&mut child, STOP_TIMEOUT)
        {
            eprintln!("e2e: {e:#}");
        }
        if std::thread::panicking() {
            eprintln!(
                "---- pvecri log ({}) ----\n{}---- end of pvecri log ----",
                self.log_path.display(),
                self.log()
            );
        }
        if let Some(pid) = self.options.namespace_of
            && let Err(e) = unmount_in_namespace(pid, &self.state_dir)
        {
            eprintln!("e2e: unmounting in the namespace of {pid}: {e:#}");
        }
        if let Err(e) = unmount_under(&self.state_dir, |_| false) {
            // Removing a directory with something still mounted inside would delete through
            // the mount: keep it for inspection instead.
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("e2e: {e:#}; leaving {} in place", kept.display());
            }
        }
    }
}

/// Lazily unmounts everything at or below `dir` in the mount namespace of `pid`, deepest
/// first.
pub fn unmount_in_namespace(pid: u32, dir: &Path) -> anyhow::Result<()> {
    let script = r#"for i in 1 2 3 4 5 6 7 8; do
  m=$(awk -v d="$0" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-)
  [ -z "$m" ] && exit 0
  for p in $m; do umount -l "$p" 2>/dev/null; done
done
exit 1"#;
    crate::cmd::run(
        Command::new("nsenter")
            .arg("--target")
            .arg(pid.to_string())
            .args(["--mount", "--", "sh", "-c", script])
            .arg(dir),
    )?;
    Ok(())
}

/// SIGTERM, wait up to `timeout`, then SIGKILL (and report that it had to).
fn terminate(child: &mut Child, timeout: Duration) -> anyhow::Result<ExitStatus> {
    let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
    if let Err(e) = kill(pid, Signal::SIGTERM)
        && child.try_wait()?.is_none()
    {
        return Err(e).context("cannot SIGTERM pvecri");
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("pvecri did not exit within {timeout:?} of SIGTERM and was killed")
}

fn render_config(
    socket: &Path,
    state_dir: &Path,
    options: &DaemonOptions,
) -> anyhow::Result<String> {
    let quote = |p: &Path| -> anyhow::Result<String> {
        let s = p
            .to_str()
            .with_context(|| format!("non-UTF-8 path {}", p.display()))?;
        Ok(serde_json::to_string(s)?) // a JSON string is a valid TOML basic string
    };
    Ok(format!(
        "socket = {}\nstate_dir = {}\nlog_level = {}\n\n{}\n",
        quote(socket)?,
        quote(state_dir)?,
        serde_json::to_string(&options.log_level)?,
        options.config_toml_extra
    ))
}

/// `$PVECRI_BIN`, else `pvecri` in the target directory this test was built into, else
/// `<workspace>/target/debug/pvecri`.
pub fn binary_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(PVECRI_BIN_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{PVECRI_BIN_ENV}={} does not name a file", path.display());
        }
        return Ok(path);
    }
    let mut candidates = Vec::new();
    // Test binaries live in <target>/<profile>/deps/.
    if let Some(profile_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_owned()))
    {
        candidates.push(profile_dir.join("pvecri"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/pvecri"));
    for candidate in &candidates {
        if candidate.is_file() {
            warn_if_stale(candidate);
            return Ok(candidate.clone());
        }
    }
    bail!(
        "the pvecri binary is missing (looked at {}): run `cargo build -p cri` first, or set {PVECRI_BIN_ENV}",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `cargo test -p e2e` does not rebuild the daemon; say so when its sources are newer.
fn warn_if_stale(binary: &Path) {
    let Ok(built) = std::fs::metadata(binary).and_then(|m| m.modified()) else {
        return;
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let newest = [
        "cri/src",
        "imageservice/src",
        "layerfs/src",
        "pve/src",
        "podinit/src",
    ]
    .iter()
    .filter_map(|d| newest_mtime(&workspace.join(d)))
    .max();
    if newest.is_some_and(|n| n > built) {
        eprintln!(
            "e2e: warning: {} is older than its sources: run `cargo build -p cri`",
            binary.display()
        );
    }
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.filter_map(Result::ok) {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if let Ok(m) = meta.modified() {
                newest = newest.max(Some(m));
            }
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_quotes_paths_and_appends_extra() {
        let options = DaemonOptions {
            config_toml_extra: "[cni]\nconf_dir = \"/x\"\n".into(),
            ..Default::default()
        };
        let text = render_config(
            Path::new("/tmp/a b/\"s\".sock"),
            Path::new("/tmp/st"),
            &options,
        )
        .unwrap();
        let value: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(value["socket"].as_str(), Some("/tmp/a b/\"s\".sock"));
        assert_eq!(value["state_dir"].as_str(), Some("/tmp/st"));
        assert_eq!(value["log_level"].as_str(), Some("debug"));
        assert_eq!(value["cni"]["conf_dir"].as_str(), Some("/x"));
    }
}
