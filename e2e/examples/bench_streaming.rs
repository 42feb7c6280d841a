//! Streaming: `crictl exec <ctr> true` latency and `crictl port-forward` throughput, pvecri
//! (overlay store) next to Debian's containerd 1.6 with runc, on the same machine, through
//! the same crictl.
//!
//! ```sh
//! apt-get install containerd runc
//! cargo build --release -p cri && scripts/build-podinit
//! flock /var/tmp/pvecri-bench.lock flock /var/tmp/pvecri-containerd.lock \
//!   cargo run --release -p e2e --example bench_streaming -- [--execs 50] [--mib 200] [--rounds 3]
//! ```
//!
//! Both runtimes run at once, each with a pod of two busybox containers (`sleep`, and
//! `httpd` serving `--mib` MiB of random bytes), and the measurements alternate between
//! them, so that load from elsewhere on the machine falls on both alike:
//! - exec: `--execs` runs of `crictl exec <ctr> true` per runtime and transport (SPDY, the
//!   default, and `-r websocket`), after 3 unmeasured ones; the wall time of each crictl
//!   process (its own start, the Exec RPC, the upgrade, the process, the exit status).
//! - port-forward: `--rounds` HTTP GETs of the file through `crictl port-forward` (SPDY and
//!   `--transport websocket`), one port-forward per GET; every byte is counted and the
//!   SHA-256 compared. The time runs from the request to the last byte.
//!
//! A transport a runtime does not serve is reported as such (with crictl's error), not
//! as a number. Every pod is removed at the end, also when the run fails. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use e2e::cni::{CNI_BIN_DIR, NetworkOptions, TestNetwork};
use e2e::containerd::{Containerd, ContainerdOptions};
use e2e::cri_client::{ImageClient, RuntimeClient};
use e2e::images::{self, Compression, ImageFormat, TestImage};
use e2e::pods::{
    PodEnv, PodEnvOptions, Store, container_config, exec_ok, sh, wait_container_state,
};
use e2e::streaming::{PortForward, crictl, http_get, run_with_input};
use k8s_cri::v1::{
    ContainerState, CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig, PodSandboxConfig,
    PullImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};
use sha2::Digest;

const WEB_PORT: u16 = 8080;
const WARMUP: usize = 3;

struct Args {
    execs: usize,
    mib: usize,
    rounds: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        execs: 50,
        mib: 200,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--execs" => a.execs = value()?.parse()?,
            "--mib" => a.mib = value()?.parse()?,
            "--rounds" => a.rounds = value()?.parse()?,
            other => bail!("unknown argument {other:?}"),
        }
    }
    anyhow::ensure!(
        a.execs > 0 && a.mib > 0 && a.rounds > 0,
        "counts must be positive"
    );
    Ok(a)
}

/// One runtime with its pod.
struct Side {
    name: &'static str,
    socket: PathBuf,
    rt: RuntimeClient,
    pod_id: String,
    /// The `sleep` container exec'd into.
    sleeper: String,
    /// SHA-256 of the file httpd serves.
    sha: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Spdy,
    WebSocket,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Spdy => "SPDY",
            Transport::WebSocket => "WebSocket",
        }
    }
}

const TRANSPORTS: [Transport; 2] = [Transport::Spdy, Transport::WebSocket];

/// Creates the pod (`pod` config from the caller), its two containers, and the file.
async fn make_pod(
    name: &'static str,
    socket: &Path,
    mut rt: RuntimeClient,
    pod: PodSandboxConfig,
    image: &str,
    mib: usize,
    pods: &mut Vec<String>,
) -> anyhow::Result<Side> {
    let pod_id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .with_context(|| format!("{name}: RunPodSandbox"))?
        .into_inner()
        .pod_sandbox_id;
    pods.push(pod_id.clone());
    let sleeper_cfg = container_config("sleeper", image, &["sleep", "36000"]);
    let mut web_cfg = container_config("web", image, &[]);
    web_cfg.command = sh(&format!(
        "mkdir -p /www && exec httpd -f -p {WEB_PORT} -h /www"
    ));
    let mut ids = Vec::new();
    for cfg in [sleeper_cfg, web_cfg] {
        let id = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(cfg),
                sandbox_config: Some(pod.clone()),
            })
            .await
            .with_context(|| format!("{name}: CreateContainer"))?
            .into_inner()
            .container_id;
        rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .with_context(|| format!("{name}: StartContainer"))?;
        wait_container_state(
            &mut rt,
            &id,
            ContainerState::ContainerRunning,
            Duration::from_secs(60),
        )
        .await?;
        ids.push(id);
    }
    let sha = exec_ok(
        &mut rt,
        &ids[1],
        &format!(
            "head -c {} /dev/urandom > /www/big && sha256sum /www/big",
            mib << 20
        ),
    )
    .await
    .with_context(|| format!("{name}: writing the file to serve"))?;
    let sha = sha
        .split_whitespace()
        .next()
        .context("no sha256sum output")?
        .to_string();
    Ok(Side {
        name,
        socket: socket.to_path_buf(),
        rt,
        pod_id,
        sleeper: ids[0].clone(),
        sha,
    })
}

