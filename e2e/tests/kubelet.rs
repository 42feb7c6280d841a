//! A real kubelet (k8s-tools, v1.32, standalone: static pods, no API server) against the
//! daemon on the overlay store, with the upstream images served through registry mirrors.
//!
//! One kubelet runs seven static pods at once, and the test checks what the kubelet and the
//! runtime do together:
//! * `web` (nginx): pulled through the mirror by its upstream name; HTTP readiness and HTTP
//!   liveness probes pass; the pod IP the kubelet reports is the CRI's and answers HTTP from
//!   the host;
//! * `restart`: an exec liveness probe (ExecSync) fails, the kubelet restarts the container;
//!   restart count and last state in `/pods`, both attempts' logs through crictl and the
//!   kubelet's `/containerLogs?previous=true`;
//! * `init`: an init container completes before the main one, which reads what it left in
//!   an emptyDir; its log through crictl and the kubelet;
//! * `pair`: two containers share localhost and an emptyDir (the client's exec readiness
//!   probe fetches, from the server on 127.0.0.1, the page the client wrote);
//! * `limits`: requests and limits in the container's cgroup (CFS quota and period, shares,
//!   memory limit) under the kubelet's pod cgroup, found through the pid crictl reports;
//! * `chatty`: the kubelet rotates its log (containerLogMaxSize 1Ki) and ReopenContainerLog
//!   makes the container continue in the new file without losing a line;
//! * `lifecycle`: removing the manifest runs the preStop hook, then SIGTERM, then SIGKILL
//!   once the 3 s grace period is over.
//!
//! Also: UpdateRuntimeConfig carries the podCIDR; the kubelet's `/stats/summary` (see
//! `stats_summary`); a kubelet restart and then a daemon restart leave every running
//! container as it was (same IDs, no restarts). At the end every pod is stopped by the kubelet and removed through the
//! CRI, and the kubelet's cgroups, mounts, files and the host sysctls it changed are put back.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use e2e::cmd::run;
use e2e::k8s_tools::{self, StandInRegistry};
use e2e::kubelet::{Kubelet, KubeletOptions, current_sysctls, http_get};
use e2e::pods::{PodEnv, PodEnvOptions, Store, exec, exec_ok, parse_cri_log};
use k8s_cri::v1::{
    ContainerState, ContainerStatusRequest, ImageSpec, ImageStatusRequest, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxFilter, PodSandboxStateValue,
};
use serde_json::{Value, json};

const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
const NGINX: &str = "registry.k8s.io/e2e-test-images/nginx:1.14-2";
/// The stand-ins this test needs (paths under the upstream registries).
const STAND_INS: [&str; 3] = [
    "e2e-test-images/busybox:1.29-2",
    "e2e-test-images/nginx:1.14-2",
    "pause:3.10",
];
const POD_NAMES: [&str; 7] = [
    "web",
    "restart",
    "init",
    "pair",
    "limits",
    "chatty",
    "lifecycle",
];
/// How long the kubelet may take to get every pod running on this 2-core machine.
const PODS_UP: Duration = Duration::from_secs(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_pods_under_a_standalone_kubelet() {
    scenario().await.unwrap();
}

fn pod(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": "default" },
        "spec": spec,
    })
}

fn sh(script: &str) -> Value {
    json!(["sh", "-c", script])
}

