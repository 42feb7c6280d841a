//! The CRI socket: replacing a stale one left by a crashed daemon, refusing one that a live
//! daemon answers on.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Root and the socket's group may connect; nobody else.
const SOCKET_MODE: u32 = 0o660;
const PARENT_MODE: u32 = 0o750;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("socket {0} is in use by a running daemon")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("socket {path}: {op}: {error}")]
    Io {
        path: PathBuf,
        op: &'static str,
        error: std::io::Error,
    },
}

fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> SocketError {
    let path = path.to_path_buf();
    move |error| SocketError::Io { path, op, error }
}

/// Binds the CRI socket at `path` with mode 0660, creating its parent directory.
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PARENT_MODE)
            .create(parent)
            .map_err(io(parent, "create parent directory"))?;
    }
    remove_if_stale(path)?;
    let listener = UnixListener::bind(path).map_err(io(path, "bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(io(path, "chmod"))?;
    Ok(listener)
}

/// A socket file nobody accepts on is what a killed daemon leaves behind.
fn remove_if_stale(path: &Path) -> Result<(), SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path, "stat")(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket(path.to_path_buf()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(SocketError::InUse(path.to_path_buf())),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "removing stale socket");
            std::fs::remove_file(path).map_err(io(path, "remove stale socket"))
        }
        Err(e) => Err(io(path, "probe existing socket")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_with_mode_0660_and_creates_parent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/pvecri/pvecri.sock");
        let _l = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
    }

    #[tokio::test]
    async fn replaces_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let _l = bind(&path).unwrap();
    }

    #[tokio::test]
    async fn refuses_a_live_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(matches!(bind(&path), Err(SocketError::InUse(_))));
    }

    #[tokio::test]
    async fn refuses_to_replace_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        std::fs::write(&path, b"data").unwrap();
        assert!(matches!(bind(&path), Err(SocketError::NotASocket(_))));
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }
}