/// One `crictl exec <sleeper> true`; its wall time.
fn exec_once(side: &Side, transport: Transport) -> anyhow::Result<Duration> {
    let mut cmd = crictl(&side.socket)?;
    cmd.arg("exec");
    if transport == Transport::WebSocket {
        cmd.args(["-r", "websocket"]);
    }
    cmd.args([side.sleeper.as_str(), "true"]);
    let t0 = Instant::now();
    let (code, out, err) = run_with_input(cmd, b"")?;
    let took = t0.elapsed();
    if code != 0 {
        // crictl's warning about its missing config file is not the reason.
        let why: Vec<&str> = err
            .lines()
            .filter(|l| !(l.starts_with("time=") && l.contains("level=warning")))
            .collect();
        bail!(
            "{} {}: crictl exec exited {code}: {}{}",
            side.name,
            transport.label(),
            out.trim(),
            why.join(" ").trim()
        );
    }
    Ok(took)
}

/// One GET of the file through a fresh `crictl port-forward`; MiB/s.
fn forward_once(side: &Side, transport: Transport, mib: usize) -> anyhow::Result<f64> {
    let pf = PortForward::start(
        &side.socket,
        &side.pod_id,
        WEB_PORT,
        transport == Transport::WebSocket,
    )
    .with_context(|| format!("{} {}", side.name, transport.label()))?;
    let t0 = Instant::now();
    let (status, body) = http_get(pf.local_port, "/big").with_context(|| {
        format!(
            "{} {}: GET through the port-forward",
            side.name,
            transport.label()
        )
    })?;
    let secs = t0.elapsed().as_secs_f64();
    drop(pf);
    if !status.contains("200") || body.len() != mib << 20 {
        bail!(
            "{} {}: {status}, {} of {} bytes",
            side.name,
            transport.label(),
            body.len(),
            mib << 20
        );
    }
    if hex::encode(sha2::Sha256::digest(&body)) != side.sha {
        bail!("{} {}: the bytes differ", side.name, transport.label());
    }
    Ok(mib as f64 / secs)
}

/// What one runtime got over one transport: samples, or why there are none.
struct Series<T> {
    samples: Vec<T>,
    failure: Option<String>,
}

impl<T> Default for Series<T> {
    fn default() -> Self {
        Series {
            samples: Vec::new(),
            failure: None,
        }
    }
}

impl<T> Series<T> {
    /// The table cell of a failed series: not served at all, or broken after some runs.
    fn failed(&self) -> Option<String> {
        let f = self.failure.as_deref()?;
        // crictl's reason, without the container ID before it.
        let f = first_line(f.find("unable to").map_or(f, |i| &f[i..]));
        Some(if self.samples.is_empty() {
            format!("not served ({f})")
        } else {
            format!("failed after {} runs ({f})", self.samples.len())
        })
    }

    /// Runs `f` unless this series failed before; records its result.
    fn record(&mut self, f: impl FnOnce() -> anyhow::Result<T>) {
        if self.failure.is_some() {
            return;
        }
        match f() {
            Ok(v) => self.samples.push(v),
            Err(e) => {
                let e = format!("{e:#}");
                eprintln!("  {e}");
                self.failure = Some(e);
            }
        }
    }
}

fn pct<T: Copy + PartialOrd>(sorted: &[T], p: f64) -> T {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn exec_cell(s: &Series<Duration>) -> String {
    if let Some(cell) = s.failed() {
        return cell;
    }
    let mut v = s.samples.clone();
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{:.1} ms (p10 {:.1}, p90 {:.1}, max {:.1})",
        ms(pct(&v, 0.5)),
        ms(pct(&v, 0.1)),
        ms(pct(&v, 0.9)),
        ms(v[v.len() - 1])
    )
}

