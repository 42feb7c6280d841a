//! A CT's directory under the lxcpath: what lives there, and the record of the pod it holds.
//!
//! ```text
//! <lxcpath>/<pod id>/
//!   config        the LXC config (render.rs)
//!   pod.json      CtRecord: what create was told, for list() and destroy() after a restart
//!   rootfs/       minimal root: mount points only
//!   monitor.pid   written by lxc-start: its daemonized monitor
//!   lxc.log       LXC's log;  console.log: podinit's own stdout/stderr
//!   lxc-start.err stderr of the last lxc-start
//! ```

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroup::CtCgroups;

/// Prefixes of directories that are not (or no longer) CTs: a create or destroy in progress,
/// or cut short by a crash.
pub const CREATING_PREFIX: &str = ".creating-";
pub const DESTROYING_PREFIX: &str = ".destroying-";

/// Mount points of the minimal root.
const ROOT_DIRS: &[&str] = &["dev", "etc", "proc", "pvecri", "run", "sbin", "sys", "tmp"];

#[derive(Debug, Clone)]
pub struct CtDir {
    pub dir: PathBuf,
}

impl CtDir {
    pub fn new(lxcpath: &Path, name: &str) -> Self {
        Self {
            dir: lxcpath.join(name),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config")
    }
    pub fn record(&self) -> PathBuf {
        self.dir.join("pod.json")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    pub fn monitor_pid(&self) -> PathBuf {
        self.dir.join("monitor.pid")
    }
    pub fn lxc_log(&self) -> PathBuf {
        self.dir.join("lxc.log")
    }
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn start_stderr(&self) -> PathBuf {
        self.dir.join("lxc-start.err")
    }

    /// A CT exists once its directory holds a config (the directory is renamed into place
    /// complete, so a config means a finished create).
    pub fn exists(&self) -> bool {
        self.config().is_file()
    }

    pub fn read_record(&self) -> io::Result<CtRecord> {
        let bytes = std::fs::read(self.record())?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    pub fn write_record(&self, record: &CtRecord) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        std::fs::write(self.record(), bytes)
    }

    /// Makes the directory and its minimal root. For an unprivileged CT the root belongs to
    /// the CT's root user, so that podinit can use `/tmp` and friends.
    pub fn build(&self, root_owner: Option<(u32, u32)>) -> io::Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(0o711);
        builder.create(&self.dir)?;
        builder.mode(0o755);
        let rootfs = self.rootfs();
        builder.create(&rootfs)?;
        for dir in ROOT_DIRS {
            builder.create(rootfs.join(dir))?;
        }
        std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
        let podinit_target = rootfs.join("sbin/podinit");
        std::fs::write(&podinit_target, b"")?;
        if let Some((uid, gid)) = root_owner {
            std::os::unix::fs::lchown(&rootfs, Some(uid), Some(gid))?;
            for dir in ROOT_DIRS {
                std::os::unix::fs::lchown(rootfs.join(dir), Some(uid), Some(gid))?;
            }
            std::os::unix::fs::lchown(&podinit_target, Some(uid), Some(gid))?;
        }
        Ok(())
    }
}

/// What create was told, kept beside the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtRecord {
    pub id: String,
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub pod_dir: PathBuf,
    /// `true` when create bound the pod directory onto itself (destroy undoes it).
    pub pod_dir_bound: bool,
    pub cgroups: CtCgroups,
    pub privileged: bool,
    /// The CT keeps the host's PID namespace: its processes outlive its init unless killed
    /// through its cgroup.
    #[serde(default)]
    pub host_pid: bool,
    /// A warm pool CT not yet adopted by a pod.
    #[serde(default)]
    pub warm: bool,
}

/// Removes a directory tree; gone already is fine.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn builds_a_minimal_root_and_keeps_the_record() {
        let tmp = tempfile::tempdir().unwrap();
        let ct = CtDir::new(tmp.path(), "x");
        ct.build(None).unwrap();
        for dir in ROOT_DIRS {
            assert!(ct.rootfs().join(dir).is_dir(), "{dir}");
        }
        assert!(ct.rootfs().join("sbin/podinit").is_file());
        let tmp_mode = std::fs::metadata(ct.rootfs().join("tmp")).unwrap().mode();
        assert_eq!(tmp_mode & 0o7777, 0o1777);
        assert!(!ct.exists(), "no config yet");

        let record = CtRecord {
            id: "x".into(),
            name: "ns/p".into(),
            namespace: "ns".into(),
            labels: BTreeMap::from([("app".into(), "web".into())]),
            pod_dir: "/pods/x".into(),
            pod_dir_bound: true,
            cgroups: CtCgroups {
                container: "a/x".into(),
                monitor: "m/x".into(),
                monitor_pivot: "m".into(),
            },
            privileged: false,
            host_pid: false,
            warm: false,
        };
        ct.write_record(&record).unwrap();
        assert_eq!(ct.read_record().unwrap(), record);
        assert!(
            ct.build(None).is_err(),
            "a second build must not reuse the directory"
        );
    }
}
