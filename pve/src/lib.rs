//! pvecri's pod host: where a pod's CT is defined and started.
//!
//! The daemon asks a [`PodHost`] for one CT per pod, whose init is podinit, and learns the
//! init's PID and network namespace (for CNI). Nothing outside this crate knows how a CT is
//! defined or started. Drivers:
//! * [`lxc::LxcDriver`] (`driver = "lxc"`, the embedded default): plain LXC under pvecri's
//!   own lxcpath, driven with `lxc-start` and, for everything else, `/proc` and pidfds.
//! * [`pve::PveDriver`] (`driver = "pve"`): Proxmox VE CTs through the PVE API, with the raw
//!   LXC keys the API cannot set written into `/etc/pve/lxc/<vmid>.conf`. Ids stay the pod
//!   sandbox ids (the driver maps them to vmids and finds them again through its records and
//!   the CTs' tags and descriptions), and every call may take as long as an API task.
//!
//! Both drivers can keep a [`warm::WarmPool`] of CTs started ahead.
//!
//! What podinit can rely on inside a pod CT (both drivers):
//! * it runs as PID 1 of a new PID namespace, as `/sbin/podinit --pod-dir /pvecri`, with the
//!   pod directory at `/pvecri` (host mounts made under it later appear; its own mounts stay
//!   inside) and its stdout/stderr in the CT's console log. In a `hostPID` pod
//!   ([`PodSpec::host_pid`]) it is an ordinary process of the host's PID namespace instead: it
//!   reaps its own children as a child subreaper and signals only its own processes;
//! * the CT has its own network (only `lo`, up, unless host network), IPC, UTS (the pod's
//!   hostname), mount and cgroup namespaces; a pod-wide tmpfs at `/dev/shm`. A `hostIPC`
//!   pod ([`PodSpec::host_ipc`]) keeps the host's IPC namespace and has the host's `/dev/shm`
//!   bound there; podinit then gets `--host-ipc` and mounts no `/dev/shm` of its own;
//! * its cgroup is the root of its cgroup namespace and mounted writable at `/sys/fs/cgroup`
//!   (one mount per hierarchy on cgroup v1): it makes one child cgroup per container. On
//!   cgroup v2 it must move itself into a leaf child before enabling controllers for its
//!   children (no internal processes);
//! * full capabilities, no seccomp, no AppArmor confinement, all devices allowed: podinit
//!   applies each container's restrictions itself;
//! * stop sends SIGTERM once, then SIGKILL after the timeout. A PID 1 drops signals it has no
//!   handler for, so podinit must install its SIGTERM handler before it signals readiness
//!   (its API socket); a stop that comes earlier waits out the timeout. A CT in the host's PID
//!   namespace does not end with its init: stop and destroy kill what is left in its cgroup.

pub mod cgroup;
pub mod config;
pub mod error;
pub mod lxc;
pub mod mountinfo;
pub mod nsenter;
pub mod oom;
pub mod pod_dir;
pub mod process;
pub mod pve;
pub mod reach;
pub mod spec;
pub mod subid;
pub mod sysctl;
pub mod warm;

use std::time::Duration;

use async_trait::async_trait;

pub use config::{DriverKind, PodHostConfig, build};
pub use error::PodHostError;
pub use pve::config::PveConfig;
pub use spec::{
    CgroupDriver, CtInfo, CtRuntime, CtStatus, IdMap, IdRange, NetworkMode, PodResources, PodSpec,
    UNPRIVILEGED_ID_BASE, UNPRIVILEGED_ID_COUNT,
};
pub use warm::{WarmPool, WarmTemplate};

/// Where pods' CTs are defined and run.
///
/// Ids are pod sandbox ids. Every method may be called again after a failure or a daemon
/// restart: `stop` and `destroy` are idempotent, `start` of a running CT returns its runtime.
///
/// The daemon wraps its pod host (`cri::metrics::podhost::TimedPodHost`, to time `start`): a
/// method added here must be forwarded there too, or a default body would hide the driver's.
#[async_trait]
pub trait PodHost: Send + Sync {
    /// `"lxc"` or `"pve"`.
    fn driver(&self) -> &'static str;

    /// Whether unprivileged CTs with the ID map of [`PodSpec::idmap`] work (pods with
    /// `hostUsers: false`); the daemon advertises user namespaces only then. No default:
    /// a wrapper must pass the answer on.
    fn supports_user_namespaces(&self) -> bool;

    /// Defines the CT (not started). [`PodHostError::AlreadyExists`] if the id is taken.
    async fn create(&self, spec: &PodSpec) -> Result<(), PodHostError>;

    /// Starts the CT; returns once its init runs and its PID is known.
    async fn start(&self, id: &str) -> Result<CtRuntime, PodHostError>;

    /// Sends the CT's init its halt signal (SIGTERM), waits up to `timeout` for it to exit,
    /// then kills it; returns once the CT is down. A zero timeout kills at once. Succeeds for a
    /// CT that is stopped or unknown.
    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), PodHostError>;

    /// Kills the CT if it runs and removes its definition and cgroups. Succeeds for a CT that
    /// is already gone.
    async fn destroy(&self, id: &str) -> Result<(), PodHostError>;

    async fn status(&self, id: &str) -> Result<CtStatus, PodHostError>;

    /// The CTs this host manages, running or not, also those created before a daemon restart.
    /// Warm pool CTs are not among them.
    async fn list(&self) -> Result<Vec<CtInfo>, PodHostError>;

    /// Why pods cannot be run right now (the backend is unreachable, ...), for the runtime's
    /// RuntimeReady condition; `None` when they can.
    async fn unavailable(&self) -> Option<String> {
        None
    }

    /// Ids of warm pool CTs (created with [`PodSpec::warm`]), also those of an earlier run.
    async fn list_warm(&self) -> Result<Vec<String>, PodHostError> {
        Ok(Vec::new())
    }

    /// Whether a warm CT can become the pod `spec` describes.
    fn warm_fits(&self, _spec: &PodSpec) -> bool {
        false
    }

    /// Makes the running warm CT `spec.id` the pod `spec` describes (hostname, limits,
    /// sysctls, records) and returns its runtime. [`PodHostError::NotFound`] when `spec.id`
    /// is not a warm CT.
    async fn adopt(&self, spec: &PodSpec) -> Result<CtRuntime, PodHostError> {
        Err(PodHostError::Unsupported {
            id: spec.id.clone(),
            reason: format!("the {} driver has no warm pool", self.driver()),
        })
    }
}