fn manifests(events_dir: &Path) -> Vec<(&'static str, Value)> {
    vec![
        (
            "web",
            pod(
                "web",
                json!({
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "nginx",
                        "image": NGINX,
                        "readinessProbe": { "httpGet": { "path": "/", "port": 80 }, "periodSeconds": 1 },
                        "livenessProbe": { "httpGet": { "path": "/", "port": 80 }, "periodSeconds": 2 },
                    }],
                }),
            ),
        ),
        (
            "restart",
            pod(
                "restart",
                json!({
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "flaky",
                        "image": BUSYBOX,
                        "command": sh("echo attempt-start; touch /tmp/healthy; sleep 3; rm /tmp/healthy; sleep 600"),
                        "livenessProbe": {
                            "exec": { "command": ["cat", "/tmp/healthy"] },
                            "periodSeconds": 1,
                            "failureThreshold": 1,
                        },
                    }],
                }),
            ),
        ),
        (
            "init",
            pod(
                "init",
                json!({
                    "terminationGracePeriodSeconds": 2,
                    "volumes": [{ "name": "work", "emptyDir": {} }],
                    "initContainers": [{
                        "name": "prepare",
                        "image": BUSYBOX,
                        "command": sh("echo prepared-by-init > /work/msg"),
                        "volumeMounts": [{ "name": "work", "mountPath": "/work" }],
                    }],
                    "containers": [{
                        "name": "main",
                        "image": BUSYBOX,
                        "command": sh("cat /work/msg; sleep 600"),
                        "volumeMounts": [{ "name": "work", "mountPath": "/work" }],
                    }],
                }),
            ),
        ),
        (
            "pair",
            pod(
                "pair",
                json!({
                    "terminationGracePeriodSeconds": 2,
                    "volumes": [{ "name": "www", "emptyDir": {} }],
                    "containers": [
                        {
                            "name": "server",
                            "image": BUSYBOX,
                            "command": ["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"],
                            "volumeMounts": [{ "name": "www", "mountPath": "/www" }],
                        },
                        {
                            "name": "client",
                            "image": BUSYBOX,
                            "command": sh("echo from-client > /www/index.html; sleep 600"),
                            "volumeMounts": [{ "name": "www", "mountPath": "/www" }],
                            "readinessProbe": {
                                "exec": { "command": sh("wget -qO- http://127.0.0.1:8080/index.html | grep -q from-client") },
                                "periodSeconds": 1,
                            },
                        },
                    ],
                }),
            ),
        ),
        (
            "limits",
            pod(
                "limits",
                json!({
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "main",
                        "image": BUSYBOX,
                        "command": ["sleep", "600"],
                        "resources": {
                            "requests": { "cpu": "100m", "memory": "32Mi" },
                            "limits": { "cpu": "200m", "memory": "64Mi" },
                        },
                    }],
                }),
            ),
        ),
        (
            "chatty",
            pod(
                "chatty",
                json!({
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "main",
                        "image": BUSYBOX,
                        "command": sh("i=0; while true; do i=$((i+1)); echo \"line-$i padding-padding-padding\"; sleep 0.05; done"),
                    }],
                }),
            ),
        ),
        (
            "lifecycle",
            pod(
                "lifecycle",
                json!({
                    "terminationGracePeriodSeconds": 3,
                    "volumes": [{ "name": "out", "hostPath": { "path": events_dir, "type": "Directory" } }],
                    "containers": [{
                        "name": "main",
                        "image": BUSYBOX,
                        // SIGTERM is noted and then ignored: only SIGKILL ends it; /out/last
                        // keeps the time of its last breath.
                        "command": sh(concat!(
                            "trap 'read up rest < /proc/uptime; echo \"term $up\" >> /out/events; ",
                            "while true; do read up rest < /proc/uptime; echo $up > /out/last; sleep 0.2; done' TERM; ",
                            "echo started >> /out/events; while true; do sleep 0.2; done",
                        )),
                        "volumeMounts": [{ "name": "out", "mountPath": "/out" }],
                        "lifecycle": {
                            "preStop": {
                                "exec": { "command": sh("read up rest < /proc/uptime; echo \"prestop $up\" >> /out/events") },
                            },
                        },
                    }],
                }),
            ),
        ),
    ]
}

