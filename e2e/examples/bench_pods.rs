//! Pod and container latencies and memory: pvecri (LXC + podinit) next to containerd 1.6
//! with runc, on the same machine in the same run, driven by the same CRI client code.
//!
//! ```sh
//! apt-get install containerd runc           # Debian's 1.6 and 1.1
//! cargo build --release -p cri && scripts/build-podinit   # the example runs target/release/pvecri
//! cargo run --release -p e2e --example bench_pods -- [--rounds 20] [--pods 20] [--store overlay|zfs]
//! ```
//!
//! Rounds alternate between the runtimes. One round: RunPodSandbox; CreateContainer +
//! StartContainer; StopContainer (the container exits on SIGTERM) + StopPodSandbox;
//! RemoveContainer + RemovePodSandbox. Then, per runtime in turn, `--pods` pods with one
//! `sleep` container each, and the memory of the daemon and of what each pod costs besides
//! its container: podinit and the CT's LXC monitor for pvecri, the shim and the pause
//! process for containerd. RSS counts shared pages in every process; PSS divides them.
//! Needs root. Both use the overlay store unless `--store zfs` (pvecri only).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::cni::{CNI_BIN_DIR, NetworkOptions, TestNetwork};
use e2e::containerd::{Containerd, ContainerdOptions};
use e2e::cri_client::{ImageClient, RuntimeClient};
use e2e::images::{self, Compression, ImageFormat, TestImage};
use e2e::pods::{PodEnv, PodEnvOptions, Store, container_config, sh};
use e2e::procs;
use k8s_cri::v1::{
    CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxStatusRequest, PullImageRequest, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};

struct Args {
    rounds: usize,
    pods: usize,
    store: Store,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        rounds: 20,
        pods: 20,
        store: Store::Overlay,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => a.rounds = value()?.parse()?,
            "--pods" => a.pods = value()?.parse()?,
            "--store" => {
                a.store = match value()?.as_str() {
                    "overlay" => Store::Overlay,
                    "zfs" => Store::Zfs,
                    other => anyhow::bail!("unknown store {other:?}"),
                }
            }
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    Ok(a)
}

/// One runtime under test, as the kubelet sees it: a CRI socket.
struct Target {
    name: &'static str,
    rt: RuntimeClient,
    images: ImageClient,
    /// Image of the containers.
    image: String,
    log_root: PathBuf,
    cgroup_top: String,
    samples: HashMap<&'static str, Vec<Duration>>,
}

const PHASES: [&str; 4] = ["run pod", "create+start container", "stop", "remove"];

