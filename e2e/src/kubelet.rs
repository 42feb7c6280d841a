//! A real kubelet (k8s-tools, v1.32) in standalone mode for one test: static pods from a
//! manifest directory, no API server, the runtime under test as its CRI endpoint.
//!
//! The kubelet touches machine-wide things, so a [`Kubelet`] holds the kubelet lock while it
//! lives and puts everything back when it ends:
//! * host sysctls it rewrites (`vm.overcommit_memory`, `kernel.panic`, ...): saved at start,
//!   restored at the end;
//! * its pod cgroups: the kubelet gets a `cgroupRoot` of its own (`/pvecri-kubelet-<hex>`), so
//!   `kubepods` and everything below it is removed with that one tree;
//! * its root directory (volume mounts) and pod logs: under a temporary directory, unmounted
//!   and removed;
//! * what it writes outside its root directory whatever the flags say:
//!   `/var/log/containers/*.log` symlinks to its pod logs, and
//!   `/var/lib/kubelet/device-plugins/kubelet.sock`;
//! * the pods it ran: removed through the CRI, so that the runtime's CTs, mounts and cgroups
//!   go too.
//!
//! Ports (kubelet API, read-only, healthz) are free loopback ports picked at start.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::cmd::{require_program, run};
use crate::k8s_tools;
use crate::lock::FileLock;
use crate::mounts::unmount_under;

/// A real kubelet or `./cluster` changes host sysctls and uses fixed paths: one at a time.
pub const KUBELET_LOCK: &str = "/var/tmp/pvecri-kubelet.lock";
/// The sysctls the kubelet sets at start (`setupKernelTunables`, protectKernelDefaults off).
pub const SYSCTLS: [&str; 6] = [
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
];
/// Where the kubelet links container logs, whatever its `podLogsDir` (hard-coded upstream).
const CONTAINER_LOG_LINKS: &str = "/var/log/containers";
/// The device manager's socket directory, hard-coded upstream as well.
const VAR_LIB_KUBELET: &str = "/var/lib/kubelet";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the test wants from the kubelet besides the defaults here.
#[derive(Debug, Clone, Default)]
pub struct KubeletOptions {
    /// The runtime's socket (both CRI services).
    pub runtime_socket: PathBuf,
    /// Fields merged into the KubeletConfiguration (top level), e.g. `containerLogMaxSize`.
    pub config: serde_json::Map<String, Value>,
}

pub struct Kubelet {
    child: Option<Child>,
    dir: Option<TempDir>,
    pub node_name: String,
    pub manifests: PathBuf,
    pub pod_logs: PathBuf,
    pub root_dir: PathBuf,
    pub log_path: PathBuf,
    pub port: u16,
    pub read_only_port: u16,
    pub healthz_port: u16,
    /// The kubelet's cgroup root, relative to the hierarchy roots (no leading `/`).
    pub cgroup_root: String,
    socket: PathBuf,
    binary: PathBuf,
    config_path: PathBuf,
    cgroup_roots: Vec<PathBuf>,
    sysctls: Vec<(String, String)>,
    var_lib_kubelet_existed: bool,
    container_log_links_existed: bool,
    stopped: bool,
    _lock: FileLock,
}

