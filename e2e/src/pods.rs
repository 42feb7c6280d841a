//! Pods against the real daemon: a [`PodEnv`] is a daemon on one layer store (overlay, or
//! zfs on a scratch dataset of the test pool) with its own CNI network, a local registry
//! holding the test images, and a kubelet-style log directory; plus CRI request builders and
//! polling helpers the pod tests share.
//!
//! Drop removes every pod through the daemon, then destroys whatever CT is left in the
//! daemon's lxcpath, so a failing test does not leave CTs running.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ExecSyncResponse, ImageSpec, KeyValue,
    LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatus,
    PodSandboxStatusRequest, PullImageRequest, RunPodSandboxRequest, StartContainerRequest,
};
use tempfile::TempDir;

use crate::cni::{NetworkOptions, TestNetwork};
use crate::cri_client::RuntimeClient;
use crate::daemon::{Daemon, DaemonOptions};
use crate::images::{self, Compression, ImageFormat, TestImage};
use crate::pve::PveHarness;
use crate::registry::{Registry, RegistryOptions};
use crate::zfs::{ScratchDataset, TestPool};

/// Environment variable naming the static podinit binary to use.
pub const PODINIT_ENV: &str = "PVECRI_PODINIT";

/// Defines, for each async test function `name(setup: Setup)`, a module `name` with the
/// tests `overlay` and `zfs` (lxc driver), so that every pod test runs on both layer stores.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn overlay() {
                super::$name($crate::pods::Store::Overlay.into()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn zfs() {
                super::$name($crate::pods::Store::Zfs.into()).await
            }
        }
    )* };
}

/// Like [`on_both_stores`], for tests that need one store: `name::overlay` (lxc driver).
#[macro_export]
macro_rules! on_overlay {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn overlay() {
                super::$name($crate::pods::Store::Overlay.into()).await
            }
        }
    )* };
}

/// For each async test function `name(setup: Setup)`, the test `name::pve`: the same body
/// with the Proxmox driver against the pve-harness (overlay store).
#[macro_export]
macro_rules! on_pve {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pve() {
                super::$name($crate::pods::Setup::pve()).await
            }
        }
    )* };
}

/// The pod host a [`PodEnv`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Plain LXC under the daemon's state directory.
    Lxc,
    /// Proxmox CTs through the pve-harness (the daemon runs in its namespace).
    Pve,
}

/// Pod host and layer store of a [`PodEnv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    pub store: Store,
    pub driver: Driver,
}

impl Setup {
    /// The pve driver on the overlay store (zfs-fuse's mounts are not seen inside the
    /// harness's mount namespace).
    pub fn pve() -> Setup {
        Setup {
            store: Store::Overlay,
            driver: Driver::Pve,
        }
    }
}

impl From<Store> for Setup {
    fn from(store: Store) -> Setup {
        Setup {
            store,
            driver: Driver::Lxc,
        }
    }
}

/// The layer store a [`PodEnv`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Overlay,
    Zfs,
}

impl Store {
    pub fn label(self) -> &'static str {
        match self {
            Store::Overlay => "overlay",
            Store::Zfs => "zfs",
        }
    }
}

/// What a [`PodEnv`] gets besides the defaults.
#[derive(Debug, Clone, Default)]
pub struct PodEnvOptions {
    pub network: NetworkOptions,
    /// Top-level TOML keys added to the daemon's config.
    pub config_top: String,
    /// Daemon log level; default `debug`.
    pub log_level: Option<String>,
    /// `warm_pool` of the pod host.
    pub warm_pool: usize,
    /// pve driver: the API URL the daemon uses (default: the harness's), e.g. a proxy.
    pub pve_api_url: Option<String>,
    /// pve driver: the token line (`ID=SECRET`) instead of the harness's Administrator token.
    pub pve_token: Option<String>,
}

/// Image references pushed to the env's registry (not yet pulled by the daemon).
#[derive(Debug, Clone)]
pub struct Images {
    /// `one-layer`: busybox, `Cmd ["sh"]`, root.
    pub one_layer: String,
    /// `multi-layer`: busybox plus `/data/keep.txt` and friends (see `images::multi_layer`).
    pub multi_layer: String,
    /// `config`: User 1000:1000, WorkingDir /home/app, Entrypoint `sh -c`, StopSignal.
    pub config: String,
    /// busybox with `StopSignal: SIGUSR1`.
    pub stop_signal: String,
    /// Never pushed: a name the registry does not hold.
    pub missing: String,
}

