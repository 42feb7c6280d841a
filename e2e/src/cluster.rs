//! A real single-node Kubernetes control plane (`../shared/k8s-tools/cluster`) for one test,
//! with this machine joined as a node whose kubelet runs on a runtime socket. It holds the
//! machine-wide kubelet lock (fixed ports, host sysctls) for its lifetime and keeps its
//! state in a directory of its own, which drop removes after `cluster down` and `clean`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cmd::{output, require_program, run};
use crate::k8s_tools;
use crate::lock::FileLock;

/// Held by every test that runs a real kubelet or `./cluster`.
pub const KUBELET_LOCK: &str = "/var/tmp/pvecri-kubelet.lock";
/// The clusters' state directories: `/var/tmp/pvecri-k8s-XXXXXX`.
const HOME_PREFIX: &str = "pvecri-k8s-";

pub struct Cluster {
    script: PathBuf,
    bin: PathBuf,
    home: PathBuf,
    pub kubeconfig: PathBuf,
    pub node: String,
    _lock: FileLock,
}

impl Cluster {
    /// Takes the kubelet lock and starts etcd, the apiserver, controller-manager and
    /// scheduler on loopback.
    pub fn up() -> anyhow::Result<Cluster> {
        require_program("/usr/bin/etcd", "etcd-server")?;
        require_program("/usr/bin/openssl", "openssl")?;
        require_program("/usr/bin/curl", "curl")?;
        let bin = k8s_tools::bin()?;
        let script = k8s_tools::k8s_tools_dir()?.join("cluster");
        let lock = FileLock::exclusive(Path::new(KUBELET_LOCK))?;
        remove_stale_homes(&script, &bin);
        let home = tempfile::Builder::new()
            .prefix(HOME_PREFIX)
            .tempdir_in("/var/tmp")?
            .keep();
        let node = hostname()?.to_lowercase();
        let cluster = Cluster {
            kubeconfig: home.join("admin.kubeconfig"),
            script,
            bin,
            home,
            node,
            _lock: lock,
        };
        cluster.script(&["up"]).context("./cluster up")?;
        Ok(cluster)
    }

    fn script(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new("bash")
            .arg(&self.script)
            .args(args)
            .env("K8S_HOME", &self.home)
            .env("K8S_BIN", &self.bin)
            .env("NODE_NAME", &self.node))
    }

    /// Joins this machine as the node, its kubelet on the runtime at `socket`, and waits
    /// until the node is Ready.
    pub fn start_kubelet(&self, socket: &Path) -> anyhow::Result<()> {
        self.script(&["start-kubelet", &format!("unix://{}", socket.display())])
            .context("./cluster start-kubelet")?;
        self.wait_for(
            &[
                "wait",
                "--for=condition=Ready",
                &format!("node/{}", self.node),
            ],
            Duration::from_secs(180),
        )
        .context("the node did not become Ready")
    }

    /// A directory of the test's own inside the cluster's state, removed with it (also when
    /// a killed test leaves it behind).
    pub fn scratch_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.home.join("scratch").join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// The apiserver's URL (loopback only: pods on the host network reach it there).
    pub fn api_url(&self) -> String {
        let port = std::env::var("APISERVER_PORT").unwrap_or_else(|_| "6443".into());
        format!("https://127.0.0.1:{port}")
    }

    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("helm"));
        cmd.env("KUBECONFIG", &self.kubeconfig)
            // helm keeps its caches and repository config under HOME.
            .env("HELM_CACHE_HOME", self.home.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.home.join("helm/config"))
            .env("HELM_DATA_HOME", self.home.join("helm/data"));
        cmd
    }

    /// `kubectl ARGS`, stdout.
    pub fn kubectl_run(&self, args: &[&str]) -> anyhow::Result<String> {
        run(self.kubectl().args(args))
    }

    /// Runs `kubectl wait ...` style commands again until they succeed or time runs out
    /// (a `kubectl wait` for an object that does not exist yet fails at once).
    pub fn wait_for(&self, args: &[&str], timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = output(self.kubectl().args(args).arg("--timeout=10s"))?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "kubectl {} did not succeed within {timeout:?}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The end of a component's log (`kubelet`, `kube-apiserver`, ...), for failures.
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.home.join("logs").join(format!("{component}.log")))
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        // Some kubelet lines carry a whole pod spec.
        all[all.len().saturating_sub(lines)..]
            .iter()
            .map(|l| l.chars().take(400).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- kubelet log (end) ---\n{}",
                self.log_tail("kubelet", 40)
            );
        }
        // `down` deletes this node's pods through the kubelet, stops everything, restores
        // the sysctls the kubelet changed and unmounts what is left; `clean` drops the state.
        if let Err(e) = self.script(&["down"]) {
            eprintln!("e2e: ./cluster down: {e:#}");
        }
        if let Err(e) = self.script(&["clean"]) {
            eprintln!("e2e: ./cluster clean: {e:#}");
        }
        if let Err(e) = std::fs::remove_dir_all(&self.home) {
            eprintln!("e2e: removing {}: {e}", self.home.display());
        }
    }
}

/// The state of clusters whose test was killed before it could clean up (nextest's timeout
/// kills without unwinding). With the kubelet lock held no other cluster runs, so every such
/// directory is stale: `down` stops what its PID files name, restores the sysctls its kubelet
/// changed and unmounts its volumes; then it goes.
fn remove_stale_homes(script: &Path, bin: &Path) {
    let Ok(entries) = std::fs::read_dir("/var/tmp") else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let home = entry.path();
        let is_home = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(HOME_PREFIX));
        if !is_home || !home.is_dir() {
            continue;
        }
        eprintln!("e2e: removing the stale cluster state {}", home.display());
        for verb in ["down", "clean"] {
            let _ = output(
                Command::new("bash")
                    .arg(script)
                    .arg(verb)
                    .env("K8S_HOME", &home)
                    .env("K8S_BIN", bin),
            );
        }
        if let Err(e) = std::fs::remove_dir_all(&home) {
            eprintln!("e2e: removing {}: {e}", home.display());
        }
    }
}

fn hostname() -> anyhow::Result<String> {
    nix::unistd::gethostname()?
        .into_string()
        .map_err(|h| anyhow::anyhow!("hostname {h:?} is not UTF-8"))
}
