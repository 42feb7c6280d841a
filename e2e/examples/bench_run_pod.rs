//! RunPodSandbox latency as the kubelet sees it: the `pve` driver (Proxmox CTs through the
//! pve-harness, cold and from the warm pool), the `lxc` driver (cold and warm), and
//! containerd 1.6 with runc, in the same run, driven by the same CRI client code.
//!
//! ```sh
//! apt-get install containerd runc
//! cargo build --release -p cri && scripts/build-podinit
//! flock /var/tmp/pvecri-bench.lock flock /var/tmp/pvecri-containerd.lock \
//!   cargo run --release -p e2e --example bench_run_pod -- [--rounds 20]
//! ```
//!
//! Each round runs one pod on every target in turn (the order rotates), then stops and
//! removes it (not timed). A warm target is timed with its pool full, as a node that starts
//! pods slower than the pool refills sees it; the pool's refill is not timed. Pods have an
//! isolated network (CNI bridge) and no containers. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::cni::{CNI_BIN_DIR, NetworkOptions, TestNetwork};
use e2e::containerd::{Containerd, ContainerdOptions};
use e2e::cri_client::RuntimeClient;
use e2e::images::{self, Compression, ImageFormat, TestImage};
use e2e::pods::{PodEnv, PodEnvOptions, Setup, Store};
use k8s_cri::v1::{
    ImageSpec, LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata, PullImageRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
};

struct Target {
    name: &'static str,
    rt: RuntimeClient,
    env: Option<PodEnv>,
    warm: bool,
    log_root: PathBuf,
    samples: Vec<Duration>,
}

fn pod_config(log_root: &Path, name: &str) -> PodSandboxConfig {
    let uid = format!("{:016x}", rand::random::<u64>());
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "bench".into(),
            uid: uid.clone(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_root
            .join(format!("bench_{name}_{uid}"))
            .display()
            .to_string(),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

impl Target {
    async fn round(&mut self, n: usize) -> anyhow::Result<()> {
        if self.warm
            && let Some(env) = &self.env
        {
            let size = env.warm_pool().await?["size"].as_u64().unwrap_or(1);
            env.wait_warm_ready(size, Duration::from_secs(120)).await?;
        }
        let pod = pod_config(&self.log_root, &format!("r{n}"));
        let t = Instant::now();
        let id = self
            .rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod),
                runtime_handler: String::new(),
            })
            .await
            .with_context(|| format!("{}: RunPodSandbox", self.name))?
            .into_inner()
            .pod_sandbox_id;
        let took = t.elapsed();
        self.rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
        self.rt
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await?;
        if n > 0 {
            self.samples.push(took);
        }
        Ok(())
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let mut rounds = 20;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().context("--rounds N")?.parse()?,
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    e2e::bench::run_against_release_daemon(bench(rounds))
}

async fn bench(rounds: usize) -> anyhow::Result<()> {
    let logs = tempfile::Builder::new().prefix("bench-logs-").tempdir()?;
    let mut targets = Vec::new();
    for (name, setup, warm) in [
        ("lxc cold", Setup::from(Store::Overlay), 0),
        ("lxc warm", Setup::from(Store::Overlay), 1),
        ("pve cold", Setup::pve(), 0),
        ("pve warm", Setup::pve(), 1),
    ] {
        let env = PodEnv::start_with(
            setup,
            PodEnvOptions {
                log_level: Some("info".into()),
                warm_pool: warm,
                ..Default::default()
            },
        )
        .await?;
        targets.push(Target {
            name,
            rt: env.rt().await?,
            env: Some(env),
            warm: warm > 0,
            log_root: logs.path().join(name.replace(' ', "-")),
            samples: Vec::new(),
        });
    }
    let registry = &targets[0].env.as_ref().context("env")?.registry;
    let pause = pause_image()?;
    pause.push(registry, "pause", "latest").await?;
    let pause_ref = format!("{}/pause:latest", registry.addr());
    let ctrd_net = TestNetwork::new(NetworkOptions::default())?;
    let ctrd = Containerd::start(&ContainerdOptions {
        sandbox_image: pause_ref.clone(),
        registry: registry.addr(),
        cni_conf_dir: ctrd_net.conf_dir().to_path_buf(),
        cni_bin_dir: PathBuf::from(CNI_BIN_DIR),
    })?;
    ctrd.image_client()
        .await?
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: pause_ref.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    targets.push(Target {
        name: "containerd 1.6",
        rt: ctrd.runtime_client().await?,
        env: None,
        warm: false,
        log_root: logs.path().join("containerd"),
        samples: Vec::new(),
    });
    // Round 0 is not counted: first-use costs (the pve template upload, caches).
    for n in 0..=rounds {
        let k = targets.len();
        for i in 0..k {
            targets[(n + i) % k].round(n).await?;
        }
        eprint!(".");
    }
    eprintln!();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "RunPodSandbox, {rounds} rounds (isolated network, no containers); load average at the end: {}",
        load.trim()
    );
    println!();
    println!("| target | median | p95 | min | max |");
    println!("|---|---|---|---|---|");
    for t in &targets {
        let mut s = t.samples.clone();
        s.sort();
        println!(
            "| {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
            t.name,
            ms(percentile(&s, 50.0)),
            ms(percentile(&s, 95.0)),
            ms(s.first().copied().unwrap_or_default()),
            ms(s.last().copied().unwrap_or_default()),
        );
    }
    for t in &targets {
        if let Some(env) = &t.env
            && t.warm
        {
            println!("{}: pool {}", t.name, env.warm_pool().await?);
        }
    }
    Ok(())
}
