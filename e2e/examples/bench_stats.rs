//! What the kubelet's stats polling costs the runtime: the daemon's memory idle and with
//! `--pods` running pods, and the CPU it spends while a simulated kubelet calls
//! ListPodSandboxStats and ListContainerStats every 10 s, next to the same window without
//! polling; pvecri next to containerd 1.6 with runc, one after the other, on the same machine.
//!
//! ```sh
//! apt-get install containerd runc
//! cargo build --release -p cri && scripts/build-podinit
//! flock /var/tmp/pvecri-bench.lock flock /var/tmp/pvecri-containerd.lock \
//!   cargo run --release -p e2e --example bench_stats -- [--pods 100] [--window 60]
//! ```
//!
//! CPU is utime + stime from `/proc/<pid>/stat`, of the daemon alone and of the daemon with
//! what serves each pod (pvecri: podinit and the CT's LXC monitor; containerd: the shims,
//! which answer its task metrics), in percent of one core. Every pod is removed at the end,
//! also when the run fails. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::cni::{CNI_BIN_DIR, NetworkOptions, TestNetwork};
use e2e::containerd::{Containerd, ContainerdOptions};
use e2e::cri_client::{ImageClient, RuntimeClient};
use e2e::images::{self, Compression, ImageFormat, TestImage};
use e2e::pods::{PodEnv, PodEnvOptions, Store, container_config};
use e2e::procs;
use k8s_cri::v1::{
    CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig, ListContainerStatsRequest,
    ListPodSandboxStatsRequest, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    PullImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};

const POLL: Duration = Duration::from_secs(10);

struct Args {
    pods: usize,
    window: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        pods: 100,
        window: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--pods" => a.pods = value()?.parse()?,
            "--window" => a.window = value()?.parse()?,
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    Ok(a)
}

struct Target {
    name: &'static str,
    rt: RuntimeClient,
    images: ImageClient,
    image: String,
    log_root: PathBuf,
    cgroup_top: String,
    pods: Vec<String>,
}

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

    /// `n` pods with a `sleep` container each.
    async fn fill(&mut self, n: usize) -> anyhow::Result<()> {
        for i in 0..n {
            let pod = self.pod_config(&format!("stats-{i}"));
            let id = self
                .rt
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(pod.clone()),
                    runtime_handler: String::new(),
                })
                .await
                .with_context(|| format!("{}: RunPodSandbox {i}", self.name))?
                .into_inner()
                .pod_sandbox_id;
            self.pods.push(id.clone());
            let cfg = container_config("c", &self.image, &["sleep", "36000"]);
            let cid = self
                .rt
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: id.clone(),
                    config: Some(cfg),
                    sandbox_config: Some(pod),
                })
                .await?
                .into_inner()
                .container_id;
            self.rt
                .start_container(StartContainerRequest { container_id: cid })
                .await?;
            if i % 10 == 9 {
                eprint!("{} ", i + 1);
            }
        }
        eprintln!();
        Ok(())
    }

    /// Removes every pod made, also after a failure half way.
    async fn drain(&mut self) {
        for id in std::mem::take(&mut self.pods) {
            let _ = self
                .rt
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await;
            if let Err(e) = self
                .rt
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
            {
                eprintln!("{}: removing pod {id}: {e}", self.name);
            }
        }
    }

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

    /// One kubelet stats round; returns its latency and how many containers it reported.
    async fn poll(&mut self) -> anyhow::Result<(Duration, usize)> {
        let t = Instant::now();
        let pods = self
            .rt
            .list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
            .await
            .with_context(|| format!("{}: ListPodSandboxStats", self.name))?
            .into_inner()
            .stats;
        let ctrs = self
            .rt
            .list_container_stats(ListContainerStatsRequest { filter: None })
            .await
            .with_context(|| format!("{}: ListContainerStats", self.name))?
            .into_inner()
            .stats;
        anyhow::ensure!(
            pods.len() >= self.pods.len(),
            "{}: {} pod stats for {} pods",
            self.name,
            pods.len(),
            self.pods.len()
        );
        Ok((t.elapsed(), ctrs.len()))
    }
}

