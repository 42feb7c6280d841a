//! Pods and containers: the logic behind the RuntimeService.
//!
//! A pod is a CT defined and started by the pod host, with podinit as its init; its
//! containers are podinit's. This module owns the records, the pod directories, CNI and the
//! order of the steps; the pod host owns how a CT is made, podinit how a process runs.

pub mod containers;
pub mod devices;
pub mod error;
pub mod ids;
pub mod mounts;
pub mod namespaces;
pub mod podfiles;
pub mod pods;
pub mod reconcile;
pub mod records;
pub mod resources;
pub mod seccomp_profile;
pub mod spec;
pub mod streams;
pub mod user;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use imageservice::service::ImageService;
use pve::PodHost;

use crate::cni::invoke::Cni;
use crate::metadata::{MetadataStore, Table};
use error::{Result, RuntimeError};
use records::{ContainerRecord, PodRecord};

pub struct Runtime {
    pub(crate) metadata: Arc<MetadataStore>,
    pub(crate) pod_host: Arc<dyn PodHost>,
    pub(crate) images: Arc<ImageService>,
    pub(crate) cni: Cni,
    pub(crate) cni_conf_dir: PathBuf,
    pub(crate) cgroup_driver: pve::CgroupDriver,
    /// The static podinit binary; `None` when it was not found (pods cannot start).
    pub(crate) podinit: Option<PathBuf>,
    pub(crate) pods_dir: PathBuf,
    /// Readings kept between stats calls.
    pub(crate) stats: Arc<crate::stats::Stats>,
    /// GetContainerEvents' subscribers and what they were sent.
    pub events: crate::events::Events,
    /// CTs started ahead (`warm_pool`), set once after start-up reconciliation.
    pub(crate) warm: std::sync::OnceLock<Arc<pve::WarmPool>>,
    pod_locks: Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
    ctr_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub struct RuntimeParts {
    pub metadata: Arc<MetadataStore>,
    pub pod_host: Arc<dyn PodHost>,
    pub images: Arc<ImageService>,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub cni_conf_dir: PathBuf,
    pub cgroup_driver: pve::CgroupDriver,
    pub podinit: Option<PathBuf>,
    pub state_dir: PathBuf,
}

impl Runtime {
    pub fn new(parts: RuntimeParts) -> Result<Self> {
        let pods_dir = parts.state_dir.join("pods");
        std::fs::create_dir_all(&pods_dir)
            .map_err(|e| RuntimeError::internal(format!("creating {}: {e}", pods_dir.display())))?;
        Ok(Self {
            metadata: parts.metadata,
            pod_host: parts.pod_host,
            images: parts.images,
            cni: Cni::new(parts.cni_bin_dirs, parts.state_dir.join("cni")),
            cni_conf_dir: parts.cni_conf_dir,
            cgroup_driver: parts.cgroup_driver,
            podinit: parts.podinit,
            pods_dir,
            stats: Arc::default(),
            events: crate::events::Events::new(),
            warm: std::sync::OnceLock::new(),
            pod_locks: Mutex::new(HashMap::new()),
            ctr_locks: Mutex::new(HashMap::new()),
        })
    }

    /// Starts keeping `size` pod CTs warm.
    pub fn start_warm_pool(&self, size: usize, podinit: PathBuf) {
        let pool = pve::WarmPool::start(
            self.pod_host.clone(),
            size,
            pve::WarmTemplate {
                pods_dir: self.pods_dir.clone(),
                podinit,
                cgroup_driver: self.cgroup_driver,
            },
        );
        let _ = self.warm.set(pool);
        tracing::info!(size, "warm pool started");
    }

    /// Destroys the warm CTs nobody took (at shutdown).
    pub async fn drain_warm_pool(&self) {
        if let Some(pool) = self.warm.get() {
            pool.drain().await;
        }
    }

    /// Why pods cannot run right now (the pod host's backend), for RuntimeReady.
    pub async fn pod_host_unavailable(&self) -> Option<String> {
        self.pod_host.unavailable().await
    }

    pub fn pod_dir(&self, pod_id: &str) -> PathBuf {
        self.pods_dir.join(pod_id)
    }

    pub fn ctr_dir(&self, pod_id: &str, ctr_id: &str) -> PathBuf {
        self.pod_dir(pod_id)
            .join(podinit::api::CTRS_DIR)
            .join(ctr_id)
    }

    /// Pod-wide operations take it exclusively, container operations shared.
    fn pod_lock(&self, pod_id: &str) -> Arc<tokio::sync::RwLock<()>> {
        let mut locks = self.pod_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(pod_id.to_string()).or_default().clone()
    }

    fn forget_pod_lock(&self, pod_id: &str) {
        self.pod_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pod_id);
    }

    fn ctr_lock(&self, ctr_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.ctr_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(ctr_id.to_string()).or_default().clone()
    }

    fn forget_ctr_lock(&self, ctr_id: &str) {
        self.ctr_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(ctr_id);
    }

    pub fn pods(&self) -> Result<Vec<PodRecord>> {
        Ok(self.metadata.list(Table::Pods)?)
    }

    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        Ok(self.metadata.list(Table::Containers)?)
    }

    /// The pod with this ID or unique ID prefix.
    pub fn find_pod(&self, query: &str) -> Result<PodRecord> {
        let pods = self.pods()?;
        let id = ids::resolve("pod sandbox", query, pods.iter().map(|p| p.id.as_str()))?;
        pods.into_iter()
            .find(|p| p.id == id)
            .ok_or_else(|| RuntimeError::not_found(format!("no pod sandbox with ID {query:?}")))
    }

    pub fn find_container(&self, query: &str) -> Result<ContainerRecord> {
        let ctrs = self.containers()?;
        let id = ids::resolve(
            "container",
            query,
            ctrs.iter().filter(|c| !c.creating).map(|c| c.id.as_str()),
        )?;
        ctrs.into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| RuntimeError::not_found(format!("no container with ID {query:?}")))
    }

    /// Calls podinit of a pod on a blocking thread (its client is synchronous).
    pub(crate) async fn podinit<T, F>(&self, pod_id: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&podinit::client::Client) -> std::result::Result<T, podinit::client::ClientError>
            + Send
            + 'static,
    {
        let client = podinit::client::Client::for_pod_dir(&self.pod_dir(pod_id));
        tokio::task::spawn_blocking(move || f(&client))
            .await
            .map_err(|e| RuntimeError::internal(format!("podinit call task: {e}")))?
            .map_err(RuntimeError::from)
    }

    /// Runs blocking work (filesystem, mounts, layer store) off the async threads.
    pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| RuntimeError::internal(format!("blocking task: {e}")))?
    }
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Removes a directory tree after unmounting whatever is mounted inside it.
pub(crate) fn remove_tree(dir: &Path) {
    mounts::unmount_below(dir);
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "removing directory"),
    }
}

/// Whether a label selector (all pairs must match) selects `labels`.
pub fn labels_match(
    selector: &std::collections::HashMap<String, String>,
    labels: &std::collections::HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
