//! Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox, their status and list.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_cri::v1::{NamespaceMode, PodSandboxConfig, PodSandboxState, Protocol};
use pve::{CtStatus, NetworkMode, PodResources, PodSpec};

use super::error::{Result, RuntimeError};
use super::records::{PodRecord, PodState};
use super::{Runtime, ids, namespaces, now_ns, podfiles, remove_tree};
use crate::cni::config::load_network;
use crate::cni::invoke::{Attachment, PortMapping};
use crate::metadata::Table;

/// How long podinit may take to answer after the CT started.
const PODINIT_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// The grace a pod CT gets to stop before it is killed.
const CT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The default handler's name, for a RuntimeClass (`handler: pvecri`, which the Helm chart
/// makes); the empty name means the same handler.
pub const RUNTIME_HANDLER: &str = "pvecri";
/// Tries of CNI DEL on stop before the error goes back to the kubelet (which retries).
const CNI_DEL_TRIES: u32 = 3;

fn host_network(config: &PodSandboxConfig) -> bool {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|n| n.network() == NamespaceMode::Node)
}

fn validate(config: &PodSandboxConfig) -> Result<()> {
    let m = config
        .metadata
        .as_ref()
        .ok_or_else(|| RuntimeError::invalid("pod sandbox config has no metadata"))?;
    if m.name.is_empty() || m.namespace.is_empty() || m.uid.is_empty() {
        return Err(RuntimeError::invalid(
            "pod sandbox metadata needs a name, a namespace and a uid",
        ));
    }
    namespaces::of_pod(config)?;
    namespaces::user_namespace(config)?;
    Ok(())
}

fn pod_spec(rt: &Runtime, id: &str, config: &PodSandboxConfig, podinit: &Path) -> PodSpec {
    let m = config.metadata.clone().unwrap_or_default();
    let linux = config.linux.clone().unwrap_or_default();
    let res = linux.resources.clone().unwrap_or_default();
    let hostname = pod_hostname(config);
    // Validated at RunPodSandbox.
    let host = namespaces::of_pod(config).unwrap_or_default();
    let idmap = namespaces::user_namespace(config).unwrap_or_default();
    PodSpec {
        id: id.to_string(),
        name: format!("{}/{}", m.namespace, m.name),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        hostname,
        pod_dir: rt.pod_dir(id),
        podinit: podinit.to_path_buf(),
        network: if host_network(config) {
            NetworkMode::Host
        } else {
            NetworkMode::Isolated
        },
        host_pid: host.pid,
        host_ipc: host.ipc,
        cgroup_parent: Some(linux.cgroup_parent.clone()).filter(|p| !p.is_empty()),
        cgroup_driver: rt.cgroup_driver,
        oom_score_adj: None,
        resources: PodResources {
            cpu_period: (res.cpu_period > 0).then_some(res.cpu_period as u64),
            cpu_quota: (res.cpu_quota > 0).then_some(res.cpu_quota),
            cpu_shares: (res.cpu_shares > 0).then_some(res.cpu_shares as u64),
            memory_limit_bytes: (res.memory_limit_in_bytes > 0)
                .then_some(res.memory_limit_in_bytes as u64),
        },
        sysctls: linux
            .sysctls
            .clone()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        privileged: idmap.is_none(),
        idmap,
        labels: config.labels.clone().into_iter().collect(),
        warm: false,
    }
}

/// The hostname inside the pod: the node's for host-network pods (the kubelet sends none
/// for them, and containerd shares the host's UTS namespace), else the kubelet's, else the
/// pod's name made into one (see [`hostname_from_name`]).
pub(crate) fn pod_hostname(config: &PodSandboxConfig) -> String {
    if host_network(config) {
        return node_hostname();
    }
    if config.hostname.is_empty() {
        hostname_from_name(&config.metadata.clone().unwrap_or_default().name)
    } else {
        config.hostname.clone()
    }
}