/// utime + stime of `pids`, in clock ticks.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            // Fields after the command, which is in parentheses and may hold spaces.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

struct Report {
    name: &'static str,
    rss_idle_kib: u64,
    rss_loaded_kib: u64,
    pods: usize,
    fill: Duration,
    /// Percent of one core: (daemon, daemon + per-pod helpers), without and with polling.
    idle_cpu: (f64, f64),
    poll_cpu: (f64, f64),
    poll_latency: Vec<Duration>,
    containers_reported: usize,
}

/// CPU of the daemon and of the daemon with its helpers since `start`.
struct Meter {
    daemon: u32,
    all: Vec<u32>,
    d0: u64,
    a0: u64,
    t0: Instant,
}

impl Meter {
    fn start(daemon: u32, helpers: &[u32]) -> Meter {
        let all: Vec<u32> = std::iter::once(daemon)
            .chain(helpers.iter().copied())
            .collect();
        Meter {
            daemon,
            d0: cpu_ticks(&[daemon]),
            a0: cpu_ticks(&all),
            all,
            t0: Instant::now(),
        }
    }

    /// Percent of one core: (daemon, daemon + helpers).
    fn finish(&self) -> (f64, f64) {
        let secs = self.t0.elapsed().as_secs_f64();
        let pct = |ticks: u64| ticks as f64 / ticks_per_sec() / secs * 100.0;
        (
            pct(cpu_ticks(&[self.daemon]).saturating_sub(self.d0)),
            pct(cpu_ticks(&self.all).saturating_sub(self.a0)),
        )
    }
}

