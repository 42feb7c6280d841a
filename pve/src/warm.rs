//! The warm pool: pod CTs created and started ahead, with podinit idle, for RunPodSandbox to
//! adopt instead of creating and starting one (which through Proxmox's hooks takes seconds).
//!
//! A warm CT is an ordinary pod CT of the driver marked warm: a fresh sandbox id, its pod
//! directory under the daemon's pods directory, privileged, its own network namespace with
//! only `lo`, no limits. Taking one hands out its id, which becomes the new pod's sandbox id;
//! [`PodHost::adopt`] then gives it the pod's hostname, limits, sysctls and (Proxmox) tags and
//! description. The pool refills in the background, one CT at a time so that it never
//! competes much with the pods being started. Warm CTs left by an earlier daemon are
//! destroyed at start (their podinit may be an older one).
//!
//! What a warm CT cannot take from its pod: the kubelet's cgroup parent (the `lxc` driver
//! puts warm CTs under the default parent; cgroups of running processes are not moved), a
//! user namespace, or the host's network (such pods are created cold).

use std::collections::VecDeque;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::PodHost;
use crate::spec::{CgroupDriver, NetworkMode, PodResources, PodSpec};

/// What every warm CT is made with.
#[derive(Debug, Clone)]
pub struct WarmTemplate {
    /// The daemon's pods directory: a warm CT's pod directory is `<pods_dir>/<id>`.
    pub pods_dir: PathBuf,
    pub podinit: PathBuf,
    pub cgroup_driver: CgroupDriver,
}

pub const WARM_NAMESPACE: &str = "pvecri-warm";
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WarmStats {
    pub ready: usize,
    pub taken: u64,
    pub made: u64,
    pub failed: u64,
}

pub struct WarmPool {
    host: Arc<dyn PodHost>,
    size: usize,
    template: WarmTemplate,
    ready: Mutex<VecDeque<String>>,
    stats: Mutex<WarmStats>,
    wake: Notify,
    stopping: std::sync::atomic::AtomicBool,
}

/// A fresh 64-hex sandbox id.
pub fn new_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl WarmPool {
    /// Starts filling a pool of `size` CTs in the background.
    pub fn start(host: Arc<dyn PodHost>, size: usize, template: WarmTemplate) -> Arc<Self> {
        let pool = Arc::new(Self {
            host,
            size,
            template,
            ready: Mutex::new(VecDeque::new()),
            stats: Mutex::new(WarmStats::default()),
            wake: Notify::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
        });
        let filler = pool.clone();
        tokio::spawn(async move { filler.fill().await });
        pool
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn stats(&self) -> WarmStats {
        let mut s = *self.stats.lock().unwrap_or_else(|e| e.into_inner());
        s.ready = self.ready.lock().unwrap_or_else(|e| e.into_inner()).len();
        s
    }

    /// A warm CT's id for a pod like `spec` (whose id is ignored), if one is ready and fits.
    pub fn take(&self, spec: &PodSpec) -> Option<String> {
        if !self.host.warm_fits(spec) {
            return None;
        }
        let id = self
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()?;
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).taken += 1;
        self.wake.notify_one();
        Some(id)
    }

    /// Stops refilling and destroys the CTs still waiting.
    pub async fn drain(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
        let ids: Vec<String> = self
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for id in ids {
            if let Err(e) = self.host.destroy(&id).await {
                warn!(id, error = %e, "destroying a warm CT");
            }
        }
    }

    fn spec(&self, id: &str) -> PodSpec {
        PodSpec {
            id: id.to_string(),
            name: format!("{WARM_NAMESPACE}/{}", &id[..12]),
            namespace: WARM_NAMESPACE.to_string(),
            uid: String::new(),
            hostname: WARM_NAMESPACE.to_string(),
            pod_dir: self.template.pods_dir.join(id),
            podinit: self.template.podinit.clone(),
            network: NetworkMode::Isolated,
            host_pid: false,
            host_ipc: false,
            cgroup_parent: None,
            cgroup_driver: self.template.cgroup_driver,
            oom_score_adj: None,
            resources: PodResources::default(),
            sysctls: Default::default(),
            privileged: true,
            idmap: None,
            labels: Default::default(),
            warm: true,
        }
    }

    async fn make_one(&self) -> Result<String, String> {
        let id = new_id().map_err(|e| format!("a new id: {e}"))?;
        let spec = self.spec(&id);
        let made = async {
            self.host.create(&spec).await?;
            self.host.start(&id).await
        }
        .await;
        match made {
            Ok(_) => Ok(id),
            Err(e) => {
                if let Err(d) = self.host.destroy(&id).await {
                    warn!(id, error = %d, "removing a warm CT that failed");
                }
                let _ = std::fs::remove_dir(&spec.pod_dir);
                Err(e.to_string())
            }
        }
    }

    async fn fill(self: Arc<Self>) {
        match self.host.list_warm().await {
            Ok(left) => {
                for id in left {
                    info!(id, "destroying a warm CT of an earlier run");
                    if let Err(e) = self.host.destroy(&id).await {
                        warn!(id, error = %e, "destroying an old warm CT");
                    }
                    let _ = std::fs::remove_dir(self.template.pods_dir.join(&id));
                }
            }
            Err(e) => warn!(error = %e, "listing warm CTs of an earlier run"),
        }
        let mut backoff = Duration::from_millis(500);
        loop {
            if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let have = self.ready.lock().unwrap_or_else(|e| e.into_inner()).len();
            if have >= self.size {
                self.wake.notified().await;
                continue;
            }
            if self.host.unavailable().await.is_some() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            match self.make_one().await {
                Ok(id) => {
                    debug!(id, "warm CT ready");
                    if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                        let _ = self.host.destroy(&id).await;
                        return;
                    }
                    self.ready
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_back(id);
                    self.stats.lock().unwrap_or_else(|e| e.into_inner()).made += 1;
                    backoff = Duration::from_millis(500);
                }
                Err(e) => {
                    self.stats.lock().unwrap_or_else(|e| e.into_inner()).failed += 1;
                    warn!(error = %e, retry_in = ?backoff, "making a warm CT failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_pod_ids() {
        let a = new_id().unwrap();
        assert!(crate::spec::is_pod_id(&a), "{a}");
        assert_ne!(a, new_id().unwrap());
    }
}
