//! Files on the host, replaced atomically: a running pvecri keeps executing its old binary
//! while the new one is renamed over it, and a crash mid-write leaves the old file whole.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::NodeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileChange {
    Unchanged,
    Written,
}

fn io(path: &Path, error: std::io::Error) -> NodeError {
    NodeError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Makes `path` hold `bytes` with `mode`; writes only when content or mode differ.
pub fn place(path: &Path, bytes: &[u8], mode: u32) -> Result<FileChange, NodeError> {
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.is_file()
        && meta.permissions().mode() & 0o7777 == mode
        && meta.len() == bytes.len() as u64
        && std::fs::read(path).is_ok_and(|old| old == bytes)
    {
        return Ok(FileChange::Unchanged);
    }
    let dir = path
        .parent()
        .ok_or_else(|| io(path, std::io::Error::other("no parent directory")))?;
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.pvecri-new"));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have taken bits from `mode`.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(path, e));
    }
    Ok(FileChange::Written)
}

/// Removes `path`; `false` when it was not there.
pub fn remove(path: &Path) -> Result<bool, NodeError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/file");
        assert_eq!(place(&p, b"x", 0o600).unwrap(), FileChange::Written);
        assert_eq!(place(&p, b"x", 0o600).unwrap(), FileChange::Unchanged);
        assert_eq!(place(&p, b"x", 0o644).unwrap(), FileChange::Written);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
        assert_eq!(place(&p, b"y", 0o644).unwrap(), FileChange::Written);
        assert_eq!(std::fs::read(&p).unwrap(), b"y");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        assert!(remove(&p).unwrap());
        assert!(!remove(&p).unwrap());
    }

    #[test]
    fn replaces_a_file_that_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bin");
        place(&p, b"old", 0o755).unwrap();
        let held = std::fs::File::open(&p).unwrap();
        place(&p, b"new", 0o755).unwrap();
        let mut old = String::new();
        std::io::Read::read_to_string(&mut &held, &mut old).unwrap();
        assert_eq!(old, "old", "the open file keeps its content");
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
    }
}
