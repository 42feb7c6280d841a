//! Machine-wide locks between test processes (cargo-nextest runs each test in its own process).

use std::fs::{File, OpenOptions};
use std::path::Path;

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};

/// An exclusive `flock` on a lock file, released on drop.
pub struct FileLock {
    _lock: Flock<File>,
}

impl FileLock {
    /// Blocks until the exclusive lock on `path` (created if missing) is held.
    pub fn exclusive(path: &Path) -> anyhow::Result<FileLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| errno)
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(FileLock { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn second_locker_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = FileLock::exclusive(&path).unwrap();
        let released = Arc::new(AtomicBool::new(false));
        let seen_released = {
            let path = path.clone();
            let released = released.clone();
            std::thread::spawn(move || {
                // flock locks belong to the open file description, so a second open waits.
                let _second = FileLock::exclusive(&path).unwrap();
                released.load(Ordering::SeqCst)
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        released.store(true, Ordering::SeqCst);
        drop(first);
        assert!(
            seen_released.join().unwrap(),
            "second lock was granted while the first was held"
        );
    }
}