impl Target {
    fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let uid = format!("{:016x}", rand::random::<u64>());
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: "bench".into(),
                uid: uid.clone(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self
                .log_root
                .join(format!("bench_{name}_{uid}"))
                .display()
                .to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}/pod{uid}", self.cgroup_top),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn pull(&mut self, image: &str) -> anyhow::Result<()> {
        self.images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .with_context(|| format!("{}: pulling {image}", self.name))?;
        Ok(())
    }

    async fn run_pod(&mut self, config: &PodSandboxConfig) -> anyhow::Result<String> {
        Ok(self
            .rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .with_context(|| format!("{}: RunPodSandbox", self.name))?
            .into_inner()
            .pod_sandbox_id)
    }

    async fn run_container(
        &mut self,
        pod_id: &str,
        pod: &PodSandboxConfig,
        command: Vec<String>,
    ) -> anyhow::Result<String> {
        let mut cfg = container_config("c", &self.image, &[]);
        cfg.command = command;
        let id = self
            .rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(cfg),
                sandbox_config: Some(pod.clone()),
            })
            .await
            .with_context(|| format!("{}: CreateContainer", self.name))?
            .into_inner()
            .container_id;
        self.rt
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .with_context(|| format!("{}: StartContainer", self.name))?;
        Ok(id)
    }

    /// One measured round.
    async fn round(&mut self, n: usize) -> anyhow::Result<()> {
        let pod = self.pod_config(&format!("round-{n}"));
        let t = Instant::now();
        let pod_id = self.run_pod(&pod).await?;
        let run_pod = t.elapsed();
        let t = Instant::now();
        let ctr = self
            .run_container(
                &pod_id,
                &pod,
                sh("trap 'exit 0' TERM; echo ready; while :; do sleep 3600 & wait $!; done"),
            )
            .await?;
        let create_start = t.elapsed();
        // Not timed: a SIGTERM before the trap is set would be ignored (PID 1) and the stop
        // would measure the timeout instead.
        let log = Path::new(&pod.log_directory).join("c/0.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(" F ready")
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{}: the container did not log ready",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t = Instant::now();
        self.rt
            .stop_container(StopContainerRequest {
                container_id: ctr.clone(),
                timeout: 10,
            })
            .await?;
        self.rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
            .await?;
        let stop = t.elapsed();
        let t = Instant::now();
        self.rt
            .remove_container(RemoveContainerRequest {
                container_id: ctr.clone(),
            })
            .await?;
        self.rt
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
            .await?;
        let remove = t.elapsed();
        for (k, v) in PHASES.iter().zip([run_pod, create_start, stop, remove]) {
            self.samples.entry(k).or_default().push(v);
        }
        Ok(())
    }

    /// `n` pods with a `sleep` container each; returns the pod IDs.
    async fn fill(&mut self, n: usize) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        for i in 0..n {
            let pod = self.pod_config(&format!("idle-{i}"));
            let id = self.run_pod(&pod).await?;
            self.run_container(&id, &pod, vec!["sleep".into(), "3600".into()])
                .await?;
            ids.push(id);
        }
        Ok(ids)
    }

    async fn drain(&mut self, ids: &[String]) -> anyhow::Result<()> {
        for id in ids {
            self.rt
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await?;
            self.rt
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await?;
        }
        Ok(())
    }

    /// The `pid` in the runtime's verbose PodSandboxStatus (containerd: the pause process;
    /// pvecri: podinit as `init_pid`).
    async fn sandbox_pid(&mut self, id: &str, key: &str) -> anyhow::Result<u32> {
        let info = self
            .rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            })
            .await?
            .into_inner()
            .info;
        let v: serde_json::Value = serde_json::from_str(info.get("info").context("no info")?)?;
        v.get(key)
            .and_then(|p| p.as_u64())
            .and_then(|p| u32::try_from(p).ok())
            .with_context(|| format!("no {key} in {v}"))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[derive(Default, Clone, Copy)]
struct Mem {
    rss: u64,
    pss: u64,
}

impl Mem {
    fn of(pids: &[u32]) -> Mem {
        pids.iter().fold(Mem::default(), |m, &p| Mem {
            rss: m.rss + procs::rss_kib(p).unwrap_or(0),
            pss: m.pss + procs::pss_kib(p).unwrap_or(0),
        })
    }
}