async fn scenario() -> anyhow::Result<()> {
    let crictl = k8s_tools::tool("crictl")?;
    let stand_ins = tokio::task::spawn_blocking(|| {
        StandInRegistry::start_with(|i| STAND_INS.contains(&i.repo_tag.as_str()))
    })
    .await??;
    let mut env = PodEnv::start_with(
        Store::Overlay,
        PodEnvOptions {
            config_top: stand_ins.mirrors_toml(),
            log_level: Some("info".into()),
            ..Default::default()
        },
    )
    .await?;
    let events = tempfile::Builder::new()
        .prefix("pvecri-kubelet-events-")
        .tempdir()?;
    let mut config = serde_json::Map::new();
    config.insert("containerLogMaxSize".into(), json!("1Ki"));
    config.insert("containerLogMaxFiles".into(), json!(2));
    config.insert("containerLogMonitorInterval".into(), json!("3s"));
    config.insert("podCIDR".into(), json!(env.net.subnet()));
    let socket = env.daemon.socket.clone();
    let mut kubelet = tokio::task::spawn_blocking(move || {
        Kubelet::start(KubeletOptions {
            runtime_socket: socket,
            config,
        })
    })
    .await??;
    for (name, manifest) in manifests(events.path()) {
        kubelet.add_pod(name, &manifest)?;
    }
    let t = Test {
        kubelet: &kubelet,
        env: &env,
        crictl,
    };
    let mut result = t.checks(&stand_ins, events.path()).await;
    drop(t);
    if result.is_ok() {
        result = restarts(&mut kubelet, &mut env).await;
    }
    // The logs stay for inspection: target/kubelet/.
    let report = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/kubelet");
    std::fs::create_dir_all(&report)?;
    std::fs::copy(&kubelet.log_path, report.join("kubelet.log"))?;
    std::fs::copy(&env.daemon.log_path, report.join("pvecri.log"))?;
    eprintln!("kubelet and daemon logs: {}", report.display());
    if let Err(e) = result {
        let pods = kubelet.pods().map(|p| summarize(&p)).unwrap_or_default();
        bail!(
            "{e:#}\n/pods:\n{pods}\nkubelet log tail:\n{}",
            kubelet.log_tail(60)
        );
    }

    // As they were when the kubelet lock was taken (another kubelet may have run before).
    let sysctls_before = kubelet.saved_sysctls().to_vec();
    let cgroup_root = kubelet.cgroup_root.clone();
    let kubelet_dir = kubelet.root_dir.parent().map(Path::to_path_buf);
    kubelet.stop().await?;

    // Everything went: pods through the CRI, CTs, cgroups, the kubelet's files, sysctls.
    let mut rt = env.rt().await?;
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    ensure!(pods.is_empty(), "pods left in the runtime: {pods:?}");
    let cts = std::fs::read_dir(env.daemon.state_dir.join("lxc"))?.count();
    ensure!(cts == 0, "{cts} CT directories left in the lxcpath");
    for root in pve::cgroup::Hierarchies::detect()?.roots {
        ensure!(
            !root.join(&cgroup_root).exists(),
            "the kubelet's cgroup root is left in {}",
            root.display()
        );
    }
    ensure!(
        current_sysctls()? == sysctls_before,
        "sysctls not restored: {:?} != {sysctls_before:?}",
        current_sysctls()?
    );
    if let Some(dir) = kubelet_dir {
        ensure!(
            !dir.exists(),
            "the kubelet's directory {} is left",
            dir.display()
        );
        if let Ok(links) = std::fs::read_dir("/var/log/containers") {
            for link in links.flatten() {
                let target = std::fs::read_link(link.path()).unwrap_or_default();
                ensure!(
                    !target.starts_with(&dir),
                    "log link left: {}",
                    link.path().display()
                );
            }
        }
    }
    Ok(())
}

/// The pods whose containers must run on untouched through restarts (not `restart`, whose
/// liveness probe keeps failing, nor `lifecycle`, gone by now).
const STEADY: [&str; 5] = ["web", "init", "pair", "limits", "chatty"];

/// `pod/container -> (container ID, restart count)` of the steady pods' running containers;
/// `None` until the kubelet reports every one of them running.
fn steady_containers(kubelet: &Kubelet) -> anyhow::Result<Option<BTreeMap<String, (String, u64)>>> {
    let mut out = BTreeMap::new();
    for name in STEADY {
        let Some(pod) = kubelet.pod(name)? else {
            return Ok(None);
        };
        let Some(statuses) = pod["status"]["containerStatuses"].as_array() else {
            return Ok(None);
        };
        for c in statuses {
            if !c["state"]["running"].is_object() {
                return Ok(None);
            }
            out.insert(
                format!("{name}/{}", c["name"].as_str().unwrap_or("?")),
                (
                    runtime_id(c)?,
                    c["restartCount"].as_u64().unwrap_or(u64::MAX),
                ),
            );
        }
    }
    Ok(Some(out))
}