fn forward_cell(s: &Series<f64>) -> String {
    if let Some(cell) = s.failed() {
        return cell;
    }
    let mut v = s.samples.clone();
    v.sort_by(f64::total_cmp);
    format!(
        "{:.0} MiB/s (min {:.0}, max {:.0})",
        pct(&v, 0.5),
        v[0],
        v[v.len() - 1]
    )
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    let line: String = line.chars().take(160).collect();
    line.trim_end_matches('"').replace('|', "/")
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

async fn pull(images: &mut ImageClient, name: &str, image: &str) -> anyhow::Result<()> {
    images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .with_context(|| format!("{name}: pulling {image}"))?;
    Ok(())
}

/// Stops and removes the pods made, also after a failure half way.
async fn drain(rt: &mut RuntimeClient, name: &str, pods: &mut Vec<String>) {
    for id in std::mem::take(pods) {
        let _ = rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await;
        if let Err(e) = rt
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
        {
            eprintln!("{name}: removing pod {id}: {e}");
        }
    }
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
    let env = PodEnv::start_with(
        Store::Overlay,
        PodEnvOptions {
            log_level: Some("info".into()),
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
    let cgroup_top = format!("pvecri-bench-{:08x}", rand::random::<u32>());
    let image = env.images.one_layer.clone();

    let mut p_pods = Vec::new();
    let mut c_pods = Vec::new();
    let mut p_rt = env.rt().await?;
    let mut c_rt = ctrd.runtime_client().await?;
    let result = async {
        env.pull(&image).await?;
        let mut c_images = ctrd.ready_image_client().await?;
        pull(&mut c_images, "containerd", &pause_ref).await?;
        pull(&mut c_images, "containerd", &image).await?;

        let p_side = make_pod(
            "pvecri",
            &env.daemon.socket,
            p_rt.clone(),
            env.pod_config("stream-bench"),
            &image,
            args.mib,
            &mut p_pods,
        )
        .await?;
        let mut c_pod = env.pod_config("stream-bench");
        let uid = c_pod
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default();
        c_pod.linux = Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/{cgroup_top}/pod{uid}"),
            ..Default::default()
        });
        let c_side = make_pod(
            "containerd",
            &ctrd.socket,
            c_rt.clone(),
            c_pod,
            &image,
            args.mib,
            &mut c_pods,
        )
        .await?;
        measure(&args, [&p_side, &c_side]).await
    }
    .await;
    drain(&mut p_rt, "pvecri", &mut p_pods).await;
    drain(&mut c_rt, "containerd", &mut c_pods).await;
    drop(ctrd);
    cleanup_cgroups(&cgroup_top);
    drop(env);
    result
}

async fn measure(args: &Args, sides: [&Side; 2]) -> anyhow::Result<()> {
    let load_before = e2e::bench::loadavg();
    // [side][transport]
    let mut execs: [[Series<Duration>; 2]; 2] = Default::default();
    let mut forwards: [[Series<f64>; 2]; 2] = Default::default();
    for (ti, &t) in TRANSPORTS.iter().enumerate() {
        eprintln!(
            "exec over {}: {} per runtime, alternating",
            t.label(),
            args.execs
        );
        for _ in 0..WARMUP + args.execs {
            for (si, side) in sides.iter().enumerate() {
                let side: &Side = side;
                let series = &mut execs[si][ti];
                tokio::task::block_in_place(|| series.record(|| exec_once(side, t)));
            }
        }
        for side in &mut execs {
            let s = &mut side[ti];
            let warm = WARMUP.min(s.samples.len());
            s.samples.drain(..warm);
            if s.samples.is_empty() && s.failure.is_none() {
                s.failure = Some("no samples".into());
            }
        }
    }
    for (ti, &t) in TRANSPORTS.iter().enumerate() {
        eprintln!(
            "port-forward over {}: {} x {} MiB per runtime, alternating",
            t.label(),
            args.rounds,
            args.mib
        );
        for _ in 0..args.rounds {
            for (si, side) in sides.iter().enumerate() {
                let side: &Side = side;
                tokio::task::block_in_place(|| {
                    forwards[si][ti].record(|| forward_once(side, t, args.mib))
                });
            }
        }
    }
    // The pods must still be there and their containers running: a number from a pod
    // that broke half way would mean nothing.
    for side in sides {
        let mut rt = side.rt.clone();
        exec_ok(&mut rt, &side.sleeper, "true")
            .await
            .with_context(|| format!("{}: the pod after the run", side.name))?;
    }
    let load_after = e2e::bench::loadavg();

    println!(
        "## Streaming: `crictl exec <ctr> true` (median of {} after {WARMUP} warm-up) and `crictl port-forward` (GET of {} MiB, {} rounds)\n",
        args.execs, args.mib, args.rounds
    );
    println!(
        "| runtime | exec, SPDY | exec, WebSocket | port-forward, SPDY | port-forward, WebSocket |"
    );
    println!("|---|---|---|---|---|");
    for (si, side) in sides.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {} |",
            side.name,
            exec_cell(&execs[si][0]),
            exec_cell(&execs[si][1]),
            forward_cell(&forwards[si][0]),
            forward_cell(&forwards[si][1]),
        );
    }
    println!("\nload average before / after: {load_before} / {load_after}");
    Ok(())
}
