//! Containers: create (rootfs, mounts, spec, log), start, stop, remove, status, exec, logs.

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use nix::sys::signal::Signal;
use oci_spec::runtime::Capability;
use podinit::api::{ContainerState, ContainerStatus, ExecRequest, ExecResult};

use super::error::{Result, RuntimeError};
use super::records::{ContainerRecord, PodRecord, PodState};
use super::spec::{self, ResolvedUser, SpecError, SpecInput, StagedMount};
use super::user::{UserRequest, resolve_in_root};
use super::{Runtime, ids, mounts, now_ns, podfiles, remove_tree};
use crate::metadata::Table;

/// After the stop signal's grace, SIGKILL; this is how long the kill may take to show.
const KILL_WAIT: Duration = Duration::from_secs(10);

fn stop_signal(image_config: &serde_json::Value) -> Signal {
    let raw = image_config
        .pointer("/config/StopSignal")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    parse_signal(raw).unwrap_or(Signal::SIGTERM)
}

fn parse_signal(raw: &str) -> Option<Signal> {
    if raw.is_empty() {
        return None;
    }
    if let Ok(n) = raw.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = raw.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).ok()
}

fn open_log(path: &Path) -> Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            RuntimeError::internal(format!("creating log directory {}: {e}", parent.display()))
        })?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| RuntimeError::internal(format!("opening log {}: {e}", path.display())))
}

/// The kubelet gives a directory per pod and a path per container relative to it.
fn log_path(sandbox: &PodSandboxConfig, config: &ContainerConfig) -> Result<String> {
    if config.log_path.is_empty() || sandbox.log_directory.is_empty() {
        return Ok(String::new());
    }
    let rel = Path::new(&config.log_path);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(RuntimeError::invalid(format!(
            "log path {:?} must be relative to the pod's log directory without '..'",
            config.log_path
        )));
    }
    Ok(Path::new(&sandbox.log_directory)
        .join(rel)
        .display()
        .to_string())
}

fn user_request(config: &ContainerConfig, image_config: &serde_json::Value) -> UserRequest {
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    UserRequest {
        run_as_user: sc
            .and_then(|s| s.run_as_user.as_ref())
            .and_then(|v| u32::try_from(v.value).ok()),
        run_as_username: sc
            .map(|s| s.run_as_username.clone())
            .filter(|s| !s.is_empty()),
        run_as_group: sc
            .and_then(|s| s.run_as_group.as_ref())
            .and_then(|v| u32::try_from(v.value).ok()),
        supplemental_groups: sc
            .map(|s| {
                s.supplemental_groups
                    .iter()
                    .filter_map(|g| u32::try_from(*g).ok())
                    .collect()
            })
            .unwrap_or_default(),
        groups_policy: sc.map_or(0, |s| s.supplemental_groups_policy),
        image_user: image_config
            .pointer("/config/User")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
    }
}

impl Runtime {
    pub async fn create_container(
        &self,
        pod_query: &str,
        config: ContainerConfig,
        sandbox: Option<PodSandboxConfig>,
    ) -> Result<String> {
        let pod = self.find_pod(pod_query)?;
        let meta = config
            .metadata
            .clone()
            .filter(|m| !m.name.is_empty())
            .ok_or_else(|| RuntimeError::invalid("container config has no metadata name"))?;
        if pod.state != PodState::Ready {
            return Err(RuntimeError::precondition(format!(
                "pod sandbox {} is not ready; cannot create container {}",
                pod.id, meta.name
            )));
        }
        // Before anything is made: a request that cannot name its user is refused whole.
        user_request(&config, &serde_json::Value::Null)
            .check()
            .map_err(|e| RuntimeError::invalid(e.to_string()))?;
        super::namespaces::check_container(
            super::namespaces::of_pod(&pod.config).unwrap_or_default(),
            config
                .linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .and_then(|s| s.namespace_options.as_ref()),
        )?;
        // Before anything is made: a device that is not on the node refuses the request.
        let cri_devices = config.devices.clone();
        let devices = Self::blocking(move || super::devices::resolve_all(&cri_devices)).await?;
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(RuntimeError::invalid("container config names no image"));
        }
        let image = self.images.get(&image_name)?.ok_or_else(|| {
            RuntimeError::not_found(format!("image {image_name:?} not found; pull it first"))
        })?;
        let sandbox = sandbox.unwrap_or_else(|| pod.config.clone());
        let log = log_path(&sandbox, &config)?;

