//! The daemon's shared state and its start-up: the state directory, its lock, the metadata
//! store.

use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::config::Config;
use crate::metadata::{MetadataError, MetadataStore};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("state directory {path}: {op}: {error}")]
    StateDir {
        path: PathBuf,
        op: &'static str,
        error: std::io::Error,
    },
    #[error("state directory {0} is in use by another pvecri")]
    StateDirInUse(PathBuf),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// What every RPC handler shares.
#[derive(Debug)]
pub struct Daemon {
    pub config: Config,
    pub metadata: MetadataStore,
    /// Held for the daemon's lifetime: two daemons on one state directory would corrupt it.
    _lock: Flock<File>,
}

impl Daemon {
    pub fn open(config: Config) -> Result<Self, StartupError> {
        let state_dir = config.state_dir.clone();
        let io = |op| {
            let path = state_dir.clone();
            move |error| StartupError::StateDir { path, op, error }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&state_dir)
            .map_err(io("create"))?;
        let lock = lock_state_dir(&state_dir)?;
        let metadata = MetadataStore::open(&state_dir.join("metadata.db"))?;
        Ok(Self {
            config,
            metadata,
            _lock: lock,
        })
    }
}

fn lock_state_dir(state_dir: &Path) -> Result<Flock<File>, StartupError> {
    let path = state_dir.join("pvecri.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|error| StartupError::StateDir {
            path: path.clone(),
            op: "open lock file",
            error,
        })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            StartupError::StateDirInUse(state_dir.to_path_buf())
        } else {
            StartupError::StateDir {
                path,
                op: "lock",
                error: errno.into(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_daemon_on_one_state_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            state_dir: dir.path().join("state"),
            ..Config::default()
        };
        let _first = Daemon::open(config.clone()).unwrap();
        assert!(matches!(
            Daemon::open(config),
            Err(StartupError::StateDirInUse(_))
        ));
    }
}