/// The longest hostname the kubelet gives a pod: one DNS label.
const MAX_HOSTNAME: usize = 63;

/// A pod name made into a hostname as the kubelet does (`GeneratePodHostNameAndDomain`):
/// cut to 63 characters and trailing `-` and `.` trimmed. The CRI lets clients (crictl,
/// critest) send any name and no hostname, so characters a hostname cannot hold become
/// `-`; a name with nothing usable left gives `pod`.
pub(crate) fn hostname_from_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_HOSTNAME)
        .collect();
    let trimmed = cleaned
        .trim_start_matches(['-', '.'])
        .trim_end_matches(['-', '.']);
    if trimmed.is_empty() {
        "pod".to_string()
    } else {
        trimmed.to_string()
    }
}

pub(crate) fn node_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

fn port_mappings(config: &PodSandboxConfig) -> Vec<PortMapping> {
    config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| PortMapping {
            host_port: p.host_port,
            container_port: p.container_port,
            protocol: match p.protocol() {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
                Protocol::Sctp => "sctp",
            }
            .to_string(),
            host_ip: p.host_ip.clone(),
        })
        .collect()
}

fn cni_args(id: &str, config: &PodSandboxConfig) -> Vec<(String, String)> {
    let m = config.metadata.clone().unwrap_or_default();
    vec![
        ("IgnoreUnknown".into(), "1".into()),
        ("K8S_POD_NAMESPACE".into(), m.namespace),
        ("K8S_POD_NAME".into(), m.name),
        ("K8S_POD_INFRA_CONTAINER_ID".into(), id.to_string()),
        ("K8S_POD_UID".into(), m.uid),
    ]
}

impl Runtime {
    pub async fn run_pod_sandbox(
        &self,
        config: PodSandboxConfig,
        runtime_handler: String,
    ) -> Result<String> {
        validate(&config)?;
        if !runtime_handler.is_empty() && runtime_handler != RUNTIME_HANDLER {
            return Err(RuntimeError::invalid(format!(
                "unknown runtime handler {runtime_handler:?}; pvecri has only the default \
                 handler (\"\" or {RUNTIME_HANDLER:?})"
            )));
        }
        let podinit = self.podinit.clone().ok_or_else(|| {
            RuntimeError::precondition("podinit binary not found; set podinit_path in the config")
        })?;
        let host_net = host_network(&config);
        let network = if host_net {
            None
        } else {
            Some(load_network(&self.cni_conf_dir).map_err(|e| {
                RuntimeError::precondition(format!("network plugin not ready: {e}"))
            })?)
        };
        let mut id = ids::new_id();
        // A warm CT (if one is ready and fits the pod) gives the pod its id.
        let warm = self.warm.get().and_then(|pool| {
            let probe = pod_spec(self, &id, &config, &podinit);
            pool.take(&probe)
        });
        if let Some(warm_id) = &warm {
            id = warm_id.clone();
        }
        let mut record = PodRecord {
            id: id.clone(),
            config: config.clone(),
            state: PodState::Creating,
            created_at_ns: now_ns(),
            ips: vec![],
            host_network: host_net,
            runtime_handler,
            init_pid: None,
        };
        let key = PodRecord::key(&config);
        // Reserves the name: a concurrent or repeated RunPodSandbox with this metadata fails here.
        let reserved =
            self.metadata
                .put(Table::Pods, &id, Some(&key), &record)
                .map_err(|e| match RuntimeError::from(e) {
                    e if e.code == tonic::Code::AlreadyExists => RuntimeError::already_exists(
                        format!("pod sandbox {} already exists", record.name()),
                    ),
                    e => e,
                });
        if let Err(e) = reserved {
            if warm.is_some() {
                // The warm CT was taken from the pool; it must not linger.
                self.tear_down(&record).await;
            }
            return Err(e);
        }
        let lock = self.pod_lock(&id);
        let _guard = lock.write().await;
        let started = Instant::now();
        match self
            .bring_up(&mut record, &podinit, network.as_ref(), warm.is_some())
            .await
        {
            Ok(()) => {
                record.state = PodState::Ready;
                self.metadata.put(Table::Pods, &id, Some(&key), &record)?;
                tracing::info!(pod = %record.name(), id = %id, warm = warm.is_some(), ms = started.elapsed().as_millis() as u64, "pod sandbox ready");
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(pod = %record.name(), error = %e, "pod sandbox failed; tearing down");
                self.tear_down(&record).await;
                let _ = self.metadata.delete(Table::Pods, &id);
                Err(e)
            }
        }
    }