impl Kubelet {
    /// Takes the kubelet lock (waiting for other kubelets to end), then starts the kubelet and
    /// waits until its healthz answers. Blocking: call it from `spawn_blocking`.
    pub fn start(options: KubeletOptions) -> anyhow::Result<Kubelet> {
        anyhow::ensure!(
            nix::unistd::geteuid().is_root(),
            "a kubelet needs root (cgroups, sysctls, mounts)"
        );
        require_program("/usr/bin/curl", "curl")?;
        let binary = k8s_tools::tool("kubelet")?;
        let lock = FileLock::exclusive(Path::new(KUBELET_LOCK))?;
        let dir = tempfile::Builder::new()
            .prefix("pvecri-kubelet-")
            .tempdir()?;
        let suffix = format!("{:08x}", rand::random::<u32>());
        let hierarchies = pve::cgroup::Hierarchies::detect()?;
        let mut kubelet = Kubelet {
            child: None,
            node_name: format!("pvecri-e2e-{suffix}"),
            manifests: dir.path().join("manifests"),
            pod_logs: dir.path().join("pod-logs"),
            root_dir: dir.path().join("root"),
            log_path: dir.path().join("kubelet.log"),
            port: free_port()?,
            read_only_port: free_port()?,
            healthz_port: free_port()?,
            cgroup_root: format!("pvecri-kubelet-{suffix}"),
            socket: options.runtime_socket.clone(),
            binary: PathBuf::new(),
            config_path: PathBuf::new(),
            cgroup_roots: hierarchies.roots.clone(),
            sysctls: save_sysctls()?,
            var_lib_kubelet_existed: Path::new(VAR_LIB_KUBELET).exists(),
            container_log_links_existed: Path::new(CONTAINER_LOG_LINKS).exists(),
            stopped: false,
            dir: Some(dir),
            _lock: lock,
        };
        // From here on, Drop puts back whatever was changed.
        std::fs::create_dir_all(&kubelet.manifests)?;
        std::fs::create_dir_all(&kubelet.pod_logs)?;
        std::fs::create_dir_all(&kubelet.root_dir)?;
        // The kubelet wants its cgroup root to exist in every hierarchy.
        for root in &kubelet.cgroup_roots {
            let dir = root.join(&kubelet.cgroup_root);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating the kubelet's cgroup root {}", dir.display()))?;
        }
        let config_path = kubelet
            .dir
            .as_ref()
            .map(|d| d.path().join("config.json"))
            .context("no directory")?;
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&kubelet.config(&options))?,
        )?;
        kubelet.binary = binary;
        kubelet.config_path = config_path;
        kubelet.spawn()?;
        Ok(kubelet)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        // Appending keeps the log of an earlier run (before a restart).
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(&self.binary)
            .arg(format!("--config={}", self.config_path.display()))
            .arg(format!("--root-dir={}", self.root_dir.display()))
            .arg(format!(
                "--cert-dir={}",
                self.root_dir.join("pki").display()
            ))
            .arg(format!("--hostname-override={}", self.node_name))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        self.wait_healthy()
    }

    /// Stops the kubelet (SIGTERM) and starts it again on the same root directory, as a node
    /// agent upgrade does: the pods keep running. Blocking.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
        self.spawn()
    }

    fn config(&self, options: &KubeletOptions) -> Value {
        let endpoint = format!("unix://{}", options.runtime_socket.display());
        let mut config = json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "containerRuntimeEndpoint": endpoint,
            "imageServiceEndpoint": endpoint,
            "address": "127.0.0.1",
            "port": self.port,
            "readOnlyPort": self.read_only_port,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.healthz_port,
            "authentication": {
                "anonymous": { "enabled": true },
                "webhook": { "enabled": false },
            },
            "authorization": { "mode": "AlwaysAllow" },
            "staticPodPath": self.manifests,
            "fileCheckFrequency": "1s",
            "syncFrequency": "5s",
            "podLogsDir": self.pod_logs,
            "cgroupDriver": "cgroupfs",
            "cgroupsPerQOS": true,
            "cgroupRoot": format!("/{}", self.cgroup_root),
            "enforceNodeAllocatable": [],
            "failSwapOn": false,
            "failCgroupV1": false,
            // This VM refuses a negative oom_score_adj.
            "oomScoreAdj": 0,
            // Leave the shared host's iptables alone.
            "makeIPTablesUtilChains": false,
            "serializeImagePulls": false,
            "resolvConf": "/etc/resolv.conf",
            // A busy shared disk must not make the kubelet evict the test's pods or images.
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "logging": { "format": "text", "verbosity": 2 },
        });
        if let Some(map) = config.as_object_mut() {
            for (k, v) in &options.config {
                map.insert(k.clone(), v.clone());
            }
        }
        config
    }

    fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.healthz_port));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "the kubelet exited during start-up ({status}); its log:\n{}",
                    self.log_tail(60)
                );
            }
            if let Ok((200, body)) = http_get(addr, "/healthz", Duration::from_secs(2))
                && body.trim() == "ok"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the kubelet's healthz did not answer ok within {START_TIMEOUT:?}; its log:\n{}",
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The host sysctls as they were before the kubelet started (restored at the end).
    pub fn saved_sysctls(&self) -> &[(String, String)] {
        &self.sysctls
    }

    /// The last `lines` lines of the kubelet's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The kubelet's whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A static pod's name as the kubelet reports it (`<name>-<node>`).
    pub fn pod_name(&self, name: &str) -> String {
        format!("{name}-{}", self.node_name)
    }

    /// Writes (or replaces) the static pod manifest `name` (JSON is YAML to the kubelet). The
    /// file appears whole: written beside the directory, then renamed into it.
    pub fn add_pod(&self, name: &str, manifest: &Value) -> anyhow::Result<()> {
        let dir = self.dir.as_ref().context("no directory")?;
        let staged = dir.path().join(format!("{name}.json.new"));
        std::fs::write(&staged, serde_json::to_vec_pretty(manifest)?)?;
        std::fs::rename(&staged, self.manifests.join(format!("{name}.json")))?;
        Ok(())
    }

    /// Removes a static pod's manifest: the kubelet stops the pod as an API delete would.
    pub fn remove_pod(&self, name: &str) -> anyhow::Result<()> {
        std::fs::remove_file(self.manifests.join(format!("{name}.json")))
            .with_context(|| format!("removing the manifest of {name}"))
    }

    /// GET on the read-only port: (status, body).
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(
            SocketAddr::from(([127, 0, 0, 1], self.read_only_port)),
            path,
            Duration::from_secs(10),
        )
    }

    /// GET on the kubelet API port (HTTPS, self-signed, anonymous allowed): the endpoints the
    /// read-only port does not serve, such as `/containerLogs`.
    pub fn get_secure(&self, path: &str) -> anyhow::Result<String> {
        run(Command::new("/usr/bin/curl")
            .args(["-sSfk", "--max-time", "10"])
            .arg(format!("https://127.0.0.1:{}{path}", self.port)))
        .with_context(|| format!("GET {path} on the kubelet API port"))
    }

    /// The pods the kubelet runs (`/pods`), as JSON.
    pub fn pods(&self) -> anyhow::Result<Vec<Value>> {
        let (status, body) = self.get("/pods")?;
        if status != 200 {
            bail!("/pods answered {status}: {body}");
        }
        let list: Value = serde_json::from_str(&body).context("/pods is not JSON")?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// The pod `name` (a static pod's manifest name) from `/pods`.
    pub fn pod(&self, name: &str) -> anyhow::Result<Option<Value>> {
        let full = self.pod_name(name);
        Ok(self
            .pods()?
            .into_iter()
            .find(|p| p["metadata"]["name"] == full.as_str()))
    }

    /// Removes every manifest and waits until the kubelet has stopped every pod and removed
    /// their cgroups; then stops the kubelet, removes what is left through the CRI and puts
    /// the machine back. Errors name what could not be cleaned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.manifests) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pods = self.pods().map(|p| p.len()).unwrap_or(usize::MAX);
            let pod_cgroups = self.pod_cgroups();
            if pods == 0 && pod_cgroups.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                problems.push(format!(
                    "the kubelet did not finish its pods within 60 s of their manifests going: \
                     {pods} pod(s) in /pods, pod cgroups left: {pod_cgroups:?}"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if let Err(e) = self.cleanup().await {
            problems.push(format!("{e:#}"));
        }
        if !problems.is_empty() {
            bail!(
                "kubelet clean-up: {}\nkubelet log tail:\n{}",
                problems.join("\n"),
                self.log_tail(40)
            );
        }
        Ok(())
    }

    /// The `pod<uid>` cgroups under the kubelet's QoS classes (first hierarchy).
    pub fn pod_cgroups(&self) -> Vec<PathBuf> {
        let Some(root) = self.cgroup_roots.first() else {
            return Vec::new();
        };
        let kubepods = root.join(&self.cgroup_root).join("kubepods");
        let mut found = Vec::new();
        for class in [
            kubepods.join("burstable"),
            kubepods.join("besteffort"),
            kubepods,
        ] {
            if let Ok(entries) = std::fs::read_dir(&class) {
                found.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with("pod"))
                        .map(|e| e.path()),
                );
            }
        }
        found
    }

    async fn cleanup(&mut self) -> anyhow::Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let mut problems: Vec<String> = Vec::new();
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
        // The pods the kubelet left (exited sandboxes, or all of them after a failure).
        if self.socket.exists()
            && let Err(e) = crate::cri_client::remove_all_pods(&self.socket).await
        {
            problems.push(format!("removing pods through the CRI: {e:#}"));
        }
        problems.extend(self.put_back());
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("{}", problems.join("\n"))
        }
    }

    /// Everything but the pods: mounts, files, cgroups, sysctls. Returns what failed.
    fn put_back(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(dir) = self.dir.as_ref()
            && let Err(e) = unmount_under(dir.path(), |_| false)
        {
            problems.push(format!("unmounting under the kubelet's root: {e:#}"));
            // Removing the directory would delete through a mount: keep it.
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                problems.push(format!("left {} in place", kept.display()));
            }
        }
        if let Some(dir) = self.dir.as_ref()
            && let Ok(links) = std::fs::read_dir(CONTAINER_LOG_LINKS)
        {
            for link in links.flatten() {
                if std::fs::read_link(link.path()).is_ok_and(|t| t.starts_with(dir.path())) {
                    let _ = std::fs::remove_file(link.path());
                }
            }
        }
        if !self.container_log_links_existed {
            let _ = std::fs::remove_dir(CONTAINER_LOG_LINKS);
        }
        if !self.var_lib_kubelet_existed {
            let _ = std::fs::remove_dir_all(VAR_LIB_KUBELET);
        } else {
            let _ = std::fs::remove_file(
                Path::new(VAR_LIB_KUBELET).join("device-plugins/kubelet.sock"),
            );
        }
        if let Err(e) = pve::cgroup::remove_everywhere(&self.cgroup_roots, &self.cgroup_root) {
            problems.push(format!("removing the kubelet's cgroups: {e}"));
        }
        for (name, value) in &self.sysctls {
            if let Err(e) = std::fs::write(sysctl_path(name), value) {
                problems.push(format!("restoring {name} = {value}: {e}"));
            }
        }
        problems
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "---- kubelet log tail ({}) ----\n{}\n---- end of kubelet log ----",
                self.log_path.display(),
                self.log_tail(80)
            );
        }
        // Dropped inside the test's runtime, which cannot block: clean up from another thread.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                if let Err(e) = rt.block_on(self.cleanup()) {
                    eprintln!("e2e: kubelet clean-up: {e:#}");
                }
            });
        });
    }
}

