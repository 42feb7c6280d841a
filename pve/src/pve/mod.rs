//! The `pve` pod host: every pod a Proxmox VE CT.
//!
//! * Lifecycle goes through the Proxmox API with an API token (`api.rs`): create, start,
//!   shutdown/stop, destroy, each a task whose UPID is polled until it ends.
//! * A CT is created from pvecri's template (`template.rs`: podinit and empty mount points)
//!   on `storage`, with a vmid from `vmid_range` that no guest of the cluster has
//!   (`vmid.rs`), tags `pvecri` + namespace and a description naming the pod
//!   (`describe.rs`), `ostype: unmanaged`, and memory/CPU limits from the pod's resources.
//! * What the API cannot set goes into `/etc/pve/lxc/<vmid>.conf` under Proxmox's config
//!   lock (`ctconf.rs`, keys from `raw.rs`).
//! * pvecri keeps a record per CT (`records.rs`), written before the create request, so a
//!   daemon killed mid-create finds the CT again; the CT's tags and description are the other
//!   half of the truth, for CTs whose record is lost. CTs without the `pvecri` tag, or outside
//!   the range, are never touched.
//! * The API being down makes calls fail with [`PodHostError::Unavailable`] and
//!   [`PodHost::unavailable`] report it (RuntimeReady false), until it answers again.

pub mod api;
pub mod config;
pub mod ctconf;
pub mod describe;
pub mod idshift;
pub mod raw;
pub mod records;
pub mod template;
pub mod tls;
pub mod vmid;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::{debug, info, warn};

use crate::cgroup::{self, Layout};
use crate::error::PodHostError;
use crate::spec::{CtInfo, CtRuntime, CtStatus, IdMap, PodResources, PodSpec, is_pod_id};
use crate::{PodHost, nsenter, oom, pod_dir, reach};
use api::{Api, ApiError, CtState};
use config::{PveConfig, Token};
use describe::{Described, Role};
use records::{CtRecord, Records};

/// How long Proxmox tasks may take before pvecri gives up waiting.
const CREATE_TIMEOUT: Duration = Duration::from_secs(300);
const START_TIMEOUT: Duration = Duration::from_secs(120);
const DESTROY_TIMEOUT: Duration = Duration::from_secs(300);
/// Extra time a shutdown task gets beyond its own timeout (hooks, cleanup, the kill).
const STOP_SLACK: Duration = Duration::from_secs(60);
/// Tries of create against other guests taking the chosen vmid first.
const CREATE_TRIES: usize = 10;
/// How long destroy waits for a create task still holding the CT (`lock: create`).
const CREATE_LOCK_WAIT: Duration = Duration::from_secs(300);
/// How old a health or CT list answer may be before it is asked again.
const HEALTH_TTL: Duration = Duration::from_secs(2);
const LIST_TTL: Duration = Duration::from_millis(1000);
/// Lines of a failed start's stderr and console quoted in the error.
const LOG_LINES: usize = 20;
/// How long after its record a create request may still reach Proxmox.
const CREATE_REQUEST_GRACE: Duration = Duration::from_secs(10);
/// How long what a host-PID pod left may take to die after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(10);

pub struct PveDriver {
    api: Api,
    config: PveConfig,
    paths: ctconf::ConfPaths,
    vmlist: PathBuf,
    records: Records,
    alloc: vmid::Allocator,
    layout: Layout,
    hierarchies: cgroup::Hierarchies,
    /// Template volume per podinit (path, size, mtime).
    templates: tokio::sync::Mutex<HashMap<(PathBuf, u64, i64), String>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    health: Mutex<Option<(Instant, Option<String>)>>,
    /// The last CT list, with the generation it was asked for in.
    cts: tokio::sync::Mutex<Option<(Instant, u64, Vec<CtState>)>>,
    /// Bumped by every change pvecri makes; a list asked for before it is stale.
    generation: std::sync::atomic::AtomicU64,
    /// Init PIDs learned from `status/current`, per vmid, while the CT runs.
    pids: Mutex<HashMap<u32, u32>>,
}

/// Where in the Proxmox world a pod CT is.
fn handle(vmid: u32) -> String {
    format!("pve:{vmid}")
}

