//! Writing a [`DevicePolicy`] into a cgroup: the v1 `devices` controller's files, or a device
//! program attached to a v2 cgroup. podinit does it for the cgroups it makes; the daemon does
//! it from the host for a pod in a user namespace, where podinit has no right to.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::{DevicePolicy, bpf, ebpf};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("writing {line:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        line: String,
        source: io::Error,
    },
    #[error("{what} {path}: {source}")]
    Program {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl ApplyError {
    /// The kernel refused for want of privilege (in a user namespace: CAP_SYS_ADMIN or
    /// CAP_BPF of the host's).
    pub fn is_permission(&self) -> bool {
        let source = match self {
            ApplyError::Write { source, .. } | ApplyError::Program { source, .. } => source,
        };
        matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES))
    }
}

/// Writes the policy into the v1 devices controller's directory `dir` of a cgroup that has
/// no children and no processes yet.
pub fn apply_v1(dir: &Path, policy: &DevicePolicy) -> Result<(), ApplyError> {
    for (file, line) in policy.v1_writes() {
        let path = dir.join(file);
        std::fs::write(&path, &line).map_err(|source| ApplyError::Write { path, line, source })?;
    }
    Ok(())
}

/// Loads the policy's program and attaches it to the v2 cgroup `dir` (nothing for a policy
/// that refuses nothing: the programs above still apply).
pub fn apply_v2(dir: &Path, policy: &DevicePolicy) -> Result<(), ApplyError> {
    if policy.allows_everything() {
        return Ok(());
    }
    let err = |what| {
        move |source| ApplyError::Program {
            what,
            path: dir.to_path_buf(),
            source,
        }
    };
    let prog = bpf::load(&ebpf::program(policy)).map_err(err("loading the device program for"))?;
    let cg = std::fs::File::open(dir).map_err(err("opening"))?;
    bpf::attach(prog.as_fd(), cg.as_fd()).map_err(err("attaching the device program to"))
}