/// Waits until the steady containers are reported again, as `before`, and stay so for a
/// few kubelet syncs (a kubelet that decides to recreate them does so on a sync).
async fn same_containers(
    kubelet: &Kubelet,
    before: &BTreeMap<String, (String, u64)>,
    after: &str,
) -> anyhow::Result<()> {
    const HOLD: Duration = Duration::from_secs(8);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut same_since: Option<Instant> = None;
    loop {
        let now = steady_containers(kubelet)?;
        match &now {
            Some(now) if now == before => {
                let since = *same_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= HOLD {
                    return Ok(());
                }
            }
            Some(now) if now.len() == before.len() => {
                bail!(
                    "after {after}, containers were recreated or restarted: {before:?} became {now:?}"
                )
            }
            _ => same_since = None,
        }
        if Instant::now() > deadline {
            bail!("after {after}, the kubelet does not report the pods running again: {now:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Neither a kubelet restart nor a daemon restart touches a running container: the kubelet
/// finds its pods again through the CRI (labels, annotations, attempts, statuses).
async fn restarts(kubelet: &mut Kubelet, env: &mut PodEnv) -> anyhow::Result<()> {
    let before = steady_containers(kubelet)?.context("the steady pods are not all running")?;
    tokio::task::block_in_place(|| kubelet.restart())?;
    same_containers(kubelet, &before, "a kubelet restart").await?;
    tokio::task::block_in_place(|| env.daemon.restart())?;
    same_containers(kubelet, &before, "a daemon restart").await?;
    eprintln!(
        "restarts: {} containers kept through a kubelet restart and a daemon restart",
        before.len()
    );
    Ok(())
}

/// One line per pod of `/pods`, for failure reports.
fn summarize(pods: &[Value]) -> String {
    let mut out = String::new();
    for p in pods {
        let statuses = |key: &str| -> Vec<String> {
            p["status"][key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| {
                            format!(
                                "{} ready={} restarts={} state={}",
                                c["name"].as_str().unwrap_or("?"),
                                c["ready"],
                                c["restartCount"],
                                c["state"]
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        out.push_str(&format!(
            "  {} phase={} ip={} init={:?} containers={:?}\n",
            p["metadata"]["name"].as_str().unwrap_or("?"),
            p["status"]["phase"],
            p["status"]["podIP"],
            statuses("initContainerStatuses"),
            statuses("containerStatuses"),
        ));
    }
    out
}

struct Test<'a> {
    kubelet: &'a Kubelet,
    env: &'a PodEnv,
    crictl: PathBuf,
}

/// The status of container `name` in a `/pods` pod.
fn container<'v>(pod: &'v Value, name: &str) -> anyhow::Result<&'v Value> {
    for key in ["containerStatuses", "initContainerStatuses"] {
        if let Some(c) = pod["status"][key]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == name))
        {
            return Ok(c);
        }
    }
    bail!(
        "no status for container {name} in {}",
        pod["metadata"]["name"]
    )
}

/// The runtime's ID of a container status (`pvecri://<id>`).
fn runtime_id(status: &Value) -> anyhow::Result<String> {
    let id = status["containerID"]
        .as_str()
        .context("container status without containerID")?;
    let (scheme, id) = id
        .split_once("://")
        .context("containerID without a scheme")?;
    ensure!(
        scheme == "pvecri",
        "containerID {id} names runtime {scheme}"
    );
    Ok(id.to_string())
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

impl Test<'_> {
    /// Polls `/pods` until `check` returns `Some` for pod `name`.
    async fn wait_pod<T>(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let pod = self.kubelet.pod(name)?;
            if let Some(v) = pod.as_ref().and_then(&check) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!(
                    "pod {name}: {what}: not so after {timeout:?}; its status: {}",
                    pod.map(|p| p["status"].to_string())
                        .unwrap_or("(not in /pods)".into())
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn crictl(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new(&self.crictl)
            .arg("--runtime-endpoint")
            .arg(format!("unix://{}", self.env.daemon.socket.display()))
            .args(args))
    }

    /// The CRI sandbox of a pod the kubelet runs, by its UID.
    async fn sandbox_id(&self, pod: &Value) -> anyhow::Result<String> {
        let uid = pod["metadata"]["uid"].as_str().context("pod without uid")?;
        let mut rt = self.env.rt().await?;
        let items = rt
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    label_selector: [("io.kubernetes.pod.uid".to_string(), uid.to_string())].into(),
                    state: Some(PodSandboxStateValue { state: 0 }),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .items;
        match items.as_slice() {
            [one] => Ok(one.id.clone()),
            other => bail!("{} ready sandboxes for pod uid {uid}", other.len()),
        }
    }

    async fn checks(&self, stand_ins: &StandInRegistry, events: &Path) -> anyhow::Result<()> {
        // Every pod up (the restarting one at least started once).
        let deadline = Instant::now() + PODS_UP;
        for name in POD_NAMES {
            let left = deadline.saturating_duration_since(Instant::now());
            self.wait_pod(name, "running", left, |p| {
                (p["status"]["phase"] == "Running").then_some(())
            })
            .await?;
        }
        self.pulled_through_the_mirror(stand_ins).await?;
        self.update_runtime_config()?;
        self.web().await?;
        self.init().await?;
        self.pair().await?;
        self.limits().await?;
        self.restart().await?;
        self.log_rotation().await?;
        self.lifecycle(events).await?;
        self.stats_summary().await?;
        // By now the HTTP liveness probe has run many times; passing, it restarted nothing.
        let web = self.kubelet.pod("web")?.context("web is gone")?;
        let nginx = container(&web, "nginx")?;
        ensure!(
            nginx["restartCount"] == 0 && nginx["ready"] == true,
            "nginx after the run: {nginx}"
        );
        Ok(())
    }

    /// The kubelet asked for upstream names; the runtime fetched them from the mirror and
    /// keeps them under those names.
    async fn pulled_through_the_mirror(&self, stand_ins: &StandInRegistry) -> anyhow::Result<()> {
        let mut images = self.env.daemon.image_client().await?;
        for (image, repo) in [
            (BUSYBOX, "e2e-test-images/busybox"),
            (NGINX, "e2e-test-images/nginx"),
        ] {
            let status = images
                .image_status(ImageStatusRequest {
                    image: Some(ImageSpec {
                        image: image.to_string(),
                        ..Default::default()
                    }),
                    verbose: false,
                })
                .await?
                .into_inner()
                .image
                .with_context(|| format!("{image} is not in the runtime"))?;
            ensure!(
                status.repo_tags.iter().any(|t| t == image),
                "{image} is kept as {:?}",
                status.repo_tags
            );
            ensure!(
                stand_ins
                    .registry
                    .request_count(&format!("/v2/{repo}/manifests/"))
                    > 0,
                "the mirror served no manifest of {repo}"
            );
        }
        Ok(())
    }

    /// In standalone mode the kubelet hands the runtime its podCIDR.
    fn update_runtime_config(&self) -> anyhow::Result<()> {
        let want = format!("pod_cidr={}", self.env.net.subnet());
        ensure!(
            self.env.daemon.log().contains(&want),
            "the daemon logged no UpdateRuntimeConfig with {want}"
        );
        Ok(())
    }

    async fn web(&self) -> anyhow::Result<()> {
        let pod = self
            .wait_pod("web", "ready", Duration::from_secs(30), |p| {
                is_ready(p).then(|| p.clone())
            })
            .await?;
        let nginx = container(&pod, "nginx")?;
        ensure!(nginx["ready"] == true, "nginx not ready: {nginx}");
        let ip = pod["status"]["podIP"]
            .as_str()
            .context("web has no podIP")?
            .to_string();
        ensure!(
            self.env.net.contains(&ip),
            "pod IP {ip} outside {}",
            self.env.net.subnet()
        );
        let sandbox = self.sandbox_id(&pod).await?;
        let cri_ip = e2e::pods::pod_ip(&mut self.env.rt().await?, &sandbox).await?;
        ensure!(cri_ip == ip, "the kubelet reports {ip}, the CRI {cri_ip}");
        let addr: SocketAddr = format!("{ip}:80").parse()?;
        let (status, body) =
            tokio::task::spawn_blocking(move || http_get(addr, "/", Duration::from_secs(10)))
                .await??;
        ensure!(
            status == 200 && body.contains("nginx"),
            "GET http://{ip}/ from the host: {status} {body:?}"
        );
        Ok(())
    }

    async fn init(&self) -> anyhow::Result<()> {
        let pod = self.kubelet.pod("init")?.context("init is gone")?;
        let prepare = container(&pod, "prepare")?;
        let done = &prepare["state"]["terminated"];
        ensure!(
            done["exitCode"] == 0 && done["reason"] == "Completed",
            "the init container did not complete: {prepare}"
        );
        let main = container(&pod, "main")?;
        ensure!(main["state"]["running"].is_object(), "main: {main}");
        let id = runtime_id(main)?;
        let name = self.kubelet.pod_name("init");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let through_crictl = self.crictl(&["logs", &id])?;
            let through_kubelet = self
                .kubelet
                .get_secure(&format!("/containerLogs/default/{name}/main"))?;
            if through_crictl.contains("prepared-by-init")
                && through_kubelet.contains("prepared-by-init")
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "main's log lacks the init container's message: crictl {through_crictl:?}, \
                     kubelet {through_kubelet:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }

    async fn pair(&self) -> anyhow::Result<()> {
        // The client's exec readiness probe passes only if it reaches the server on
        // 127.0.0.1 and the server serves the page the client wrote to the shared emptyDir.
        let pod = self
            .wait_pod("pair", "ready", Duration::from_secs(30), |p| {
                is_ready(p).then(|| p.clone())
            })
            .await?;
        let server = runtime_id(container(&pod, "server")?)?;
        let client = runtime_id(container(&pod, "client")?)?;
        let mut rt = self.env.rt().await?;
        let page = exec_ok(&mut rt, &server, "cat /www/index.html").await?;
        ensure!(
            page.trim() == "from-client",
            "the server's /www/index.html: {page:?}"
        );
        let fetched = exec_ok(
            &mut rt,
            &client,
            "wget -qO- http://127.0.0.1:8080/index.html",
        )
        .await?;
        ensure!(fetched.trim() == "from-client", "fetched {fetched:?}");
        Ok(())
    }

    async fn limits(&self) -> anyhow::Result<()> {
        let pod = self.kubelet.pod("limits")?.context("limits is gone")?;
        let uid = pod["metadata"]["uid"]
            .as_str()
            .context("no uid")?
            .to_string();
        let id = runtime_id(container(&pod, "main")?)?;
        let mut rt = self.env.rt().await?;
        let info = rt
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: true,
            })
            .await?
            .into_inner()
            .info;
        let verbose: Value = serde_json::from_str(info.get("info").context("no verbose info")?)?;
        let pid = verbose["pid"]
            .as_u64()
            .context("no pid in the verbose info")?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        ensure!(
            cmdline == b"sleep\x00600\x00",
            "pid {pid} from ContainerStatus is not the container's process on the host: {:?}",
            String::from_utf8_lossy(&cmdline)
        );
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let h = pve::cgroup::Hierarchies::detect()?;
        let pod_cgroup = format!(
            "/{}/kubepods/burstable/pod{}/",
            self.kubelet.cgroup_root, uid
        );
        // (controller, file, expected): 200m of CPU is 20 ms per 100 ms; a 100m request is
        // 102 shares (weight 4 on v2); 64 MiB of memory.
        let v1 = [
            ("cpu", "cpu.cfs_quota_us", "20000"),
            ("cpu", "cpu.cfs_period_us", "100000"),
            ("cpu", "cpu.shares", "102"),
            ("memory", "memory.limit_in_bytes", "67108864"),
        ];
        let v2 = [
            ("", "cpu.max", "20000 100000"),
            ("", "cpu.weight", "4"),
            ("", "memory.max", "67108864"),
        ];
        let wanted: &[(&str, &str, &str)] = if h.unified.is_some() { &v2 } else { &v1 };
        for (controller, file, want) in wanted {
            let path = cgroups
                .lines()
                .find_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
                    let hit = if controller.is_empty() {
                        ctrls.is_empty()
                    } else {
                        ctrls.split(',').any(|c| c == *controller)
                    };
                    hit.then(|| path.to_string())
                })
                .with_context(|| format!("no {controller} cgroup in {cgroups}"))?;
            ensure!(
                path.starts_with(&pod_cgroup),
                "the container's {controller} cgroup {path} is not under the kubelet's pod cgroup {pod_cgroup}"
            );
            let mount = if controller.is_empty() {
                h.unified.clone().context("no v2 mount")?
            } else {
                h.roots
                    .iter()
                    .find(|r| {
                        r.file_name().is_some_and(|n| {
                            n.to_string_lossy().split(',').any(|c| c == *controller)
                        })
                    })
                    .cloned()
                    .with_context(|| format!("no {controller} hierarchy"))?
            };
            let file_path = mount.join(path.trim_start_matches('/')).join(file);
            let got = std::fs::read_to_string(&file_path)
                .with_context(|| format!("reading {}", file_path.display()))?;
            ensure!(
                got.trim() == *want,
                "{}: {} (want {want})",
                file_path.display(),
                got.trim()
            );
        }
        // The container sees the same limits at the root of its own /sys/fs/cgroup
        // (read-only, as in containerd), where programs look for them.
        let (script, want) = if h.unified.is_some() {
            (
                "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max",
                "67108864\n20000 100000\n",
            )
        } else {
            (
                "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                "67108864\n20000\n",
            )
        };
        let inside = exec_ok(&mut rt, &id, script).await?;
        ensure!(
            inside == want,
            "inside the container: {inside:?} (want {want:?})"
        );
        let own = exec_ok(&mut rt, &id, "cat /proc/self/cgroup").await?;
        ensure!(
            own.lines().all(|l| l.ends_with(":/")),
            "the container's cgroups are not the roots of its cgroup namespace: {own}"
        );
        let write = exec(&mut rt, &id, &["touch", "/sys/fs/cgroup/x"], 10).await?;
        ensure!(
            write.exit_code != 0,
            "/sys/fs/cgroup is writable in the container"
        );
        Ok(())
    }

    async fn restart(&self) -> anyhow::Result<()> {
        let pod = self
            .wait_pod(
                "restart",
                "restarted once and running again",
                Duration::from_secs(60),
                |p| {
                    let c = container(p, "flaky").ok()?;
                    (c["restartCount"].as_u64()? >= 1 && c["state"]["running"].is_object())
                        .then(|| p.clone())
                },
            )
            .await?;
        let flaky = container(&pod, "flaky")?;
        let last = &flaky["lastState"]["terminated"];
        ensure!(
            last["exitCode"].as_i64().is_some_and(|c| c != 0),
            "the container killed for its liveness probe has no failed last state: {flaky}"
        );
        let previous = last["containerID"]
            .as_str()
            .and_then(|id| id.strip_prefix("pvecri://"))
            .context("last state without a container ID")?
            .to_string();
        let current = runtime_id(flaky)?;
        ensure!(
            previous != current,
            "the restart reused container {current}"
        );
        // Both attempts are kept by the runtime, with their attempt numbers.
        let mut rt = self.env.rt().await?;
        let ctrs = rt
            .list_containers(ListContainersRequest::default())
            .await?
            .into_inner()
            .containers;
        let attempts: BTreeSet<u32> = ctrs
            .iter()
            .filter(|c| c.id == previous || c.id == current)
            .filter_map(|c| c.metadata.as_ref().map(|m| m.attempt))
            .collect();
        ensure!(
            attempts.len() == 2 && attempts.contains(&0),
            "attempts {attempts:?}"
        );
        let old_log = self.crictl(&["logs", &previous])?;
        ensure!(
            old_log.contains("attempt-start"),
            "crictl logs of the first attempt: {old_log:?}"
        );
        let name = self.kubelet.pod_name("restart");
        let via_kubelet = self.kubelet.get_secure(&format!(
            "/containerLogs/default/{name}/flaky?previous=true"
        ))?;
        ensure!(
            via_kubelet.contains("attempt-start"),
            "the kubelet's previous log: {via_kubelet:?}"
        );
        eprintln!(
            "restart: restartCount {}, last exit code {}",
            flaky["restartCount"], last["exitCode"]
        );
        Ok(())
    }

    /// The kubelet renames `0.log` once it passes 1 KiB and calls ReopenContainerLog: the
    /// container carries on in a new `0.log`, the line after the renamed file's last.
    async fn log_rotation(&self) -> anyhow::Result<()> {
        let pod = self.kubelet.pod("chatty")?.context("chatty is gone")?;
        let uid = pod["metadata"]["uid"].as_str().context("no uid")?;
        let dir = self
            .kubelet
            .pod_logs
            .join(format!("default_{}_{uid}", self.kubelet.pod_name("chatty")))
            .join("main");
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some((rotated, current)) = read_rotation(&dir)? {
                let last_rotated = rotated.last().copied().context("empty rotated log")?;
                let first_current = current.first().copied().context("empty current log")?;
                ensure!(
                    first_current == last_rotated + 1,
                    "the new 0.log starts at line {first_current}, the rotated one ends at {last_rotated}"
                );
                for w in rotated.windows(2).chain(current.windows(2)) {
                    ensure!(
                        w[1] == w[0] + 1,
                        "a line is lost between {} and {}",
                        w[0],
                        w[1]
                    );
                }
                eprintln!(
                    "chatty: rotated log ends at line {last_rotated}, the reopened 0.log starts at {first_current}"
                );
                return Ok(());
            }
            if Instant::now() > deadline {
                let files: Vec<String> = std::fs::read_dir(&dir)
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                bail!(
                    "no rotated log with a new 0.log after it in {} ({files:?})",
                    dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// preStop, then SIGTERM, then SIGKILL at the end of the grace period (3 s, preStop
    /// included): the container ignores SIGTERM and notes the time until it dies.
    async fn lifecycle(&self, events: &Path) -> anyhow::Result<()> {
        let pod = self
            .wait_pod("lifecycle", "running", Duration::from_secs(30), |p| {
                let c = container(p, "main").ok()?;
                c["state"]["running"].is_object().then(|| p.clone())
            })
            .await?;
        let id = runtime_id(container(&pod, "main")?)?;
        let started = std::fs::read_to_string(events.join("events")).unwrap_or_default();
        ensure!(
            started == "started\n",
            "events before deletion: {started:?}"
        );
        // A static pod leaves /pods at once; its containers are stopped in the background.
        self.kubelet.remove_pod("lifecycle")?;
        let mut rt = self.env.rt().await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = match rt
                .container_status(ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                })
                .await
            {
                Ok(r) => r.into_inner().status.map(|s| s.state),
                Err(e) if e.code() == tonic::Code::NotFound => None,
                Err(e) => return Err(e.into()),
            };
            if state != Some(ContainerState::ContainerRunning as i32) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the lifecycle container still runs 30 s after its manifest went");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let text = std::fs::read_to_string(events.join("events"))?;
        let lines: Vec<&str> = text.lines().collect();
        let time = |line: &str, tag: &str| -> anyhow::Result<f64> {
            line.strip_prefix(tag)
                .and_then(|t| t.trim().parse().ok())
                .with_context(|| format!("event {line:?} is not `{tag}<uptime>`"))
        };
        let [first, prestop, term] = lines.as_slice() else {
            bail!("events: {lines:?} (want started, prestop, term)");
        };
        ensure!(*first == "started", "events: {lines:?}");
        let prestop = time(prestop, "prestop ")?;
        let term = time(term, "term ")?;
        let last: f64 = std::fs::read_to_string(events.join("last"))?
            .trim()
            .parse()
            .context("no last breath noted")?;
        ensure!(
            prestop <= term,
            "SIGTERM ({term}) before the preStop hook ({prestop})"
        );
        // Killed after the grace period, not at SIGTERM and not long after it.
        let after_term = last - term;
        let after_prestop = last - prestop;
        ensure!(
            (1.0..=6.0).contains(&after_term) && after_prestop <= 7.0,
            "the container died {after_term:.1} s after SIGTERM and {after_prestop:.1} s after \
             the preStop hook, with a grace period of 3 s"
        );
        eprintln!(
            "lifecycle: preStop, SIGTERM {:.1} s later, SIGKILL {after_term:.1} s after SIGTERM",
            term - prestop
        );
        Ok(())
    }

    /// The kubelet's summary API needs ListPodSandboxStats and ListContainerStats.
    async fn stats_summary(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(40);
        let summary = loop {
            let (status, body) = self.kubelet.get("/stats/summary")?;
            if status == 200 {
                let v: Value = serde_json::from_str(&body).context("/stats/summary is not JSON")?;
                let has_limits = v["pods"].as_array().is_some_and(|pods| {
                    pods.iter().any(|p| {
                        p["podRef"]["name"] == self.kubelet.pod_name("limits").as_str()
                            && p["containers"].as_array().is_some_and(|c| !c.is_empty())
                    })
                });
                if has_limits {
                    break v;
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "/stats/summary: {status} {}",
                    body.chars().take(400).collect::<String>()
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let pods = summary["pods"].as_array().context("no pods")?;
        let limits = pods
            .iter()
            .find(|p| p["podRef"]["name"] == self.kubelet.pod_name("limits").as_str())
            .context("no limits pod")?;
        let main = limits["containers"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "main"))
            .context("no main container in the summary")?;
        ensure!(
            main["cpu"]["usageCoreNanoSeconds"].as_u64().is_some(),
            "no CPU usage: {main}"
        );
        ensure!(
            main["memory"]["workingSetBytes"]
                .as_u64()
                .is_some_and(|b| b > 0),
            "no working set: {main}"
        );
        eprintln!(
            "stats summary: limits/main CPU {} ns, working set {} bytes",
            main["cpu"]["usageCoreNanoSeconds"], main["memory"]["workingSetBytes"]
        );
        Ok(())
    }
}

/// The newest rotated log (uncompressed) and the current `0.log` as line numbers, read so
/// that no rotation happened in between; `None` before the first rotation.
fn read_rotation(dir: &Path) -> anyhow::Result<Option<(Vec<u64>, Vec<u64>)>> {
    let rotated = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| {
                        n.starts_with("0.log.") && !n.ends_with(".gz") && !n.ends_with(".tmp")
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let before = rotated(dir);
    let Some(newest) = before.last() else {
        return Ok(None);
    };
    let old = std::fs::read_to_string(dir.join(newest));
    let new = std::fs::read_to_string(dir.join("0.log"));
    if rotated(dir) != before {
        return Ok(None); // rotated meanwhile: read again
    }
    let (Ok(old), Ok(new)) = (old, new) else {
        return Ok(None);
    };
    let numbers = |text: &str| -> anyhow::Result<Vec<u64>> {
        let lines = parse_cri_log(text)?;
        Ok(lines
            .iter()
            .filter(|l| l.stream == "stdout" && l.tag == "F")
            .filter_map(|l| {
                l.text
                    .strip_prefix("line-")?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect())
    };
    let (old, new) = (numbers(&old)?, numbers(&new)?);
    if old.is_empty() || new.is_empty() {
        return Ok(None);
    }
    Ok(Some((old, new)))
}