    async fn bring_up(
        &self,
        record: &mut PodRecord,
        podinit: &Path,
        network: Option<&crate::cni::config::NetworkConfigList>,
        warm: bool,
    ) -> Result<()> {
        let id = record.id.clone();
        let spec = pod_spec(self, &id, &record.config, podinit);
        let pod_dir = spec.pod_dir.clone();
        let config = record.config.clone();
        let hostname = spec.hostname.clone();
        let host_net = record.host_network;
        let root = spec.user_idmap().map(|m| m.root());
        Self::blocking(move || {
            let ctrs = pod_dir.join(podinit::api::CTRS_DIR);
            std::fs::create_dir_all(&ctrs).map_err(|e| {
                RuntimeError::internal(format!("creating {}: {e}", pod_dir.display()))
            })?;
            if let Some((uid, gid)) = root {
                // podinit runs as the CT's root, mapped to these host ids.
                std::os::unix::fs::chown(&ctrs, Some(uid), Some(gid)).map_err(|e| {
                    RuntimeError::internal(format!("chown {}: {e}", ctrs.display()))
                })?;
            }
            podfiles::write(&pod_dir, &hostname, config.dns_config.as_ref(), host_net)
                .map_err(|e| RuntimeError::internal(format!("writing pod files: {e}")))?;
            if let Some((uid, gid)) = root {
                // The containers' root may edit /etc/hosts, as with host users.
                for file in podfiles::POD_FILES {
                    let path = pod_dir.join("etc").join(file);
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(|e| {
                        RuntimeError::internal(format!("chown {}: {e}", path.display()))
                    })?;
                }
            }
            // The pod host makes the directory a shared mount, so that what the daemon mounts
            // under it later reaches the CT.
            Ok(())
        })
        .await?;
        let ct = if warm {
            self.pod_host
                .adopt(&spec)
                .await
                .map_err(|e| RuntimeError::from(e).context("adopting a warm pod CT"))?
        } else {
            self.pod_host
                .create(&spec)
                .await
                .map_err(|e| RuntimeError::from(e).context("creating the pod CT"))?;
            self.pod_host
                .start(&id)
                .await
                .map_err(|e| RuntimeError::from(e).context("starting the pod CT"))?
        };
        record.init_pid = Some(ct.init_pid);
        self.wait_for_podinit(&id).await?;
        if let Some(net) = network {
            let att = Attachment {
                container_id: id.clone(),
                netns: ct.netns_path.clone(),
                ifname: "eth0".into(),
                args: cni_args(&id, &record.config),
                port_mappings: port_mappings(&record.config),
            };
            let added =
                self.cni.add(net, &att).await.map_err(|e| {
                    RuntimeError::internal(format!("setting up the pod network: {e}"))
                })?;
            record.ips = added.ips;
        }
        Ok(())
    }