pub struct PodEnv {
    // Fields drop in order: the daemon (with its mounts) before the dataset and network.
    pub daemon: Daemon,
    pub registry: Registry,
    pub net: TestNetwork,
    pub store: Store,
    pub images: Images,
    /// The kubelet's `/var/log/pods` stand-in.
    pub log_root: TempDir,
    pub dataset: Option<ScratchDataset>,
    pub setup: Setup,
    /// pve driver: the harness (held until the env is gone) and the token file's directory.
    pub pve: Option<PveHarness>,
    pub pve_files: Option<TempDir>,
}

/// The static podinit: `$PVECRI_PODINIT`, else what `scripts/build-podinit` builds.
pub fn podinit_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(PODINIT_ENV) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("{PODINIT_ENV}={} does not name a file", p.display());
        }
        return Ok(p);
    }
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("/"))
        .join("target/podinit")
        .join(triple)
        .join("release/podinit");
    if !p.is_file() {
        bail!(
            "the static podinit is missing at {}: run scripts/build-podinit, or set {PODINIT_ENV}",
            p.display()
        );
    }
    Ok(p)
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// busybox whose image config names SIGUSR1 as its stop signal.
fn stop_signal_image() -> anyhow::Result<TestImage> {
    let config = serde_json::json!({
        "architecture": images::host_arch(),
        "os": "linux",
        "created": images::CREATED,
        "config": { "Env": [images::DEFAULT_PATH], "Cmd": ["sh"], "StopSignal": "SIGUSR1" },
    });
    TestImage::build(
        "stop-signal",
        ImageFormat::Oci(Compression::Gzip),
        config,
        &[images::busybox_layer()?],
    )
}

impl PodEnv {
    pub async fn start(setup: impl Into<Setup>) -> anyhow::Result<PodEnv> {
        Self::start_with(setup, PodEnvOptions::default()).await
    }

    pub async fn start_with(
        setup: impl Into<Setup>,
        options: PodEnvOptions,
    ) -> anyhow::Result<PodEnv> {
        let setup = setup.into();
        let store = setup.store;
        anyhow::ensure!(
            nix::unistd::geteuid().is_root(),
            "pod tests need root (LXC, mounts, network namespaces)"
        );
        anyhow::ensure!(
            setup.driver == Driver::Lxc || store == Store::Overlay,
            "the pve driver runs on the overlay store: zfs-fuse's mounts are not seen in the \
             pve-harness's mount namespace"
        );
        crate::cmd::require_program("/usr/bin/lxc-start", "lxc")?;
        let podinit = podinit_path()?;
        let net = TestNetwork::new(options.network)?;
        let registry = Registry::start(RegistryOptions::default())?;
        let dataset = match store {
            Store::Overlay => None,
            Store::Zfs => Some(TestPool::shared()?.scratch("pods")?),
        };
        let storage = match &dataset {
            None => "[storage]\ndriver = \"overlay\"\n".to_string(),
            Some(ds) => format!(
                "[storage]\ndriver = \"zfs\"\n[storage.zfs]\ndataset = {}\n",
                toml_str(&format!("{}/store", ds.name))
            ),
        };
        let mut config = format!(
            "podinit_path = {}\n{}\n{storage}\n{}",
            toml_str(&podinit.display().to_string()),
            options.config_top,
            net.daemon_config(),
        );
        let (pve, pve_files, namespace_of) = match setup.driver {
            Driver::Lxc => {
                config.push_str(&format!(
                    "\n[pod_host]\nwarm_pool = {}\n",
                    options.warm_pool
                ));
                (None, None, None)
            }
            Driver::Pve => {
                let harness = PveHarness::acquire()?;
                // A test's daemon must not see CTs that earlier runs of this range left.
                harness.destroy_range().await?;
                let files = tempfile::Builder::new().prefix("pvecri-pve-").tempdir()?;
                let line = match &options.pve_token {
                    Some(l) => l.clone(),
                    None => harness.token_line()?,
                };
                let token = harness.write_token_file(files.path(), &line)?;
                let url = match &options.pve_api_url {
                    Some(u) => u.clone(),
                    None => harness.api_base()?.to_string(),
                };
                config.push('\n');
                config.push_str(&harness.daemon_config(&token, &url, options.warm_pool));
                let ns = harness.ns_pid()?;
                (Some(harness), Some(files), Some(ns))
            }
        };
        let daemon = Daemon::start(DaemonOptions {
            config_toml_extra: config,
            log_level: options.log_level.unwrap_or_else(|| "debug".into()),
            namespace_of,
            ..DaemonOptions::default()
        })?;
        let images = push_images(&registry).await?;
        let log_root = tempfile::Builder::new().prefix("pvecri-logs-").tempdir()?;
        Ok(PodEnv {
            daemon,
            registry,
            net,
            store,
            images,
            log_root,
            dataset,
            setup,
            pve,
            pve_files,
        })
    }