struct MemReport {
    daemon_idle: Mem,
    daemon_loaded: Mem,
    /// Per-pod helpers, by name, summed over the pods.
    helpers: Vec<(&'static str, Mem)>,
    pods: usize,
    fill_time: Duration,
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn cleanup_cgroups(top: &str) {
    let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for r in roots.flatten() {
        let dir = r.path().join(top);
        if dir.is_dir() {
            remove_cgroup_tree(&dir);
        }
    }
}

fn pause_image() -> anyhow::Result<TestImage> {
    let config = serde_json::json!({
        "architecture": images::host_arch(),
        "os": "linux",
        "created": images::CREATED,
        "config": { "Env": [images::DEFAULT_PATH], "Entrypoint": ["sleep", "infinity"] },
    });
    TestImage::build(
        "pause",
        ImageFormat::Oci(Compression::Gzip),
        config,
        &[images::busybox_layer()?],
    )
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // The release daemon unless PVECRI_BIN names another: a debug build is no benchmark.
    e2e::bench::run_against_release_daemon(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let env = PodEnv::start_with(
        args.store,
        PodEnvOptions {
            log_level: Some("info".into()),
            ..Default::default()
        },
    )
    .await?;
    let pause = pause_image()?;
    pause.push(&env.registry, "pause", "latest").await?;
    let pause_ref = format!("{}/pause:latest", env.registry.addr());
    let ctrd_net = TestNetwork::new(NetworkOptions::default())?;
    let ctrd = Containerd::start(&ContainerdOptions {
        sandbox_image: pause_ref.clone(),
        registry: env.registry.addr(),
        cni_conf_dir: ctrd_net.conf_dir().to_path_buf(),
        cni_bin_dir: PathBuf::from(CNI_BIN_DIR),
    })?;
    let logs = tempfile::Builder::new().prefix("bench-logs-").tempdir()?;
    let cgroup_top = format!("pvecri-bench-{:08x}", rand::random::<u32>());
    let mut targets = [
        Target {
            name: "pvecri",
            rt: env.rt().await?,
            images: env.daemon.image_client().await?,
            image: env.images.one_layer.clone(),
            log_root: logs.path().join("pvecri"),
            cgroup_top: format!("{cgroup_top}-p"),
            samples: HashMap::new(),
        },
        Target {
            name: "containerd",
            rt: ctrd.runtime_client().await?,
            images: ctrd.image_client().await?,
            image: env.images.one_layer.clone(),
            log_root: logs.path().join("containerd"),
            cgroup_top: format!("{cgroup_top}-c"),
            samples: HashMap::new(),
        },
    ];
    let result = run(&args, &env, &ctrd, &mut targets, &pause_ref).await;
    for t in &targets {
        cleanup_cgroups(&t.cgroup_top);
    }
    let (latency, memory) = result?;
    print_report(&args, &latency, &memory);
    Ok(())
}

type Latencies = Vec<(&'static str, HashMap<&'static str, Vec<Duration>>)>;

async fn run(
    args: &Args,
    env: &PodEnv,
    ctrd: &Containerd,
    targets: &mut [Target; 2],
    pause_ref: &str,
) -> anyhow::Result<(Latencies, Vec<(&'static str, MemReport)>)> {
    for t in targets.iter_mut() {
        let image = t.image.clone();
        t.pull(&image).await?;
    }
    targets[1].pull(pause_ref).await?;
    // One unmeasured round each: first-use costs (caches, lazily made directories).
    for t in targets.iter_mut() {
        t.round(0).await?;
        t.samples.clear();
    }
    for n in 1..=args.rounds {
        for t in targets.iter_mut() {
            t.round(n).await?;
        }
        eprint!(".");
    }
    eprintln!();
    let latency = targets
        .iter()
        .map(|t| (t.name, t.samples.clone()))
        .collect();

    let pvecri_pid = env.daemon.pid().context("pvecri is not running")?;
    let ctrd_pid = ctrd.pid().context("containerd is not running")?;
    let mut memory = Vec::new();
    {
        let t = &mut targets[0];
        let idle = Mem::of(&[pvecri_pid]);
        let start = Instant::now();
        let ids = t.fill(args.pods).await?;
        let fill_time = start.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut podinits = Vec::new();
        for id in &ids {
            podinits.push(t.sandbox_pid(id, "init_pid").await?);
        }
        let monitors: Vec<u32> = podinits.iter().filter_map(|&p| procs::ppid(p)).collect();
        anyhow::ensure!(
            monitors.iter().all(|&m| procs::cmdline(m)
                .first()
                .is_some_and(|c| c.starts_with("[lxc monitor]"))),
            "podinit's parent is not an LXC monitor"
        );
        anyhow::ensure!(podinits.iter().all(|&p| procs::comm(p) == "podinit"));
        memory.push((
            "pvecri",
            MemReport {
                daemon_idle: idle,
                daemon_loaded: Mem::of(&[pvecri_pid]),
                helpers: vec![
                    ("podinit", Mem::of(&podinits)),
                    ("lxc monitor", Mem::of(&monitors)),
                ],
                pods: ids.len(),
                fill_time,
            },
        ));
        t.drain(&ids).await?;
    }
    {
        let t = &mut targets[1];
        let idle = Mem::of(&[ctrd_pid]);
        let start = Instant::now();
        let ids = t.fill(args.pods).await?;
        let fill_time = start.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut pauses = Vec::new();
        for id in &ids {
            pauses.push(t.sandbox_pid(id, "pid").await?);
        }
        let shims = ctrd.shim_pids();
        anyhow::ensure!(
            shims.len() == ids.len(),
            "{} shims for {} pods",
            shims.len(),
            ids.len()
        );
        memory.push((
            "containerd",
            MemReport {
                daemon_idle: idle,
                daemon_loaded: Mem::of(&[ctrd_pid]),
                helpers: vec![
                    ("containerd-shim-runc-v2", Mem::of(&shims)),
                    ("pause (busybox sleep)", Mem::of(&pauses)),
                ],
                pods: ids.len(),
                fill_time,
            },
        ));
        t.drain(&ids).await?;
    }
    Ok((latency, memory))
}

fn version_of(program: &str, arg: &str) -> String {
    std::process::Command::new(program)
        .arg(arg)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

fn print_report(args: &Args, latency: &Latencies, memory: &[(&'static str, MemReport)]) {
    println!("## Setup\n");
    println!(
        "- pvecri: {} (podinit {})",
        e2e::daemon::binary_path()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        e2e::pods::podinit_path()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    println!("- {}", version_of("containerd", "--version"));
    println!("- {}", version_of("runc", "--version"));
    println!("- {}", version_of("uname", "-srm"));
    println!(
        "- {} CPUs\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "## Latency, {} rounds (pvecri store: {}; containerd: overlayfs)\n",
        args.rounds,
        args.store.label()
    );
    println!(
        "| phase | pvecri median | pvecri p95 | containerd median | containerd p95 | median ratio (pvecri/containerd) |"
    );
    println!("|---|---|---|---|---|---|");
    for phase in PHASES {
        let stats: Vec<(Duration, Duration)> = latency
            .iter()
            .map(|(_, s)| {
                let mut v = s.get(phase).cloned().unwrap_or_default();
                v.sort();
                (percentile(&v, 50.0), percentile(&v, 95.0))
            })
            .collect();
        println!(
            "| {phase} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} |",
            ms(stats[0].0),
            ms(stats[0].1),
            ms(stats[1].0),
            ms(stats[1].1),
            ms(stats[0].0) / ms(stats[1].0)
        );
    }
    println!(
        "\n## Memory with {} pods (one `sleep` container each)\n",
        args.pods
    );
    println!("| runtime | what | RSS | PSS |");
    println!("|---|---|---|---|");
    let mib = |k: u64| k as f64 / 1024.0;
    let mut per_pod = Vec::new();
    for (name, m) in memory {
        println!(
            "| {name} | daemon, idle | {:.1} MiB | {:.1} MiB |",
            mib(m.daemon_idle.rss),
            mib(m.daemon_idle.pss)
        );
        println!(
            "| {name} | daemon, {} pods | {:.1} MiB | {:.1} MiB |",
            m.pods,
            mib(m.daemon_loaded.rss),
            mib(m.daemon_loaded.pss)
        );
        let mut total = Mem::default();
        for (what, mem) in &m.helpers {
            let n = m.pods.max(1) as u64;
            println!(
                "| {name} | {what}, per pod | {:.0} KiB | {:.0} KiB |",
                mem.rss / n,
                mem.pss / n
            );
            total.rss += mem.rss / n;
            total.pss += mem.pss / n;
        }
        println!(
            "| {name} | **per pod, all helpers** | **{} KiB** | **{} KiB** |",
            total.rss, total.pss
        );
        per_pod.push((name, total, m));
    }
    if let [(_, p, pm), (_, c, cm)] = per_pod.as_slice() {
        println!(
            "\nRatios pvecri/containerd: per-pod RSS {:.2}, per-pod PSS {:.2}, daemon RSS with pods {:.2}.",
            p.rss as f64 / c.rss as f64,
            p.pss as f64 / c.pss as f64,
            pm.daemon_loaded.rss as f64 / cm.daemon_loaded.rss as f64
        );
        println!(
            "Starting the {} pods one after the other took {:.2} s (pvecri) and {:.2} s (containerd).",
            pm.pods,
            pm.fill_time.as_secs_f64(),
            cm.fill_time.as_secs_f64()
        );
    }
}