    async fn wait_for_podinit(&self, id: &str) -> Result<()> {
        let deadline = Instant::now() + PODINIT_READY_TIMEOUT;
        let socket = self.pod_dir(id).join(podinit::api::SOCKET_NAME);
        loop {
            let last = match self.podinit(id, |c| c.info()).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(RuntimeError::internal(format!(
                    "podinit did not answer on {} within {}s: {last}",
                    socket.display(),
                    PODINIT_READY_TIMEOUT.as_secs()
                )));
            }
            if matches!(
                self.pod_host.status(id).await,
                Ok(CtStatus::Stopped | CtStatus::NotFound)
            ) {
                return Err(RuntimeError::internal(
                    "the pod CT stopped while podinit was starting",
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Undoes whatever of a pod exists: network, CT, directory. Errors are logged: this
    /// runs on failure paths and on removal, and must not stop half way.
    pub(crate) async fn tear_down(&self, record: &PodRecord) {
        if let Err(e) = self.cni.del(&record.id, None).await {
            tracing::warn!(pod = %record.id, error = %e, "CNI DEL while tearing down");
        }
        if let Err(e) = self.pod_host.destroy(&record.id).await {
            tracing::warn!(pod = %record.id, error = %e, "destroying the pod CT");
        }
        let dir = self.pod_dir(&record.id);
        // After destroy: until then the pod directory is a mount point of the pod host's.
        let _ = Self::blocking(move || {
            remove_tree(&dir);
            Ok(())
        })
        .await;
    }

    /// Stops every container, detaches the network and stops the CT. Succeeds for a pod
    /// already stopped or gone.
    pub async fn stop_pod_sandbox(&self, query: &str) -> Result<()> {
        let record = match self.find_pod(query) {
            Ok(r) => r,
            Err(e) if e.code == tonic::Code::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let lock = self.pod_lock(&record.id);
        let _guard = lock.write().await;
        self.stop_pod_locked(record).await
    }

    async fn stop_pod_locked(&self, mut record: PodRecord) -> Result<()> {
        let id = record.id.clone();
        let ct = self
            .pod_host
            .status(&id)
            .await
            .unwrap_or(CtStatus::NotFound);
        if let CtStatus::Running { .. } = ct {
            // The kubelet stops containers first; anything still running goes now, as
            // containerd does on StopPodSandbox.
            let ctrs: Vec<String> = self
                .containers()?
                .into_iter()
                .filter(|c| c.pod_id == id)
                .map(|c| c.id)
                .collect();
            for cid in ctrs {
                if let Err(e) = self.kill_container_now(&id, &cid).await {
                    tracing::warn!(container = %cid, error = %e, "stopping container with its pod");
                }
            }
        }
        let netns = match ct {
            CtStatus::Running { init_pid } => {
                Some(PathBuf::from(format!("/proc/{init_pid}/ns/net")))
            }
            _ => None,
        };
        let mut last_err = None;
        for attempt in 1..=CNI_DEL_TRIES {
            match self.cni.del(&id, netns.as_deref()).await {
                Ok(()) => {
                    last_err = None;
                    break;
                }
                Err(e) => {
                    tracing::warn!(pod = %id, attempt, error = %e, "CNI DEL failed");
                    last_err = Some(e);
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        if let Some(e) = last_err {
            return Err(RuntimeError::internal(format!(
                "tearing down the pod network: {e}"
            )));
        }
        self.pod_host
            .stop(&id, CT_STOP_TIMEOUT)
            .await
            .map_err(|e| RuntimeError::from(e).context("stopping the pod CT"))?;
        if record.state != PodState::NotReady || record.init_pid.is_some() {
            record.state = PodState::NotReady;
            record.init_pid = None;
            let key = PodRecord::key(&record.config);
            self.metadata.put(Table::Pods, &id, Some(&key), &record)?;
        }
        tracing::info!(pod = %record.name(), id = %id, "pod sandbox stopped");
        Ok(())
    }

    /// Removes the pod and its containers. Succeeds for a pod already gone. A network
    /// teardown that keeps failing does not keep the pod forever: its CT and namespace are
    /// gone after removal, which is what the network plugin would have cleaned.
    pub async fn remove_pod_sandbox(&self, query: &str) -> Result<()> {
        let record = match self.find_pod(query) {
            Ok(r) => r,
            Err(e) if e.code == tonic::Code::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let lock = self.pod_lock(&record.id);
        let _guard = lock.write().await;
        let id = record.id.clone();
        if let Err(e) = self.stop_pod_locked(record.clone()).await {
            tracing::warn!(pod = %id, error = %e, "stop before removal failed; removing anyway");
        }
        let ctrs: Vec<_> = self
            .containers()?
            .into_iter()
            .filter(|c| c.pod_id == id)
            .collect();
        for c in ctrs {
            self.remove_container_files(&c).await;
            self.metadata.delete(Table::Containers, &c.id)?;
            self.forget_ctr_lock(&c.id);
        }
        self.tear_down(&record).await;
        self.metadata.delete(Table::Pods, &id)?;
        self.forget_pod_lock(&id);
        tracing::info!(pod = %record.name(), id = %id, "pod sandbox removed");
        Ok(())
    }

    /// The state the kubelet sees: Ready only while the CT runs.
    pub async fn pod_state(&self, record: &PodRecord) -> PodSandboxState {
        if record.state != PodState::Ready {
            return PodSandboxState::SandboxNotready;
        }
        match self.pod_host.status(&record.id).await {
            Ok(CtStatus::Running { .. }) => PodSandboxState::SandboxReady,
            _ => PodSandboxState::SandboxNotready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{
        LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceOption, PodSandboxMetadata,
    };

    fn config(pid: NamespaceMode) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "p".into(),
                namespace: "ns".into(),
                uid: "u".into(),
                attempt: 0,
            }),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        pid: pid as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn validation() {
        assert!(validate(&config(NamespaceMode::Pod)).is_ok());
        assert!(validate(&config(NamespaceMode::Node)).is_ok(), "hostPID");
        assert_eq!(
            validate(&config(NamespaceMode::Target)).unwrap_err().code,
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            validate(&PodSandboxConfig::default()).unwrap_err().code,
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn hostnames() {
        let mut c = config(NamespaceMode::Pod);
        assert_eq!(pod_hostname(&c), "p", "the pod name without a hostname");
        c.metadata.as_mut().unwrap().name = format!("{}-x", "a".repeat(62));
        assert_eq!(
            pod_hostname(&c),
            "a".repeat(62),
            "cut to 63, trailing - trimmed"
        );
        c.hostname = "web-0".into();
        assert_eq!(pod_hostname(&c), "web-0");
        c.linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
            .unwrap()
            .network = NamespaceMode::Node as i32;
        assert_eq!(
            pod_hostname(&c),
            node_hostname(),
            "host network: the node's"
        );
    }

    #[test]
    fn hostnames_from_names() {
        assert_eq!(hostname_from_name("web-0"), "web-0");
        assert_eq!(hostname_from_name("Web_Server 1"), "Web-Server-1");
        assert_eq!(hostname_from_name("-.x.-"), "x");
        assert_eq!(hostname_from_name("___"), "pod");
        assert_eq!(hostname_from_name(""), "pod");
        assert_eq!(hostname_from_name(&"b".repeat(200)).len(), 63);
        assert_eq!(hostname_from_name("ünï"), "n");
    }

    #[test]
    fn port_mappings_and_cni_args() {
        let mut c = config(NamespaceMode::Pod);
        c.port_mappings = vec![
            k8s_cri::v1::PortMapping {
                protocol: Protocol::Udp as i32,
                container_port: 53,
                host_port: 5353,
                host_ip: String::new(),
            },
            k8s_cri::v1::PortMapping {
                protocol: Protocol::Tcp as i32,
                container_port: 80,
                host_port: 0,
                host_ip: String::new(),
            },
        ];
        let pm = port_mappings(&c);
        assert_eq!(pm.len(), 1, "a mapping without host port is not forwarded");
        assert_eq!((pm[0].host_port, pm[0].protocol.as_str()), (5353, "udp"));
        let args = cni_args("abc", &c);
        assert!(args.contains(&("K8S_POD_NAME".into(), "p".into())));
        assert!(args.contains(&("K8S_POD_INFRA_CONTAINER_ID".into(), "abc".into())));
    }
}