    /// The daemon's warm pool counters (`Status` verbose info): `ready`, `taken`, `made`.
    pub async fn warm_pool(&self) -> anyhow::Result<serde_json::Value> {
        let mut rt = self.rt().await?;
        let info = rt
            .status(k8s_cri::v1::StatusRequest { verbose: true })
            .await
            .context("Status")?
            .into_inner()
            .info;
        let text = info
            .get("warmPool")
            .context("Status has no warmPool info")?;
        Ok(serde_json::from_str(text)?)
    }

    /// Waits until the warm pool holds `n` ready CTs.
    pub async fn wait_warm_ready(&self, n: u64, timeout: Duration) -> anyhow::Result<()> {
        eventually(&format!("{n} warm CT(s) ready"), timeout, || async move {
            let stats = self.warm_pool().await?;
            Ok((stats["ready"].as_u64().unwrap_or(0) >= n).then_some(()))
        })
        .await
    }

    /// The mount namespace of the "node" as the daemon sees it: the pve-harness's namespace
    /// holder for pve (`None`: the test's own).
    pub fn node_mount_ns(&self) -> Option<u32> {
        self.pve.as_ref().and_then(|h| h.ns_pid().ok())
    }

    /// A node path as this test reaches it: through the harness's namespace for pve (its
    /// `/dev/shm` and mounts made there are its own), as it is for lxc.
    pub fn node_path(&self, path: &Path) -> PathBuf {
        match self.node_mount_ns() {
            Some(pid) => PathBuf::from(format!("/proc/{pid}/root"))
                .join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_path_buf(),
        }
    }

    /// The hostname host-network pods get: the node's (the harness's node name for pve).
    pub fn node_hostname(&self) -> String {
        match &self.pve {
            Some(h) => h.node().unwrap_or_default().to_string(),
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
        }
    }

    pub async fn rt(&self) -> anyhow::Result<RuntimeClient> {
        self.daemon.runtime_client().await
    }

    /// Pulls through the daemon's ImageService.
    pub async fn pull(&self, image: &str) -> anyhow::Result<()> {
        let mut client = self.daemon.image_client().await?;
        client
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .with_context(|| format!("pulling {image}"))?;
        Ok(())
    }

    /// A pod config with a unique uid and a log directory under [`PodEnv::log_root`].
    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let uid = format!("{:016x}", rand::random::<u64>());
        let log_directory = self.log_root.path().join(format!("default_{name}_{uid}"));
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                namespace: "default".to_string(),
                uid,
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: log_directory.display().to_string(),
            labels: HashMap::from([("app".to_string(), name.to_string())]),
            linux: Some(LinuxPodSandboxConfig::default()),
            ..Default::default()
        }
    }

    /// RunPodSandbox; returns the pod ID.
    pub async fn run_pod(
        &self,
        rt: &mut RuntimeClient,
        config: &PodSandboxConfig,
    ) -> anyhow::Result<String> {
        Ok(rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .context("RunPodSandbox")?
            .into_inner()
            .pod_sandbox_id)
    }

    /// CreateContainer + StartContainer; returns the container ID.
    pub async fn run_container(
        &self,
        rt: &mut RuntimeClient,
        pod_id: &str,
        pod: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> anyhow::Result<String> {
        let id = self.create_container(rt, pod_id, pod, config).await?;
        rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .context("StartContainer")?;
        Ok(id)
    }

    pub async fn create_container(
        &self,
        rt: &mut RuntimeClient,
        pod_id: &str,
        pod: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> anyhow::Result<String> {
        Ok(rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.to_string(),
                config: Some(config),
                sandbox_config: Some(pod.clone()),
            })
            .await
            .context("CreateContainer")?
            .into_inner()
            .container_id)
    }

    /// The daemon's directory of a pod.
    pub fn pod_dir(&self, pod_id: &str) -> PathBuf {
        self.daemon.state_dir.join("pods").join(pod_id)
    }
}