async fn bench_one(
    t: &mut Target,
    args: &Args,
    daemon: u32,
    helpers_of: impl AsyncFnOnce(&mut Target) -> anyhow::Result<Vec<u32>>,
) -> anyhow::Result<Report> {
    let image = t.image.clone();
    t.pull(&image).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle_kib = procs::rss_kib(daemon).unwrap_or(0);
    let start = Instant::now();
    t.fill(args.pods).await?;
    let fill = start.elapsed();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_loaded_kib = procs::rss_kib(daemon).unwrap_or(0);
    let helpers = helpers_of(t).await?;
    let window = Duration::from_secs(args.window);
    eprintln!("{}: {} pods up; measuring idle", t.name, args.pods);
    let m = Meter::start(daemon, &helpers);
    tokio::time::sleep(window).await;
    let idle_cpu = m.finish();
    eprintln!("{}: measuring with polling every {POLL:?}", t.name);
    let mut latencies = Vec::new();
    let mut reported = 0;
    // One round first: the first readings carry no rate yet.
    t.poll().await?;
    let m = Meter::start(daemon, &helpers);
    let mut next = Instant::now();
    while m.t0.elapsed() + POLL <= window + Duration::from_millis(10) {
        tokio::time::sleep(next.saturating_duration_since(Instant::now())).await;
        next += POLL;
        let (lat, n) = t.poll().await?;
        latencies.push(lat);
        reported = n;
    }
    tokio::time::sleep(window.saturating_sub(m.t0.elapsed())).await;
    let poll_cpu = m.finish();
    Ok(Report {
        name: t.name,
        rss_idle_kib,
        rss_loaded_kib,
        pods: args.pods,
        fill,
        idle_cpu,
        poll_cpu,
        poll_latency: latencies,
        containers_reported: reported,
    })
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

fn cleanup_cgroups(top: &str) {
    fn remove_tree(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    if let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") {
        for r in roots.flatten() {
            let dir = r.path().join(top);
            if dir.is_dir() {
                remove_tree(&dir);
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    e2e::bench::run_against_release_daemon(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let cgroup_top = format!("pvecri-bench-{:08x}", rand::random::<u32>());
    let mut reports = Vec::new();
    {
        let env = PodEnv::start_with(
            Store::Overlay,
            PodEnvOptions {
                log_level: Some("info".into()),
                ..Default::default()
            },
        )
        .await?;
        let logs = tempfile::Builder::new().prefix("bench-logs-").tempdir()?;
        let mut t = Target {
            name: "pvecri",
            rt: env.rt().await?,
            images: env.daemon.image_client().await?,
            image: env.images.one_layer.clone(),
            log_root: logs.path().to_path_buf(),
            cgroup_top: format!("{cgroup_top}-p"),
            pods: Vec::new(),
        };
        let pid = env.daemon.pid().context("pvecri is not running")?;
        let r = bench_one(&mut t, &args, pid, async |t: &mut Target| {
            let mut helpers = Vec::new();
            for id in t.pods.clone() {
                let init = t.sandbox_pid(&id, "init_pid").await?;
                helpers.push(init);
                helpers.extend(procs::ppid(init));
            }
            Ok(helpers)
        })
        .await;
        t.drain().await;
        drop(env);
        cleanup_cgroups(&t.cgroup_top);
        reports.push(r?);
    }
    {
        let env = PodEnv::start_with(
            Store::Overlay,
            PodEnvOptions {
                log_level: Some("warn".into()),
                ..Default::default()
            },
        )
        .await?;
        let pause = pause_image()?;
        pause.push(&env.registry, "pause", "latest").await?;
        let pause_ref = format!("{}/pause:latest", env.registry.addr());
        let net = TestNetwork::new(NetworkOptions::default())?;
        let ctrd = Containerd::start(&ContainerdOptions {
            sandbox_image: pause_ref.clone(),
            registry: env.registry.addr(),
            cni_conf_dir: net.conf_dir().to_path_buf(),
            cni_bin_dir: PathBuf::from(CNI_BIN_DIR),
        })?;
        let logs = tempfile::Builder::new().prefix("bench-logs-").tempdir()?;
        let mut t = Target {
            name: "containerd",
            rt: ctrd.runtime_client().await?,
            images: ctrd.ready_image_client().await?,
            image: env.images.one_layer.clone(),
            log_root: logs.path().to_path_buf(),
            cgroup_top: format!("{cgroup_top}-c"),
            pods: Vec::new(),
        };
        t.pull(&pause_ref).await?;
        let pid = ctrd.pid().context("containerd is not running")?;
        let shims = || ctrd.shim_pids();
        let r = bench_one(&mut t, &args, pid, async |_t: &mut Target| Ok(shims())).await;
        t.drain().await;
        drop(ctrd);
        cleanup_cgroups(&t.cgroup_top);
        reports.push(r?);
    }
    print_report(&args, &reports);
    Ok(())
}

fn print_report(args: &Args, reports: &[Report]) {
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "## Stats polling with {} pods ({} s windows, ListPodSandboxStats + ListContainerStats every {} s)\n",
        args.pods,
        args.window,
        POLL.as_secs()
    );
    println!(
        "| runtime | daemon RSS idle | daemon RSS, {} pods | CPU idle (daemon / +helpers) | CPU polled (daemon / +helpers) | polling cost (daemon / +helpers) | poll latency (max) | pods started in |",
        args.pods
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in reports {
        let max = r.poll_latency.iter().max().copied().unwrap_or_default();
        println!(
            "| {} | {:.1} MiB | {:.1} MiB | {:.2}% / {:.2}% | {:.2}% / {:.2}% | {:.2}% / {:.2}% | {:.0} ms | {:.1} s |",
            r.name,
            mib(r.rss_idle_kib),
            mib(r.rss_loaded_kib),
            r.idle_cpu.0,
            r.idle_cpu.1,
            r.poll_cpu.0,
            r.poll_cpu.1,
            r.poll_cpu.0 - r.idle_cpu.0,
            r.poll_cpu.1 - r.idle_cpu.1,
            max.as_secs_f64() * 1000.0,
            r.fill.as_secs_f64()
        );
        eprintln!(
            "{}: {} containers in the last ListContainerStats; {} pods",
            r.name, r.containers_reported, r.pods
        );
    }
}
