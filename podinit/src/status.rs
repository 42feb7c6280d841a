//! `ctrs/<id>/status.json`: the container's state on disk, written by podinit on create, start
//! and exit, so that the daemon can read the final state after podinit (or itself) is gone.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::{CTRS_DIR, STATUS_FILE};

/// Lifecycle state of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Created,
    Running,
    Exited,
}

/// What podinit knows about one container. Times are nanoseconds since the epoch, 0 when unset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub id: String,
    pub state: ContainerState,
    /// PID of the container's main process in podinit's (the pod's) PID namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default)]
    pub created_ns: i64,
    #[serde(default)]
    pub started_ns: i64,
    #[serde(default)]
    pub finished_ns: i64,
    /// Exit code; 128 + signal number when the process was killed by a signal (as runc's shim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that killed the process, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The container's cgroup recorded an OOM kill.
    #[serde(default)]
    pub oom_killed: bool,
    /// Why the process never ran (setup or exec failure); the container is `exited` with code 128.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_error: Option<String>,
    /// Set when podinit found this record left `created`/`running` by an earlier podinit and
    /// closed it: the process is gone and its real exit status is unknown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
}

impl ContainerStatus {
    pub fn new_created(id: &str, created_ns: i64) -> Self {
        Self {
            id: id.to_string(),
            state: ContainerState::Created,
            pid: None,
            created_ns,
            started_ns: 0,
            finished_ns: 0,
            exit_code: None,
            signal: None,
            oom_killed: false,
            start_error: None,
            lost: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

impl StatusError {
    /// The status file does not exist (the container was never created or was deleted).
    pub fn is_not_found(&self) -> bool {
        matches!(self, StatusError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// `<pod dir>/ctrs/<id>/status.json`.
pub fn status_path(pod_dir: &Path, id: &str) -> PathBuf {
    pod_dir.join(CTRS_DIR).join(id).join(STATUS_FILE)
}

/// Reads a container's status file directly (for when podinit is not there to ask).
pub fn read_status(pod_dir: &Path, id: &str) -> Result<ContainerStatus, StatusError> {
    read_status_file(&status_path(pod_dir, id))
}

pub fn read_status_file(path: &Path) -> Result<ContainerStatus, StatusError> {
    let data = std::fs::read(path).map_err(|source| StatusError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&data).map_err(|source| StatusError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the status file atomically: a temporary file in the same directory, then a rename, so
/// a reader sees the old or the new record and never a torn one. No fsync: the file has to
/// survive process restarts, and a node crash takes the pod's processes with it anyway.
pub fn write_status(pod_dir: &Path, status: &ContainerStatus) -> Result<(), StatusError> {
    write_status_file(&status_path(pod_dir, &status.id), status)
}

pub fn write_status_file(path: &Path, status: &ContainerStatus) -> Result<(), StatusError> {
    let err = |source| StatusError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut data = serde_json::to_vec(status).map_err(|e| err(io::Error::other(e)))?;
    data.push(b'\n');
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(&data).map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("ctrs/c1")).expect("mkdir");
        let mut st = ContainerStatus::new_created("c1", 5);
        write_status(dir.path(), &st).expect("write");
        assert_eq!(read_status(dir.path(), "c1").expect("read"), st);

        st.state = ContainerState::Exited;
        st.pid = Some(42);
        st.exit_code = Some(137);
        st.signal = Some(9);
        st.oom_killed = true;
        st.finished_ns = 9;
        write_status(dir.path(), &st).expect("write");
        assert_eq!(read_status(dir.path(), "c1").expect("read"), st);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("ctrs/c1"))
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("status.json")]);
    }

    #[test]
    fn json_shape_is_stable() {
        let mut st = ContainerStatus::new_created("abc", 1);
        st.state = ContainerState::Running;
        st.pid = Some(7);
        st.started_ns = 2;
        let v: serde_json::Value = serde_json::to_value(&st).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"id": "abc", "state": "running", "pid": 7, "created_ns": 1,
                "started_ns": 2, "finished_ns": 0, "oom_killed": false})
        );
    }

    #[test]
    fn missing_file_is_reported_as_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_status(dir.path(), "nope").expect_err("missing");
        assert!(err.is_not_found());
    }

    #[test]
    fn garbage_is_a_parse_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("ctrs/x")).expect("mkdir");
        std::fs::write(dir.path().join("ctrs/x/status.json"), b"{").expect("write");
        let err = read_status(dir.path(), "x").expect_err("garbage");
        assert!(matches!(err, StatusError::Parse { .. }));
        assert!(!err.is_not_found());
    }
}