fn api_err(e: ApiError) -> PodHostError {
    match e {
        ApiError::Unreachable { .. } => PodHostError::Unavailable(e.to_string()),
        ApiError::Unauthenticated { .. } => PodHostError::Unauthenticated(e.to_string()),
        ApiError::Forbidden { .. } => PodHostError::PermissionDenied(e.to_string()),
        other => PodHostError::Backend(other.to_string()),
    }
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> PodHostError {
    move |e| PodHostError::io(what, e)
}

impl PveDriver {
    pub fn new(config: &PveConfig, state_dir: &Path) -> Result<Self, PodHostError> {
        let unavailable = |reason: String| PodHostError::DriverUnavailable {
            driver: "pve".into(),
            reason,
        };
        config.validate().map_err(|e| unavailable(e.to_string()))?;
        let token = Token::load(&config.token_file).map_err(|e| unavailable(e.to_string()))?;
        let trust = config.trust().map_err(|e| unavailable(e.to_string()))?;
        let tls = tls::client_config(&trust).map_err(|e| unavailable(e.to_string()))?;
        let base = config.api_base().map_err(|e| unavailable(e.to_string()))?;
        let node = config.node_name().map_err(|e| unavailable(e.to_string()))?;
        let api = Api::new(&base, &node, &token, tls).map_err(unavailable)?;
        let hierarchies = cgroup::Hierarchies::detect()?;
        let layout = hierarchies.layout;
        let records = Records::new(state_dir.join("pve").join("cts"));
        std::fs::create_dir_all(records.dir())
            .map_err(|e| PodHostError::io_at("creating", records.dir(), e))?;
        info!(api = %base, %node, token = %token, storage = %config.storage, range = %config.vmid_range, "pve pod host");
        Ok(Self {
            api,
            config: config.clone(),
            paths: ctconf::ConfPaths::default(),
            vmlist: PathBuf::from(vmid::VMLIST_PATH),
            records,
            alloc: vmid::Allocator::default(),
            layout,
            hierarchies,
            templates: tokio::sync::Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            health: Mutex::new(None),
            cts: tokio::sync::Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
            pids: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    fn forget_lock(&self, id: &str) {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Notes what a call said about the API's reachability (any answer but a refused token
    /// means it is there).
    fn note(&self, verdict: Option<String>) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), verdict));
    }

    fn fail(&self, e: ApiError) -> PodHostError {
        match &e {
            ApiError::Unreachable { .. } | ApiError::Unauthenticated { .. } => {
                self.note(Some(e.to_string()))
            }
            _ => self.note(None),
        }
        api_err(e)
    }

    fn observe<T>(&self, r: Result<T, ApiError>) -> Result<T, PodHostError> {
        match r {
            Ok(v) => {
                self.note(None);
                Ok(v)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn invalidate_list(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every CT on the node; a list up to [`LIST_TTL`] old unless `fresh`, never one asked
    /// for before pvecri's last change.
    async fn list_cts(&self, fresh: bool) -> Result<Vec<CtState>, PodHostError> {
        let mut cached = self.cts.lock().await;
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        if !fresh
            && let Some((at, seen, list)) = cached.as_ref()
            && at.elapsed() < LIST_TTL
            && *seen == generation
        {
            return Ok(list.clone());
        }
        let list = self.observe(self.api.list_cts().await)?;
        *cached = Some((Instant::now(), generation, list.clone()));
        Ok(list)
    }

    fn record(&self, id: &str) -> Result<Option<CtRecord>, PodHostError> {
        self.records
            .get(id)
            .map_err(|e| PodHostError::io(format!("reading the record of pod CT {id}"), e))
    }

    fn put_record(&self, r: &CtRecord) -> Result<(), PodHostError> {
        self.records
            .put(r)
            .map_err(|e| PodHostError::io(format!("writing the record of pod CT {}", r.id), e))
    }

    /// The template for this podinit, uploaded once.
    async fn template(&self, podinit: &Path) -> Result<String, PodHostError> {
        use std::os::unix::fs::MetadataExt;
        let meta =
            std::fs::metadata(podinit).map_err(|e| PodHostError::io_at("reading", podinit, e))?;
        let key = (podinit.to_path_buf(), meta.len(), meta.mtime());
        let mut cache = self.templates.lock().await;
        if let Some(volid) = cache.get(&key) {
            return Ok(volid.clone());
        }
        let volid = template::ensure(&self.api, self.config.template_storage(), podinit)
            .await
            .map_err(|e| match e {
                template::TemplateError::Api(e) => self.fail(e),
                other => PodHostError::Backend(other.to_string()),
            })?;
        cache.insert(key, volid.clone());
        Ok(volid)
    }

    fn create_params(
        &self,
        spec: &PodSpec,
        vmid: u32,
        template: &str,
    ) -> Vec<(&'static str, String)> {
        let (ns, pod) = split_name(spec);
        let (tags, description) = if spec.warm {
            (describe::warm_tags(), describe::warm_description(&spec.id))
        } else {
            (
                describe::pod_tags(&spec.namespace),
                describe::pod_description(&describe::PodFacts {
                    sandbox: &spec.id,
                    namespace: ns,
                    name: pod,
                    uid: &spec.uid,
                }),
            )
        };
        let mut p = vec![
            ("vmid", vmid.to_string()),
            ("ostemplate", template.to_string()),
            ("rootfs", format!("{}:0", self.config.storage)),
            ("ostype", "unmanaged".into()),
            ("arch", "amd64".into()),
            ("hostname", spec.hostname.clone()),
            ("tags", tags),
            ("description", description),
            (
                "unprivileged",
                if spec.privileged { "0" } else { "1" }.into(),
            ),
            ("onboot", "0".into()),
        ];
        p.extend(resource_params(
            &spec.resources,
            self.layout,
            host_memory_mib(),
        ));
        if let Some(pool) = &self.config.pool {
            p.push(("pool", pool.clone()));
        }
        p
    }

    fn vmids_in_use(&self) -> Result<BTreeSet<u32>, PodHostError> {
        vmid::read_vmlist(&self.vmlist).map_err(|e| {
            PodHostError::Backend(format!(
                "{e} (pvecri must run on the Proxmox node, where /etc/pve is mounted)"
            ))
        })
    }

    /// Creates the CT for `record` (whose vmid is set anew on each try), returns the vmid.
    async fn create_ct(
        &self,
        spec: &PodSpec,
        record: &mut CtRecord,
        template: &str,
    ) -> Result<u32, PodHostError> {
        let mut failed = BTreeSet::new();
        for attempt in 1..=CREATE_TRIES {
            let in_use = self.vmids_in_use()?;
            let ours: BTreeSet<u32> = self.records.all().0.iter().map(|r| r.vmid).collect();
            let Some(reservation) = self
                .alloc
                .reserve(self.config.vmid_range, &[&in_use, &ours, &failed])
            else {
                return Err(PodHostError::ResourceExhausted(format!(
                    "no free vmid left in pve.vmid_range {} ({} guests in the cluster): widen the \
                     range or remove pods",
                    self.config.vmid_range,
                    in_use.len()
                )));
            };
            let vmid = reservation.vmid;
            record.vmid = vmid;
            // Before the request: whatever happens to this daemon from here on, a restart
            // knows which vmid to look at.
            self.put_record(record)?;
            let params = self.create_params(spec, vmid, template);
            match self.api.create_ct(&params).await {
                Ok(upid) => {
                    self.note(None);
                    self.observe(self.api.wait_task(&upid, CREATE_TIMEOUT).await)?;
                    return Ok(vmid);
                }
                Err(e) if e.is_already_exists() => {
                    debug!(
                        vmid,
                        attempt, "vmid taken by another guest meanwhile; next one"
                    );
                    failed.insert(vmid);
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
        Err(PodHostError::Backend(format!(
            "creating a CT failed {CREATE_TRIES} times: other guests kept taking the vmids {failed:?}"
        )))
    }

    /// The config text for the harness-free check in unit tests and the raw keys written.
    async fn write_raw(&self, record: &CtRecord) -> Result<(), PodHostError> {
        let log = self.records.console_log(&record.id);
        let include = self.records.included(&record.id);
        let input = raw::RawInput {
            pod_dir: &record.pod_dir,
            idmap: record.idmap,
            network: record.network,
            host_pid: record.host_pid,
            host_ipc: record.host_ipc,
            layout: self.layout,
            console_log: &log,
            include: &include,
        };
        if let Some(text) = raw::included_config(&input) {
            std::fs::write(&include, text)
                .map_err(|e| PodHostError::io_at("writing", &include, e))?;
        }
        let keys = raw::raw_keys(&input);
        let paths = self.paths.clone();
        let vmid = record.vmid;
        tokio::task::spawn_blocking(move || ctconf::write_raw_keys(&paths, vmid, &keys))
            .await
            .map_err(|e| PodHostError::Backend(format!("config writer: {e}")))?
            .map_err(|e| {
                PodHostError::Backend(format!(
                    "writing the raw LXC keys of CT {vmid} into {}: {e}",
                    self.paths.conf(vmid).display()
                ))
            })?;
        Ok(())
    }

    async fn create_locked(&self, spec: &PodSpec) -> Result<(), PodHostError> {
        let template = self.template(&spec.podinit).await?;
        std::fs::create_dir_all(&spec.pod_dir)
            .map_err(|e| PodHostError::io_at("creating pod directory", &spec.pod_dir, e))?;
        let pod_dir_bound = !pod_dir::is_mount_point(&spec.pod_dir)
            .map_err(|e| PodHostError::io_at("inspecting", &spec.pod_dir, e))?;
        let mut record = CtRecord {
            id: spec.id.clone(),
            vmid: 0,
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            uid: spec.uid.clone(),
            labels: spec.labels.clone(),
            pod_dir: spec.pod_dir.clone(),
            pod_dir_bound,
            privileged: spec.privileged,
            network: spec.network,
            idmap: spec.user_idmap(),
            host_pid: spec.host_pid,
            host_ipc: spec.host_ipc,
            sysctls: spec.sysctls.clone(),
            created: false,
            warm: spec.warm,
        };
        let result = async {
            pod_dir::make_shared(&spec.pod_dir, pod_dir_bound)
                .map_err(|e| PodHostError::io_at("making a shared mount of", &spec.pod_dir, e))?;
            if !spec.privileged {
                let (uid, gid) = spec.ct_root_host_ids();
                std::os::unix::fs::chown(&spec.pod_dir, Some(uid), Some(gid)).map_err(|e| {
                    PodHostError::io_at("handing to the CT's root", &spec.pod_dir, e)
                })?;
            }
            let vmid = self.create_ct(spec, &mut record, &template).await?;
            if let Some(map) = record.idmap
                && map != IdMap::PROXMOX_DEFAULT
            {
                self.shift_rootfs(vmid, map).await?;
            }
            self.write_raw(&record).await?;
            record.created = true;
            self.put_record(&record)?;
            self.invalidate_list();
            info!(id = %spec.id, vmid, name = %spec.name, "pod CT created");
            Ok(())
        }
        .await;
        if result.is_err() {
            // Leave nothing behind: the CT if it was made, the mount, the record.
            if record.vmid != 0 {
                if let Err(e) = self.remove_ct(&record, false).await {
                    warn!(id = %spec.id, vmid = record.vmid, error = %e, "removing the CT of a failed create");
                    return result;
                }
            } else {
                let _ = self.records.remove(&spec.id);
            }
            if pod_dir_bound {
                let _ = pod_dir::release(&spec.pod_dir);
            }
        }
        result
    }

    /// Proxmox extracts the template of an unprivileged CT with its default map (root is
    /// 100000); a CT with another map gets its root volume's owners shifted to it before its
    /// first start, as its files would have been extracted with that map.
    async fn shift_rootfs(&self, vmid: u32, map: IdMap) -> Result<(), PodHostError> {
        let cfg = self.observe(self.api.ct_config(vmid).await)?;
        let volid = cfg
            .get("rootfs")
            .and_then(|r| r.as_str())
            .and_then(|r| r.split(',').next())
            .map(|v| v.trim_start_matches("volume=").to_string())
            .ok_or_else(|| PodHostError::Backend(format!("CT {vmid} has no rootfs volume")))?;
        let path = self.observe(self.api.volume_path(&self.config.storage, &volid).await)?;
        let root = PathBuf::from(&path);
        tokio::task::spawn_blocking(move || idshift::shift_tree(&root, IdMap::PROXMOX_DEFAULT, map))
            .await
            .map_err(|e| PodHostError::Backend(format!("id shift worker: {e}")))?
            .map_err(|e| {
                PodHostError::io(format!("shifting the owners of CT {vmid}'s root {path}"), e)
            })
    }

    /// Is the CT at `vmid` the one of sandbox `id`? Reads its config; `None` when the CT
    /// does not exist.
    async fn owned(&self, vmid: u32, id: &str) -> Result<Option<bool>, PodHostError> {
        match self.api.ct_config(vmid).await {
            Ok(cfg) => {
                self.note(None);
                let tags = cfg
                    .get("tags")
                    .and_then(|t| t.as_str())
                    .map(api::split_tags)
                    .unwrap_or_default();
                let descr = cfg
                    .get("description")
                    .and_then(|d| d.as_str())
                    .and_then(describe::parse);
                let lock = cfg.get("lock").and_then(|l| l.as_str()).unwrap_or("");
                if lock == "create" {
                    // Config written by Proxmox before the create task filled it in.
                    return Ok(Some(false));
                }
                Ok(Some(
                    tags.iter().any(|t| t == describe::TAG)
                        && descr.is_some_and(|d| d.sandbox == id),
                ))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Waits while a create task holds the CT (`lock: create`).
    async fn wait_create_lock(&self, vmid: u32) -> Result<(), PodHostError> {
        let deadline = Instant::now() + CREATE_LOCK_WAIT;
        loop {
            let locked = match self.api.ct_config(vmid).await {
                Ok(cfg) => cfg.get("lock").and_then(|l| l.as_str()) == Some("create"),
                Err(e) if e.is_not_found() => false,
                Err(e) => return Err(self.fail(e)),
            };
            if !locked {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PodHostError::Backend(format!(
                    "CT {vmid} is still locked by its create task after {}s",
                    CREATE_LOCK_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Destroys the record's CT (if it is still the record's) and everything local.
    /// `in_flight`: the record may be of a create whose request a crash cut off, so a CT may
    /// still appear.
    async fn remove_ct(&self, record: &CtRecord, in_flight: bool) -> Result<(), PodHostError> {
        let vmid = record.vmid;
        if vmid != 0 {
            self.wait_create_lock(vmid).await?;
            let mut owned = self.owned(vmid, &record.id).await?;
            if owned.is_none() && !record.created && in_flight {
                // A create request sent just before a crash may not have reached Proxmox's
                // handler yet: give it time to show before the record (the only trace of
                // it) goes.
                let age = self.records.age(&record.id).unwrap_or(CREATE_REQUEST_GRACE);
                if let Some(left) = CREATE_REQUEST_GRACE.checked_sub(age) {
                    tokio::time::sleep(left).await;
                    self.wait_create_lock(vmid).await?;
                    owned = self.owned(vmid, &record.id).await?;
                }
            }
            match owned {
                None => debug!(id = %record.id, vmid, "CT already gone"),
                Some(false) => warn!(
                    id = %record.id, vmid,
                    "CT is no longer this pod's (other tags or description): left alone"
                ),
                Some(true) => {
                    let r = match self.api.destroy_ct(vmid).await {
                        Ok(upid) => self.api.wait_task(&upid, DESTROY_TIMEOUT).await,
                        Err(e) => Err(e),
                    };
                    match r {
                        Ok(()) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => {
                            // A task that failed but removed the CT anyway is fine.
                            if self.owned(vmid, &record.id).await?.is_some() {
                                return Err(self.fail(e));
                            }
                        }
                    }
                    if record.host_pid {
                        self.kill_leftovers(record).await?;
                    }
                    info!(id = %record.id, vmid, "pod CT destroyed");
                }
            }
        }
        self.pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&vmid);
        if record.pod_dir_bound {
            pod_dir::release(&record.pod_dir)
                .map_err(|e| PodHostError::io_at("unmounting pod directory", &record.pod_dir, e))?;
        }
        self.records.remove(&record.id).map_err(io_err(format!(
            "removing the record of pod CT {}",
            record.id
        )))?;
        self.invalidate_list();
        Ok(())
    }

    /// The record of `id`, or one rebuilt from a CT whose description names it (a record lost
    /// with the state directory).
    async fn find(&self, id: &str) -> Result<Option<CtRecord>, PodHostError> {
        if let Some(r) = self.record(id)? {
            return Ok(Some(r));
        }
        if !is_pod_id(id) {
            return Ok(None);
        }
        for (vmid, d) in self.scan().await? {
            if d.sandbox == id {
                return Ok(Some(orphan_record(id, vmid, d.role == Role::Warm)));
            }
        }
        Ok(None)
    }

    /// CTs in the range tagged `pvecri` whose description names a sandbox.
    async fn scan(&self) -> Result<Vec<(u32, Described)>, PodHostError> {
        let mut found = Vec::new();
        for ct in self.list_cts(true).await? {
            if !self.config.vmid_range.contains(ct.vmid)
                || !ct.tags.iter().any(|t| t == describe::TAG)
            {
                continue;
            }
            match self.api.ct_config(ct.vmid).await {
                Ok(cfg) => {
                    if let Some(d) = cfg
                        .get("description")
                        .and_then(|d| d.as_str())
                        .and_then(describe::parse)
                    {
                        found.push((ct.vmid, d));
                    }
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
        Ok(found)
    }

    /// The CT's state, from the (briefly cached) list; its init PID from `status/current`
    /// when not known yet.
    async fn state_of(&self, record: &CtRecord) -> Result<CtStatus, PodHostError> {
        let list = self.list_cts(false).await?;
        let Some(ct) = list.iter().find(|c| c.vmid == record.vmid) else {
            return Ok(CtStatus::NotFound);
        };
        if !ct.tags.iter().any(|t| t == describe::TAG) {
            // Not ours any more: another guest has the vmid.
            return Ok(CtStatus::NotFound);
        }
        if !ct.running() {
            self.pids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&record.vmid);
            return Ok(CtStatus::Stopped);
        }
        let known = self
            .pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&record.vmid)
            .copied();
        if let Some(pid) = known
            && is_podinit(pid)
        {
            return Ok(CtStatus::Running { init_pid: pid });
        }
        match self.current(record.vmid).await? {
            Some(s) if s.running() => match s.pid {
                Some(pid) => Ok(CtStatus::Running { init_pid: pid }),
                None => Ok(CtStatus::Stopped),
            },
            Some(_) => Ok(CtStatus::Stopped),
            None => Ok(CtStatus::NotFound),
        }
    }

    /// `status/current`, `None` for a CT that does not exist; remembers the init PID.
    async fn current(&self, vmid: u32) -> Result<Option<CtState>, PodHostError> {
        match self.api.ct_status(vmid).await {
            Ok(s) => {
                self.note(None);
                let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
                match s.pid {
                    Some(pid) if s.running() => pids.insert(vmid, pid),
                    _ => pids.remove(&vmid),
                };
                Ok(Some(s))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn gone(record: &CtRecord) -> PodHostError {
        PodHostError::Ct {
            id: record.id.clone(),
            message: format!(
                "Proxmox has no CT {} any more (it was removed outside pvecri); pvecri does not \
                 recreate it: remove the pod",
                record.vmid
            ),
            log: String::new(),
        }
    }

    /// The end of what a failed start left: the unit's stderr and podinit's console.
    fn start_logs(&self, record: &CtRecord) -> String {
        let mut out = String::new();
        for (what, path) in [
            (
                "lxc-start stderr",
                PathBuf::from(format!("/run/pve/ct-{}.stderr", record.vmid)),
            ),
            ("console", self.records.console_log(&record.id)),
        ] {
            let lines = tail(&path, LOG_LINES);
            if !lines.is_empty() {
                out.push_str(&format!(
                    "\n{what} ({}):\n  {}",
                    path.display(),
                    lines.join("\n  ")
                ));
            }
        }
        out
    }

    async fn start_locked(&self, record: &CtRecord) -> Result<CtRuntime, PodHostError> {
        let vmid = record.vmid;
        let pid = match self.current(vmid).await? {
            None => return Err(Self::gone(record)),
            Some(s) if s.running() && s.pid.is_some() => s.pid,
            Some(_) => {
                let r = match self.api.ct_power(vmid, "start", &[]).await {
                    Ok(upid) => self.api.wait_task(&upid, START_TIMEOUT).await,
                    Err(e) => Err(e),
                };
                self.invalidate_list();
                match r {
                    Ok(()) => {}
                    Err(e) if e.is_already_running() => {}
                    Err(e @ ApiError::TaskFailed { .. }) => {
                        return Err(PodHostError::Ct {
                            id: record.id.clone(),
                            message: format!("Proxmox could not start CT {vmid}: {e}"),
                            log: self.start_logs(record),
                        });
                    }
                    Err(e) => return Err(self.fail(e)),
                }
                match self.current(vmid).await? {
                    Some(s) if s.running() => s.pid,
                    Some(_) => {
                        return Err(PodHostError::Ct {
                            id: record.id.clone(),
                            message: format!("CT {vmid} stopped right after its start"),
                            log: self.start_logs(record),
                        });
                    }
                    None => return Err(Self::gone(record)),
                }
            }
        };
        let pid = pid.ok_or_else(|| PodHostError::Ct {
            id: record.id.clone(),
            message: format!("Proxmox reports CT {vmid} running without an init PID"),
            log: String::new(),
        })?;
        if !record.sysctls.is_empty() {
            let sysctls = record.sysctls.clone();
            let applied =
                tokio::task::spawn_blocking(move || nsenter::apply_sysctls(pid, &sysctls))
                    .await
                    .map_err(|e| PodHostError::Backend(format!("sysctl worker: {e}")))?;
            if let Err(e) = applied {
                let _ = self.stop_locked(record, Duration::ZERO).await;
                return Err(PodHostError::io(
                    format!("pod CT {}: setting sysctls", record.id),
                    e,
                ));
            }
        }
        debug!(id = %record.id, vmid, pid, "pod CT started");
        Ok(CtRuntime::for_init(pid))
    }

    async fn stop_locked(&self, record: &CtRecord, timeout: Duration) -> Result<(), PodHostError> {
        let vmid = record.vmid;
        match self.current(vmid).await? {
            None => return Ok(()),
            Some(s) if !s.running() => {
                // Its init is gone, but a host-PID pod's processes may not be.
                if record.host_pid {
                    self.kill_leftovers(record).await?;
                }
                return Ok(());
            }
            Some(_) => {}
        }
        let r = if timeout.is_zero() {
            self.api.ct_power(vmid, "stop", &[]).await
        } else {
            let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
            self.api
                .ct_power(
                    vmid,
                    "shutdown",
                    &[("timeout", secs.to_string()), ("forceStop", "1".into())],
                )
                .await
        };
        let r = match r {
            Ok(upid) => self.api.wait_task(&upid, timeout + STOP_SLACK).await,
            Err(e) => Err(e),
        };
        self.invalidate_list();
        self.pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&vmid);
        match r {
            Ok(()) => {}
            Err(e) if e.is_not_running() || e.is_not_found() => {}
            Err(e) => {
                // A stop task that failed but left the CT down did its job.
                if let Some(s) = self.current(vmid).await?
                    && s.running()
                {
                    return Err(self.fail(e));
                }
            }
        }
        if record.host_pid {
            self.kill_leftovers(record).await?;
        }
        Ok(())
    }

    /// Proxmox's cgroup of the CT (`lxc.cgroup.dir.container`).
    fn ct_cgroup(vmid: u32) -> String {
        format!("lxc/{vmid}")
    }

    /// A CT in the host's PID namespace does not end with its init: what the pod left
    /// running lives on, and only the CT's cgroup says whose it is. SIGKILLs it until none
    /// is left, then removes the cgroup so that LXC can make it again.
    async fn kill_leftovers(&self, record: &CtRecord) -> Result<(), PodHostError> {
        let relative = Self::ct_cgroup(record.vmid);
        let deadline = Instant::now() + KILL_GRACE;
        loop {
            let left = cgroup::procs_everywhere(&self.hierarchies.roots, &relative);
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(PodHostError::Ct {
                    id: record.id.clone(),
                    message: format!(
                        "processes {left:?} are still in the cgroup {relative} of CT {} {:?} after \
                         SIGKILL",
                        record.vmid, KILL_GRACE
                    ),
                    log: String::new(),
                });
            }
            debug!(id = %record.id, ?left, "killing what the pod CT left in its cgroup");
            for pid in left {
                crate::process::kill_now(pid).map_err(|e| {
                    PodHostError::io(format!("pod CT {}: killing {pid}", record.id), e)
                })?;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cgroup::remove_everywhere(&self.hierarchies.roots, &relative)?;
        Ok(())
    }

    /// Makes a warm CT the pod's: its name in Proxmox, limits, hostname, sysctls.
    async fn adopt_locked(
        &self,
        spec: &PodSpec,
        mut record: CtRecord,
    ) -> Result<CtRuntime, PodHostError> {
        let vmid = record.vmid;
        let pid = match self.current(vmid).await? {
            Some(s) if s.running() => s.pid,
            Some(_) => None,
            None => return Err(Self::gone(&record)),
        }
        .ok_or_else(|| PodHostError::Ct {
            id: spec.id.clone(),
            message: format!("warm CT {vmid} is not running"),
            log: String::new(),
        })?;
        let (ns, pod) = split_name(spec);
        let mut params = vec![
            ("hostname", spec.hostname.clone()),
            ("tags", describe::pod_tags(&spec.namespace)),
            (
                "description",
                describe::pod_description(&describe::PodFacts {
                    sandbox: &spec.id,
                    namespace: ns,
                    name: pod,
                    uid: &spec.uid,
                }),
            ),
        ];
        params.extend(resource_params(
            &spec.resources,
            self.layout,
            host_memory_mib(),
        ));
        self.observe(self.api.set_config(vmid, &params).await)?;
        let hostname = spec.hostname.clone();
        let sysctls = spec.sysctls.clone();
        tokio::task::spawn_blocking(move || {
            nsenter::set_hostname(pid, &hostname)?;
            nsenter::apply_sysctls(pid, &sysctls)
        })
        .await
        .map_err(|e| PodHostError::Backend(format!("namespace worker: {e}")))?
        .map_err(|e| PodHostError::io(format!("pod CT {}: hostname and sysctls", spec.id), e))?;
        record.warm = false;
        record.name = spec.name.clone();
        record.namespace = spec.namespace.clone();
        record.uid = spec.uid.clone();
        record.labels = spec.labels.clone();
        record.sysctls = spec.sysctls.clone();
        self.put_record(&record)?;
        info!(id = %spec.id, vmid, name = %spec.name, "warm CT adopted");
        Ok(CtRuntime::for_init(pid))
    }
}

/// `(namespace, pod name)` of a spec whose `name` is `<namespace>/<pod>`.
fn split_name(spec: &PodSpec) -> (&str, &str) {
    match spec.name.split_once('/') {
        Some((ns, pod)) => (ns, pod),
        None => (spec.namespace.as_str(), spec.name.as_str()),
    }
}

fn orphan_record(id: &str, vmid: u32, warm: bool) -> CtRecord {
    CtRecord {
        id: id.to_string(),
        vmid,
        name: String::new(),
        namespace: String::new(),
        uid: String::new(),
        labels: Default::default(),
        pod_dir: PathBuf::new(),
        pod_dir_bound: false,
        privileged: true,
        network: crate::spec::NetworkMode::Isolated,
        idmap: None,
        host_pid: false,
        host_ipc: false,
        sysctls: Default::default(),
        created: true,
        warm,
    }
}

/// Whether `pid` is (still) a podinit: PIDs are reused.
fn is_podinit(pid: u32) -> bool {
    crate::process::cmdline(pid).is_some_and(|c| c.starts_with(crate::lxc::render::PODINIT_IN_CT))
}

/// The host's memory in MiB: the `memory` of a pod without a limit (Proxmox has no
/// "unlimited" and would otherwise give it 512 MiB).
fn host_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib / 1024)
        .unwrap_or(1 << 20)
}

/// Proxmox's limits for the pod's resources: `memory` (MiB, at least 16), no swap,
/// `cpulimit` (the CFS quota in CPUs) and `cpuunits` (the weight). Proxmox's `cores` would
/// pin the CT to that many randomly chosen CPUs, which is not what a Kubernetes CPU limit
/// means, so it is not set.
pub fn resource_params(
    res: &PodResources,
    layout: Layout,
    host_mib: u64,
) -> Vec<(&'static str, String)> {
    const MIB: u64 = 1 << 20;
    let memory = match res.memory_limit_bytes {
        Some(bytes) => bytes.div_ceil(MIB).max(16),
        None => host_mib.max(16),
    };
    let mut p = vec![("memory", memory.to_string()), ("swap", "0".to_string())];
    if let Some(quota) = res.cpu_quota.filter(|q| *q > 0) {
        let period = res.cpu_period.filter(|p| *p > 0).unwrap_or(100_000);
        let cpus = (quota as f64 / period as f64).clamp(0.001, 8192.0);
        p.push(("cpulimit", format!("{cpus:.3}")));
    }
    if let Some(shares) = res.cpu_shares.filter(|s| *s > 0) {
        let units = match layout {
            Layout::Unified => cgroup::shares_to_weight(shares),
            Layout::Legacy | Layout::Hybrid => shares.clamp(2, 262_144),
        };
        p.push(("cpuunits", units.to_string()));
    }
    p
}

/// The last `n` lines of a file (empty when it cannot be read).
fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

#[async_trait]
impl PodHost for PveDriver {
    fn driver(&self) -> &'static str {
        "pve"
    }

    fn supports_user_namespaces(&self) -> bool {
        true
    }

    async fn unavailable(&self) -> Option<String> {
        let cached = self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some((at, verdict)) = cached
            && at.elapsed() < HEALTH_TTL
        {
            return verdict;
        }
        let r = self.api.version().await;
        let verdict = match &r {
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), verdict.clone()));
        verdict
    }

    async fn create(&self, spec: &PodSpec) -> Result<(), PodHostError> {
        spec.validate()?;
        let id = spec.id.as_str();
        if !spec.podinit.is_file() {
            return Err(PodHostError::Unsupported {
                id: id.to_string(),
                reason: format!("podinit {} is not a file", spec.podinit.display()),
            });
        }
        if let Some(map) = spec.user_idmap()
            && let Some(reason) = crate::subid::check_root_delegation(&map)
        {
            return Err(PodHostError::Unsupported {
                id: id.to_string(),
                reason,
            });
        }
        if !spec.privileged {
            let (uid, gid) = spec.ct_root_host_ids();
            if let Some(dir) = reach::first_blocking_dir(&spec.pod_dir, uid, gid) {
                return Err(PodHostError::Unsupported {
                    id: id.to_string(),
                    reason: format!(
                        "the unprivileged CT's root (host uid {uid}) cannot traverse {} on the \
                         way to the pod directory: grant it x access (e.g. mode 0711)",
                        dir.display()
                    ),
                });
            }
        }
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        if self.record(id)?.is_some() {
            return Err(PodHostError::AlreadyExists(id.to_string()));
        }
        self.create_locked(spec).await
    }

    async fn start(&self, id: &str) -> Result<CtRuntime, PodHostError> {
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        let record = self
            .record(id)?
            .filter(|r| r.created)
            .ok_or_else(|| PodHostError::NotFound(id.to_string()))?;
        self.start_locked(&record).await
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), PodHostError> {
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        match self.find(id).await? {
            Some(record) => self.stop_locked(&record, timeout).await,
            None => Ok(()),
        }
    }

    async fn destroy(&self, id: &str) -> Result<(), PodHostError> {
        let lock = self.lock(id);
        let guard = lock.lock().await;
        if let Some(record) = self.find(id).await? {
            self.remove_ct(&record, true).await?;
        }
        drop(guard);
        self.forget_lock(id);
        Ok(())
    }

    async fn status(&self, id: &str) -> Result<CtStatus, PodHostError> {
        let Some(record) = self.record(id)?.filter(|r| r.created) else {
            return Ok(CtStatus::NotFound);
        };
        self.state_of(&record).await
    }

    async fn list(&self) -> Result<Vec<CtInfo>, PodHostError> {
        let mut out = Vec::new();
        let (records, bad) = self.records.all();
        for (path, e) in bad {
            warn!(record = %path.display(), error = %e, "unreadable pod CT record");
        }
        let mut seen = BTreeSet::new();
        for r in records {
            seen.insert(r.id.clone());
            if r.warm {
                continue;
            }
            // A record without a finished create is still a CT to clean up.
            let status = if r.created {
                self.state_of(&r).await?
            } else {
                CtStatus::Stopped
            };
            out.push(CtInfo {
                id: r.id.clone(),
                name: r.name.clone(),
                namespace: r.namespace.clone(),
                labels: r.labels.clone(),
                status,
                handle: handle(r.vmid),
            });
        }
        for (vmid, d) in self.scan().await? {
            if d.role != Role::Pod || seen.contains(&d.sandbox) {
                continue;
            }
            warn!(vmid, id = %d.sandbox, "pod CT without a record (state directory lost?)");
            let record = orphan_record(&d.sandbox, vmid, false);
            out.push(CtInfo {
                id: d.sandbox.clone(),
                name: String::new(),
                namespace: String::new(),
                labels: Default::default(),
                status: self.state_of(&record).await?,
                handle: handle(vmid),
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn list_warm(&self) -> Result<Vec<String>, PodHostError> {
        let mut ids: BTreeSet<String> = self
            .records
            .all()
            .0
            .into_iter()
            .filter(|r| r.warm)
            .map(|r| r.id)
            .collect();
        for (_, d) in self.scan().await? {
            if d.role == Role::Warm {
                ids.insert(d.sandbox);
            }
        }
        Ok(ids.into_iter().collect())
    }

    fn warm_fits(&self, spec: &PodSpec) -> bool {
        spec.privileged
            && spec.network == crate::spec::NetworkMode::Isolated
            && !spec.host_pid
            && !spec.host_ipc
    }

    async fn adopt(&self, spec: &PodSpec) -> Result<CtRuntime, PodHostError> {
        spec.validate()?;
        let lock = self.lock(&spec.id);
        let _guard = lock.lock().await;
        let record = self
            .record(&spec.id)?
            .filter(|r| r.warm && r.created)
            .ok_or_else(|| PodHostError::NotFound(spec.id.clone()))?;
        let runtime = self.adopt_locked(spec, record).await?;
        if let Some(wanted) = spec.oom_score_adj {
            set_oom(runtime.init_pid, wanted);
        }
        Ok(runtime)
    }
}

fn set_oom(pid: u32, wanted: i32) {
    if let Ok(own) = oom::current() {
        let adj = oom::clamp(wanted, own);
        if let Err(e) = std::fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string()) {
            warn!(pid, error = %e, "setting oom_score_adj");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_become_proxmox_limits() {
        let none = resource_params(&PodResources::default(), Layout::Unified, 24_000);
        assert_eq!(none, vec![("memory", "24000".into()), ("swap", "0".into())]);
        let res = PodResources {
            cpu_period: Some(100_000),
            cpu_quota: Some(150_000),
            cpu_shares: Some(1024),
            memory_limit_bytes: Some((100 << 20) + 1),
        };
        assert_eq!(
            resource_params(&res, Layout::Hybrid, 24_000),
            vec![
                ("memory", "101".into()),
                ("swap", "0".into()),
                ("cpulimit", "1.500".into()),
                ("cpuunits", "1024".into())
            ]
        );
        let v2 = resource_params(&res, Layout::Unified, 24_000);
        assert_eq!(v2[3], ("cpuunits", "39".into()));
        let tiny = PodResources {
            memory_limit_bytes: Some(1),
            cpu_quota: Some(100),
            ..Default::default()
        };
        let t = resource_params(&tiny, Layout::Unified, 24_000);
        assert_eq!(t[0], ("memory", "16".into()), "Proxmox's minimum");
        assert_eq!(t[2], ("cpulimit", "0.001".into()));
    }

    #[test]
    fn host_memory_is_known() {
        assert!(host_memory_mib() > 16);
    }
}