        let id = ids::new_id();
        let key = ContainerRecord::key(&pod.id, &config);
        let mut record = ContainerRecord {
            id: id.clone(),
            pod_id: pod.id.clone(),
            config: config.clone(),
            image_id: image.id.clone(),
            image_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            created_at_ns: now_ns(),
            log_path: log,
            mounts: vec![],
            stop_signal: stop_signal(&image.config) as i32,
            user: None,
            creating: true,
        };
        self.metadata
            .put(Table::Containers, &id, Some(&key), &record)
            .map_err(|e| match RuntimeError::from(e) {
                e if e.code == tonic::Code::AlreadyExists => RuntimeError::already_exists(format!(
                    "container {} (attempt {}) already exists in pod {}",
                    meta.name, meta.attempt, pod.id
                )),
                e => e,
            })?;
        let lock = self.pod_lock(&pod.id);
        let _guard = lock.read().await;
        match self
            .set_up_container(&pod, &mut record, &image, &devices)
            .await
        {
            Ok(()) => {
                record.creating = false;
                self.metadata
                    .put(Table::Containers, &id, Some(&key), &record)?;
                tracing::info!(container = %meta.name, id = %id, pod = %pod.id, "container created");
                Ok(id)
            }
            Err(e) => {
                self.remove_container_files(&record).await;
                let _ = self.metadata.delete(Table::Containers, &id);
                Err(e)
            }
        }
    }

    async fn set_up_container(
        &self,
        pod: &PodRecord,
        record: &mut ContainerRecord,
        image: &imageservice::record::ImageRecord,
        devices: &[super::devices::ResolvedDevice],
    ) -> Result<()> {
        let ctr_dir = self.ctr_dir(&pod.id, &record.id);
        let rootfs = ctr_dir.join("rootfs");
        let store = self.images.store().clone();
        let top = image
            .top_chain_id()
            .map(layerfs::Digest::parse)
            .transpose()
            .map_err(|e| {
                RuntimeError::internal(format!("image {}: bad layer id: {e}", image.id))
            })?;
        let id = record.id.clone();
        let cri_mounts = record.config.mounts.clone();
        // A pod in its own user namespace: the container's files and volumes must show its
        // ID map (the pod's config was checked at RunPodSandbox).
        let idmap = super::namespaces::user_namespace(&pod.config)
            .unwrap_or_default()
            .map(|m| super::namespaces::rootfs_idmap(&m));
        let ctr_dir_owned = ctr_dir.clone();
        let userns = idmap.is_some();
        let device_nodes: Vec<super::devices::HostDevice> =
            devices.iter().flat_map(|d| d.nodes.clone()).collect();
        let (prepared, device_binds) = Self::blocking(move || {
            // The mounts first: they are checked, and cost nothing to drop.
            let prepared = mounts::prepare(&cri_mounts)?;
            let mut device_binds = Vec::new();
            if let Some(map) = &idmap {
                mounts::idmap_all(&prepared, map)?;
                device_binds = super::devices::bind_trees(&device_nodes, map)?;
            }
            std::fs::create_dir_all(&rootfs).map_err(|e| {
                RuntimeError::internal(format!("creating {}: {e}", rootfs.display()))
            })?;
            if let Some(map) = &idmap {
                // podinit, the CT's root, writes the container's status there.
                let (uid, gid) = map.root();
                std::os::unix::fs::chown(&ctr_dir_owned, Some(uid), Some(gid)).map_err(|e| {
                    RuntimeError::internal(format!("chown {}: {e}", ctr_dir_owned.display()))
                })?;
            }
            store.create_rootfs(
                &id,
                top.as_ref(),
                &rootfs,
                &layerfs::RootfsOptions {
                    quota_bytes: None,
                    idmap,
                },
            )?;
            Ok((prepared, device_binds))
        })
        .await?;
        let (records, mut trees): (Vec<_>, Vec<_>) =
            prepared.into_iter().map(|p| (p.record, p.tree)).unzip();
        record.mounts = records;
        // Device nodes bound in a user-namespace pod are passed after the volumes, but are no
        // volumes of the container's status.
        let (device_records, device_trees): (Vec<_>, Vec<_>) =
            device_binds.into_iter().map(|p| (p.record, p.tree)).unzip();
        trees.extend(device_trees);

        let rootfs = ctr_dir.join("rootfs");
        let ureq = user_request(&record.config, &image.config);
        let user: ResolvedUser = Self::blocking(move || {
            resolve_in_root(&rootfs, &ureq).map_err(|e| RuntimeError::invalid(e.to_string()))
        })
        .await?;
        record.user = Some(user.clone());
        let hostname = super::pods::pod_hostname(&pod.config);
        let pod_caps = self.pod_capabilities(&pod.id).await?;
        let privileged = record
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged);
        // A user-namespace pod cannot make the node's devices (mknod), and passes no
        // hundreds of nodes as mounts: its privileged containers get the CT's /dev only.
        let host_devices = if privileged && !userns {
            Self::blocking(super::devices::host_devices).await?
        } else {
            Vec::new()
        };
        let mut oci = spec::build(SpecInput {
            container_id: &record.id,
            config: &record.config,
            image_config: &image.config,
            hostname: &hostname,
            user,
            mounts: record
                .mounts
                .iter()
                .chain(&device_records)
                .map(|m| StagedMount {
                    host_path: m.host_path.clone(),
                    container_path: m.container_path.clone(),
                    readonly: m.readonly,
                    recursive_read_only: m.recursive_read_only,
                    propagation: k8s_cri::v1::MountPropagation::try_from(m.propagation)
                        .unwrap_or(k8s_cri::v1::MountPropagation::PropagationPrivate),
                })
                .collect(),
            pod_files: podfiles::POD_FILES,
            pod_caps: &pod_caps,
            devices,
            host_devices: &host_devices,
            devices_as_mounts: userns,
        })
        .map_err(|e| match e {
            SpecError::SeccompProfile(
                e @ super::seccomp_profile::ProfileError::Unreadable { .. },
            ) => RuntimeError::precondition(e.to_string()),
            e => RuntimeError::invalid(e.to_string()),
        })?;
        let mut annotations = oci.annotations().clone().unwrap_or_default();
        annotations.insert(
            podinit::api::STOP_SIGNAL_ANNOTATION.to_string(),
            record.stop_signal.to_string(),
        );
        // Attach writes to a stdin pipe (or the terminal) only when the container asked for
        // one; set either way, so that a pod's own annotations cannot decide it.
        annotations.insert(
            podinit::api::STDIN_ANNOTATION.to_string(),
            record.config.stdin.to_string(),
        );
        annotations.insert(
            podinit::api::STDIN_ONCE_ANNOTATION.to_string(),
            record.config.stdin_once.to_string(),
        );
        oci.set_annotations(Some(annotations));
        let device_rules = oci
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.devices().clone())
            .unwrap_or_default();
        let config_path = ctr_dir.join(podinit::api::CONFIG_FILE);
        let log_path = record.log_path.clone();
        let log = Self::blocking(move || {
            let json = serde_json::to_vec_pretty(&oci)
                .map_err(|e| RuntimeError::internal(format!("encoding the spec: {e}")))?;
            std::fs::write(&config_path, json).map_err(|e| {
                RuntimeError::internal(format!("writing {}: {e}", config_path.display()))
            })?;
            if log_path.is_empty() {
                Ok(None)
            } else {
                open_log(Path::new(&log_path)).map(Some)
            }
        })
        .await?;
        let id = record.id.clone();
        if trees.len() > podinit::sys::MAX_FDS - 1 {
            return Err(RuntimeError::invalid(format!(
                "{} mounts; a container takes at most {}",
                trees.len(),
                podinit::sys::MAX_FDS - 1
            )));
        }
        self.podinit(&pod.id, move |c| {
            let trees: Vec<_> = trees.iter().map(|t| t.as_fd()).collect();
            c.create_with_mounts(&id, log.as_ref().map(|f| f.as_fd()), &trees)
        })
        .await
        .map_err(|e| e.context("podinit create"))?;
        if userns
            && let Err(e) = self
                .confine_devices(&pod.id, &record.id, device_rules)
                .await
        {
            let id = record.id.clone();
            let _ = self.podinit(&pod.id, move |c| c.delete(&id)).await;
            return Err(e);
        }
        Ok(())
    }

    /// Applies a container's device rules to the cgroup podinit made for it, from the host:
    /// podinit in a pod with its own user namespace may not.
    async fn confine_devices(
        &self,
        pod_id: &str,
        id: &str,
        rules: Vec<oci_spec::runtime::LinuxDeviceCgroup>,
    ) -> Result<()> {
        let init_pid = match self.pod_host.status(pod_id).await {
            Ok(pve::CtStatus::Running { init_pid }) => init_pid,
            other => {
                return Err(RuntimeError::precondition(format!(
                    "pod {pod_id} is not running ({other:?}): cannot confine the devices of \
                     container {id}"
                )));
            }
        };
        let id = id.to_string();
        Self::blocking(move || {
            let cg = crate::stats::cgroup::Cgroup::of_pod(init_pid)
                .map_err(|e| RuntimeError::internal(format!("finding the pod's cgroup: {e}")))?
                .container(&id);
            if !cg.exists() {
                return Err(RuntimeError::internal(format!(
                    "container {id} has no cgroup after create"
                )));
            }
            super::devices::apply_from_host(&cg, &rules)
        })
        .await
    }

    /// The capabilities the pod's CT can give its containers, as its podinit reports them.
    async fn pod_capabilities(&self, pod_id: &str) -> Result<HashSet<Capability>> {
        let info = self
            .podinit(pod_id, |c| c.info())
            .await
            .map_err(|e| e.context("asking podinit for the pod's capabilities"))?;
        let mask = info.capabilities.ok_or_else(|| {
            RuntimeError::precondition(format!(
                "podinit {} of pod {pod_id} does not report its capabilities; restart the pod \
                 with this daemon's podinit",
                info.version
            ))
        })?;
        Ok(podinit::caps::set_of(mask))
    }

    /// Unmounts and deletes everything a container has on disk; used on removal and to undo
    /// a failed create. Tolerates what is already gone.
    pub(crate) async fn remove_container_files(&self, record: &ContainerRecord) {
        let ctr_dir = self.ctr_dir(&record.pod_id, &record.id);
        let store = self.images.store().clone();
        let (id, staged) = (record.id.clone(), record.mounts.clone());
        let _ = Self::blocking(move || {
            mounts::unstage(&ctr_dir, &staged);
            if let Err(e) = store.remove_rootfs(&id) {
                tracing::warn!(container = %id, error = %e, "removing rootfs");
            }
            remove_tree(&ctr_dir);
            Ok(())
        })
        .await;
    }

    pub async fn start_container(&self, query: &str) -> Result<()> {
        let record = self.find_container(query)?;
        let pod = self.find_pod(&record.pod_id)?;
        let lock = self.pod_lock(&pod.id);
        let _pod = lock.read().await;
        let clock = self.ctr_lock(&record.id);
        let _ctr = clock.lock().await;
        if pod.state != PodState::Ready {
            return Err(RuntimeError::precondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        let id = record.id.clone();
        self.podinit(&pod.id, move |c| c.start(&id))
            .await
            .map_err(|e| e.context("starting container"))?;
        Ok(())
    }

    /// The stop signal, `timeout` of grace, then SIGKILL. Succeeds for a container already
    /// stopped or gone.
    pub async fn stop_container(&self, query: &str, timeout: Duration) -> Result<()> {
        let record = match self.find_container(query) {
            Ok(r) => r,
            Err(e) if e.code == tonic::Code::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let clock = self.ctr_lock(&record.id);
        let _ctr = clock.lock().await;
        let status = self.observed_status(&record).await;
        if status.state != ContainerState::Running {
            return Ok(());
        }
        let (pod_id, id) = (record.pod_id.clone(), record.id.clone());
        let sig = record.stop_signal;
        if !timeout.is_zero() {
            let cid = id.clone();
            self.podinit(&pod_id, move |c| c.kill(&cid, sig))
                .await
                .or_else(ignore_gone)?;
            let cid = id.clone();
            let st = self.podinit(&pod_id, move |c| c.wait(&cid, timeout)).await;
            if matches!(st, Ok(ref s) if s.state == ContainerState::Exited) {
                return Ok(());
            }
        }
        self.kill_container_now(&pod_id, &id).await
    }

    /// SIGKILL and wait for the exit to be recorded.
    pub(crate) async fn kill_container_now(&self, pod_id: &str, id: &str) -> Result<()> {
        let cid = id.to_string();
        self.podinit(pod_id, move |c| c.kill(&cid, Signal::SIGKILL as i32))
            .await
            .or_else(|e| match e.code {
                // Not running (exited, or never started): nothing to kill.
                tonic::Code::FailedPrecondition => Ok(()),
                _ => ignore_gone(e),
            })?;
        let cid = id.to_string();
        match self.podinit(pod_id, move |c| c.wait(&cid, KILL_WAIT)).await {
            Ok(s) if s.state != ContainerState::Running => Ok(()),
            Ok(_) => Err(RuntimeError::internal(format!(
                "container {id} did not die within {}s of SIGKILL",
                KILL_WAIT.as_secs()
            ))),
            Err(e) => ignore_gone(e),
        }
    }

    /// Removes a container, stopping it first. Succeeds for one already gone.
    pub async fn remove_container(&self, query: &str) -> Result<()> {
        let record = match self.find_container(query) {
            Ok(r) => r,
            Err(e) if e.code == tonic::Code::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let lock = self.pod_lock(&record.pod_id);
        let _pod = lock.read().await;
        let clock = self.ctr_lock(&record.id);
        let _ctr = clock.lock().await;
        if self.observed_status(&record).await.state == ContainerState::Running {
            self.kill_container_now(&record.pod_id, &record.id).await?;
        }
        let id = record.id.clone();
        self.podinit(&record.pod_id, move |c| c.delete(&id))
            .await
            .or_else(ignore_gone)?;
        self.remove_container_files(&record).await;
        self.metadata.delete(Table::Containers, &record.id)?;
        self.forget_ctr_lock(&record.id);
        if self.images.get(&record.image_id)?.is_none() {
            // Its image went while it ran; its layers may be free now.
            if let Err(e) = self.images.collect_garbage().await {
                tracing::warn!(error = %e, "collecting layers after container removal");
            }
        }
        tracing::info!(id = %record.id, "container removed");
        Ok(())
    }

    /// The container's state as podinit knows it, or as its status file says when podinit
    /// is gone with the CT.
    pub async fn observed_status(&self, record: &ContainerRecord) -> ContainerStatus {
        let id = record.id.clone();
        match self.podinit(&record.pod_id, move |c| c.state(&id)).await {
            Ok(s) => return s,
            Err(e) if e.code == tonic::Code::NotFound => {}
            Err(e) => {
                tracing::debug!(container = %record.id, error = %e, "podinit unreachable; reading status file")
            }
        }
        let pod_dir = self.pod_dir(&record.pod_id);
        let id = record.id.clone();
        let created = record.created_at_ns;
        let file = tokio::task::spawn_blocking(move || podinit::status::read_status(&pod_dir, &id))
            .await
            .ok()
            .and_then(|r| r.ok());
        match file {
            Some(mut s) if s.state == ContainerState::Running => {
                // podinit is gone, so is the process; its exit status is unknown.
                s.state = ContainerState::Exited;
                s.exit_code = Some(255);
                s.lost = true;
                if s.finished_ns == 0 {
                    s.finished_ns = now_ns();
                }
                s
            }
            Some(s) => s,
            None => ContainerStatus::new_created(&record.id, created),
        }
    }

    pub async fn exec_sync(
        &self,
        query: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecResult> {
        let record = self.find_container(query)?;
        if cmd.is_empty() {
            return Err(RuntimeError::invalid("exec needs a command"));
        }
        let status = self.observed_status(&record).await;
        if status.state != ContainerState::Running {
            return Err(RuntimeError::precondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        let req = ExecRequest {
            id: record.id.clone(),
            args: cmd,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            ..Default::default()
        };
        // The podinit client's own timeout must outlast the command's.
        let client_timeout = if timeout.is_zero() {
            Duration::from_secs(24 * 3600)
        } else {
            timeout + Duration::from_secs(30)
        };
        let pod_dir = self.pod_dir(&record.pod_id);
        let result = tokio::task::spawn_blocking(move || {
            podinit::client::Client::for_pod_dir(&pod_dir)
                .with_timeout(client_timeout)
                .exec(&req)
        })
        .await
        .map_err(|e| RuntimeError::internal(format!("exec task: {e}")))?
        .map_err(RuntimeError::from)?;
        Ok(result)
    }

    pub async fn reopen_container_log(&self, query: &str) -> Result<()> {
        let record = self.find_container(query)?;
        let status = self.observed_status(&record).await;
        if status.state != ContainerState::Running {
            return Err(RuntimeError::precondition(format!(
                "container {} is not running; its log cannot be reopened",
                record.id
            )));
        }
        if record.log_path.is_empty() {
            return Err(RuntimeError::precondition(format!(
                "container {} has no log path",
                record.id
            )));
        }
        let path = PathBuf::from(&record.log_path);
        let file = Self::blocking(move || open_log(&path)).await?;
        let id = record.id.clone();
        self.podinit(&record.pod_id, move |c| c.reopen_log(&id, file.as_fd()))
            .await?;
        Ok(())
    }
}

/// podinit or the container being gone means there is nothing left to stop or delete.
fn ignore_gone(e: RuntimeError) -> Result<()> {
    match e.code {
        tonic::Code::NotFound | tonic::Code::Unavailable => Ok(()),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stop_signals() {
        assert_eq!(
            stop_signal(&json!({"config": {"StopSignal": "SIGQUIT"}})),
            Signal::SIGQUIT
        );
        assert_eq!(
            stop_signal(&json!({"config": {"StopSignal": "usr1"}})),
            Signal::SIGUSR1
        );
        assert_eq!(
            stop_signal(&json!({"config": {"StopSignal": "9"}})),
            Signal::SIGKILL
        );
        assert_eq!(stop_signal(&json!({"config": {}})), Signal::SIGTERM);
        assert_eq!(
            stop_signal(&json!({"config": {"StopSignal": "NOPE"}})),
            Signal::SIGTERM
        );
    }

    #[test]
    fn log_paths() {
        let sb = PodSandboxConfig {
            log_directory: "/var/log/pods/ns_p_u".into(),
            ..Default::default()
        };
        let c = ContainerConfig {
            log_path: "web/0.log".into(),
            ..Default::default()
        };
        assert_eq!(log_path(&sb, &c).unwrap(), "/var/log/pods/ns_p_u/web/0.log");
        let c = ContainerConfig {
            log_path: "../../etc/x".into(),
            ..Default::default()
        };
        assert_eq!(
            log_path(&sb, &c).unwrap_err().code,
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            log_path(&PodSandboxConfig::default(), &ContainerConfig::default()).unwrap(),
            ""
        );
    }
}
