//! Small on-disk helpers shared by the drivers: the store lock, JSON records written
//! atomically, and unique names for work in progress.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::sys;

/// An exclusive `flock` on a file, held while the store is open. One process at a time
/// may own a store: opening cleans up work in progress, which would destroy the work of
/// another process using it.
pub(crate) struct StoreLock {
    _lock: Flock<File>,
}

impl StoreLock {
    pub(crate) fn acquire(path: &Path) -> Result<StoreLock, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io_at("opening lock file", path, e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(StoreLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(StoreError::Locked {
                path: path.to_owned(),
            }),
            Err((_, e)) => Err(StoreError::io_at("locking", path, e.into())),
        }
    }
}

/// Writes `value` as JSON to `path` through a temporary file, fsynced, then renamed.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let tmp = path.with_extension("json.tmp");
    let data = serde_json::to_vec_pretty(value)
        .map_err(|e| StoreError::Corrupt(format!("encoding {}: {e}", path.display())))?;
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| StoreError::io_at("writing", path, e))
}

/// Reads a JSON record; `None` if the file does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io_at("reading", path, e)),
    };
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))
}

/// fsync of a directory, so that a rename in it is durable.
pub(crate) fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let fd = sys::open_dir(path).map_err(|e| StoreError::io_at("opening", path, e))?;
    sys::fsync(fd.as_fd()).map_err(|e| StoreError::io_at("fsync", path, e))
}

/// A name unique within this process and distinct from other processes' names.
pub(crate) fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Removes a directory tree; missing is fine.
pub(crate) fn remove_tree(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io_at("removing", path, e)),
    }
}

/// Moves `path` into `trash` (same file system) under a unique name, then deletes it. The
/// rename makes the removal atomic for lookups; a crash during the deletion leaves only
/// trash, which opening the store empties.
pub(crate) fn remove_via_trash(path: &Path, trash: &Path, label: &str) -> Result<(), StoreError> {
    let doomed: PathBuf = trash.join(unique_name(&format!("rm-{label}")));
    match std::fs::rename(path, &doomed) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io_at("moving to trash", path, e)),
    }
    remove_tree(&doomed)
}

/// Makes a directory (and parents) if missing.
pub(crate) fn ensure_dir(path: &Path) -> Result<(), StoreError> {
    sys::create_dir_all(path).map_err(|e| StoreError::io_at("creating", path, e))
}