impl Drop for PodEnv {
    fn drop(&mut self) {
        let socket = self.daemon.socket.clone();
        let lxcpath = self.daemon.state_dir.join("lxc");
        let running = self.daemon.pid().is_some();
        let daemon = &mut self.daemon;
        let harness = self.pve.as_ref();
        let mut rejected = Vec::new();
        // Dropped inside the test's runtime, which cannot block: clean up from another thread.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                // Every CT config pvecri wrote and still has must pass Proxmox's strict parser.
                if let Some(h) = harness
                    && let Ok(cts) = rt.block_on(h.our_cts())
                {
                    for ct in cts {
                        if let Err(e) = h.parse_conf(ct.vmid) {
                            rejected.push(format!("{e:#}"));
                        }
                    }
                }
                if running && let Err(e) = rt.block_on(crate::cri_client::remove_all_pods(&socket))
                {
                    eprintln!("e2e: removing pods at the end of the test: {e:#}");
                }
                if let Some(h) = harness {
                    // Stopped first: its warm pool must not make new CTs meanwhile.
                    if running && let Err(e) = daemon.stop() {
                        eprintln!("e2e: stopping the daemon: {e:#}");
                    }
                    match rt.block_on(h.destroy_range()) {
                        Ok(0) => {}
                        Ok(n) => {
                            eprintln!("e2e: destroyed {n} CTs left behind in the test's range")
                        }
                        Err(e) => eprintln!("e2e: destroying CTs left behind: {e:#}"),
                    }
                    return;
                }
                // Whatever the daemon did not remove (it failed, or it was not running).
                let Ok(driver) = pve::lxc::LxcDriver::new(pve::lxc::LxcOptions::new(lxcpath))
                else {
                    return;
                };
                use pve::PodHost;
                if let Ok(cts) = rt.block_on(driver.list()) {
                    for ct in cts {
                        eprintln!("e2e: destroying CT {} left behind", ct.id);
                        let _ = rt.block_on(driver.destroy(&ct.id));
                    }
                }
            });
        });
        if !rejected.is_empty() && !std::thread::panicking() {
            fail_test(&format!(
                "CT configs Proxmox rejects:\n{}",
                rejected.join("\n")
            ));
        }
    }
}

/// Fails the running test from a Drop, which has no other way to.
#[allow(clippy::panic)]
fn fail_test(message: &str) {
    panic!("{message}");
}

async fn push_images(registry: &Registry) -> anyhow::Result<Images> {
    let one = images::one_layer(ImageFormat::Oci(Compression::Gzip))?;
    one.push(registry, "one-layer", "latest").await?;
    let multi = images::multi_layer(ImageFormat::Oci(Compression::Gzip))?;
    multi.push(registry, "multi-layer", "latest").await?;
    let config = images::config_image()?;
    config.push(registry, "config", "latest").await?;
    let stop = stop_signal_image()?;
    stop.push(registry, "stop-signal", "latest").await?;
    let r = |repo: &str| format!("{}/{repo}:latest", registry.addr());
    Ok(Images {
        one_layer: r("one-layer"),
        multi_layer: r("multi-layer"),
        config: r("config"),
        stop_signal: r("stop-signal"),
        missing: r("not-pushed"),
    })
}

/// A container config: `image`, `command` (replacing the image's entrypoint), a log path
/// `<name>/0.log` relative to the pod's log directory.
pub fn container_config(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("name".to_string(), name.to_string())]),
        envs: vec![KeyValue {
            key: "PVECRI_TEST".into(),
            value: "1".into(),
        }],
        ..Default::default()
    }
}

/// `sh -c SCRIPT` as a container command.
pub fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

pub async fn container_status(rt: &mut RuntimeClient, id: &str) -> anyhow::Result<ContainerStatus> {
    rt.container_status(ContainerStatusRequest {
        container_id: id.to_string(),
        verbose: false,
    })
    .await
    .context("ContainerStatus")?
    .into_inner()
    .status
    .context("ContainerStatus without a status")
}

