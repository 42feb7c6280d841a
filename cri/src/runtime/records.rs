//! What the metadata store keeps of pods and containers.

use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodState {
    /// RunPodSandbox is under way; a record left in this state by a crash is torn down.
    Creating,
    Ready,
    NotReady,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub config: PodSandboxConfig,
    pub state: PodState,
    pub created_at_ns: i64,
    /// Pod IPs from CNI, the primary first.
    #[serde(default)]
    pub ips: Vec<String>,
    pub host_network: bool,
    #[serde(default)]
    pub runtime_handler: String,
    /// The CT's init (podinit) while it runs.
    #[serde(default)]
    pub init_pid: Option<u32>,
}

impl PodRecord {
    /// Unique per CRI: a second RunPodSandbox with the same metadata is AlreadyExists.
    pub fn key(config: &PodSandboxConfig) -> String {
        let m = config.metadata.clone().unwrap_or_default();
        format!("{}/{}/{}/{}", m.namespace, m.name, m.uid, m.attempt)
    }

    pub fn name(&self) -> String {
        let m = self.config.metadata.clone().unwrap_or_default();
        format!("{}/{}", m.namespace, m.name)
    }
}

/// A CRI mount of a container (passed to podinit as a mount tree of `host_path`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    /// Its place in the request's mounts.
    pub index: usize,
    pub host_path: String,
    pub container_path: String,
    pub readonly: bool,
    #[serde(default)]
    pub recursive_read_only: bool,
    pub propagation: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub config: ContainerConfig,
    /// The image ID (config digest).
    pub image_id: String,
    /// A digest reference of the image (`repo@sha256:...`), CRI's `image_ref`.
    pub image_ref: String,
    pub created_at_ns: i64,
    /// Full host path of the CRI log, or empty.
    pub log_path: String,
    pub mounts: Vec<MountRecord>,
    /// The signal StopContainer sends first (the image's StopSignal, else SIGTERM).
    pub stop_signal: i32,
    /// The identity the container's process starts with (ContainerStatus.user); `None` in
    /// records of older daemons.
    #[serde(default)]
    pub user: Option<super::spec::ResolvedUser>,
    /// CreateContainer is under way; a record left so by a crash is cleaned up.
    #[serde(default)]
    pub creating: bool,
}

impl ContainerRecord {
    pub fn key(pod_id: &str, config: &ContainerConfig) -> String {
        let m = config.metadata.clone().unwrap_or_default();
        format!("{pod_id}/{}/{}", m.name, m.attempt)
    }
}
