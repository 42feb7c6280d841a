//! What the benchmark examples share: they measure the release build of the daemon.

use std::future::Future;
use std::path::{Path, PathBuf};

/// Runs `bench` on a two-thread runtime against the release build of pvecri
/// (`$PVECRI_BIN`, else `target/release/pvecri`), which the harness then starts.
///
/// Must be called from `main` before any other thread exists: it sets `$PVECRI_BIN` for the
/// harness.
pub fn run_against_release_daemon<F>(bench: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let bin = std::env::var_os(crate::daemon::PVECRI_BIN_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(Path::new("/"))
                .join("target/release/pvecri")
        });
    anyhow::ensure!(
        bin.is_file(),
        "{} is missing: run `cargo build --release -p cri`",
        bin.display()
    );
    // SAFETY: the caller is `main` before any thread exists (the runtime is built below).
    unsafe { std::env::set_var(crate::daemon::PVECRI_BIN_ENV, &bin) };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench)
}

/// The 1, 5 and 15 minute load averages, to print beside a measurement.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