fn sysctl_path(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name.replace('.', "/"))
}

fn save_sysctls() -> anyhow::Result<Vec<(String, String)>> {
    SYSCTLS
        .iter()
        .map(|name| {
            let value = std::fs::read_to_string(sysctl_path(name))
                .with_context(|| format!("reading sysctl {name}"))?;
            Ok((name.to_string(), value.trim().to_string()))
        })
        .collect()
}

/// The current values of the sysctls the kubelet changes.
pub fn current_sysctls() -> anyhow::Result<Vec<(String, String)>> {
    save_sysctls()
}

/// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
fn terminate(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A plain HTTP/1.0 GET: (status code, body). HTTP/1.0 keeps Go's servers from chunking.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the answer to GET {path} from {addr}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path} from {addr}: no end of headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET {path} from {addr}: bad status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_names_map_to_proc_sys() {
        assert_eq!(
            sysctl_path("kernel.keys.root_maxkeys"),
            PathBuf::from("/proc/sys/kernel/keys/root_maxkeys")
        );
    }

    #[test]
    fn http_get_reads_status_and_body() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /x HTTP/1.0\r\n"));
            s.write_all(b"HTTP/1.0 404 Not Found\r\nA: b\r\n\r\nnope")
                .unwrap();
        });
        let (status, body) = http_get(addr, "/x", Duration::from_secs(5)).unwrap();
        server.join().unwrap();
        assert_eq!((status, body.as_str()), (404, "nope"));
    }
}