/// Polls ContainerStatus until the container is in `state`; fails after `timeout`.
pub async fn wait_container_state(
    rt: &mut RuntimeClient,
    id: &str,
    state: ContainerState,
    timeout: Duration,
) -> anyhow::Result<ContainerStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        let st = container_status(rt, id).await?;
        if st.state == state as i32 {
            return Ok(st);
        }
        if Instant::now() > deadline {
            bail!(
                "container {id} is not {state:?} after {timeout:?}: {:?} (exit {}, reason {:?}, message {:?})",
                ContainerState::try_from(st.state),
                st.exit_code,
                st.reason,
                st.message
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// ExecSync with a timeout in seconds.
pub async fn exec(
    rt: &mut RuntimeClient,
    id: &str,
    cmd: &[&str],
    timeout_secs: i64,
) -> Result<ExecSyncResponse, tonic::Status> {
    rt.exec_sync(ExecSyncRequest {
        container_id: id.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: timeout_secs,
    })
    .await
    .map(|r| r.into_inner())
}

/// ExecSync of `sh -c SCRIPT` that must exit 0; returns stdout.
pub async fn exec_ok(rt: &mut RuntimeClient, id: &str, script: &str) -> anyhow::Result<String> {
    let r = exec(rt, id, &["sh", "-c", script], 30)
        .await
        .with_context(|| format!("ExecSync {script:?}"))?;
    if r.exit_code != 0 {
        bail!(
            "ExecSync {script:?} exited {}: stdout {:?} stderr {:?}",
            r.exit_code,
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&r.stdout).into_owned())
}

pub async fn pod_status(rt: &mut RuntimeClient, pod_id: &str) -> anyhow::Result<PodSandboxStatus> {
    rt.pod_sandbox_status(PodSandboxStatusRequest {
        pod_sandbox_id: pod_id.to_string(),
        verbose: false,
    })
    .await
    .context("PodSandboxStatus")?
    .into_inner()
    .status
    .context("PodSandboxStatus without a status")
}

/// The pod's primary IP from PodSandboxStatus.
pub async fn pod_ip(rt: &mut RuntimeClient, pod_id: &str) -> anyhow::Result<String> {
    Ok(pod_status(rt, pod_id)
        .await?
        .network
        .map(|n| n.ip)
        .unwrap_or_default())
}

/// Polls `f` until it returns `Some`; fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not so after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One line of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: String,
    pub stream: String,
    /// `P` (partial) or `F` (full).
    pub tag: String,
    pub text: String,
}

/// Parses a CRI log (`<RFC3339Nano> <stdout|stderr> <P|F> <text>` per line); a line that
/// does not fit the format is an error naming it.
pub fn parse_cri_log(text: &str) -> anyhow::Result<Vec<LogLine>> {
    let mut out = Vec::new();
    for (n, line) in text.split_terminator('\n').enumerate() {
        let mut parts = line.splitn(4, ' ');
        let (Some(time), Some(stream), Some(tag), Some(body)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bail!("CRI log line {n} has too few fields: {line:?}");
        };
        let time_ok = time.len() >= 20
            && time.as_bytes()[4] == b'-'
            && time.as_bytes()[10] == b'T'
            && time.ends_with('Z')
            && time
                .bytes()
                .all(|b| b.is_ascii_digit() || b"-T:.Z".contains(&b));
        if !time_ok {
            bail!("CRI log line {n}: {time:?} is not an RFC 3339 UTC time");
        }
        if stream != "stdout" && stream != "stderr" {
            bail!("CRI log line {n}: bad stream {stream:?}");
        }
        if tag != "P" && tag != "F" {
            bail!("CRI log line {n}: bad tag {tag:?}");
        }
        out.push(LogLine {
            time: time.to_string(),
            stream: stream.to_string(),
            tag: tag.to_string(),
            text: body.to_string(),
        });
    }
    Ok(out)
}

/// Joins partial lines: the full lines of one stream as the container wrote them.
pub fn full_lines(lines: &[LogLine], stream: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for l in lines.iter().filter(|l| l.stream == stream) {
        cur.push_str(&l.text);
        if l.tag == "F" {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}
