//! Benchmark: PullImage of the large test image (busybox + 4 layers, ~158 MB gzip, ~330 MB
//! unpacked) from a local registry, cold store each time, with pvecri on the overlay
//! store, pvecri on the zfs store (a scratch dataset of the zfs-fuse test pool), and
//! Debian's containerd 1.6 (CRI plugin, overlayfs snapshotter), all through the same
//! k8s-cri ImageService client.
//!
//! Every run gets fresh directories (and a fresh dataset); nothing is deleted until all
//! rounds are done, because file creation on this machine is several times slower for
//! minutes after a big delete. The order of the three rotates from round to round.
//!
//! `scripts/bench-pull [ROUNDS]` builds release binaries and runs this; by hand:
//! `cargo build --release -p cri && PVECRI_BIN=target/release/pvecri cargo run --release
//! -p e2e --example bench_pull -- 5`.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use e2e::cni::CNI_BIN_DIR;
use e2e::containerd::{Containerd, ContainerdOptions};
use e2e::cri_client::ImageClient;
use e2e::daemon::{Daemon, DaemonOptions, binary_path};
use e2e::images;
use e2e::registry::{Registry, RegistryOptions};
use e2e::zfs::{ScratchDataset, TestPool};
use k8s_cri::v1::{ImageSpec, PullImageRequest};

const CONTAINERD: &str = "/usr/bin/containerd";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    PvecriOverlay,
    PvecriZfs,
    Containerd,
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            System::PvecriOverlay => "pvecri-overlay",
            System::PvecriZfs => "pvecri-zfs",
            System::Containerd => "containerd",
        })
    }
}

const SYSTEMS: [System; 3] = [System::PvecriOverlay, System::PvecriZfs, System::Containerd];

/// What the runs leave until the end: removing it right away would slow the next runs.
/// Dropped in field order: daemons (stopped already) before the datasets they used.
#[derive(Default)]
struct Leftovers {
    daemons: Vec<Daemon>,
    containerds: Vec<Containerd>,
    datasets: Vec<ScratchDataset>,
    dirs: Vec<tempfile::TempDir>,
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().context("usage: bench_pull [ROUNDS]")?,
        None => 5,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(rounds))
}

async fn run(rounds: usize) -> anyhow::Result<()> {
    let pvecri = binary_path()?;
    println!("pvecri binary: {}", pvecri.display());
    if !pvecri.to_string_lossy().contains("release") {
        println!("warning: not a release build; set PVECRI_BIN=target/release/pvecri");
    }
    println!("{}", version(CONTAINERD, &["--version"])?);

    let registry = Registry::start(RegistryOptions::default())?;
    let large = images::large_image()?;
    large.push(&registry, "large", "1").await?;
    let name = format!("{}/large:1", registry.addr());
    let compressed: u64 = large.layers.iter().map(|l| l.size).sum();
    let unpacked: u64 = large
        .layers
        .iter()
        .flat_map(|l| &l.entries)
        .map(|e| e.size())
        .sum();
    println!(
        "image {name}: {} layers, {:.1} MB compressed",
        large.layers.len(),
        compressed as f64 / 1e6
    );
    // The registry serves from the page cache for every run, the first included.
    warm_page_cache(&registry.storage_dir())?;
    let pool = TestPool::shared()?;

    let mut leftovers = Leftovers::default();
    let mut times: Vec<(System, Vec<f64>)> = SYSTEMS.iter().map(|s| (*s, Vec::new())).collect();
    for round in 0..rounds {
        for k in 0..SYSTEMS.len() {
            let system = SYSTEMS[(round + k) % SYSTEMS.len()];
            let (secs, id, stored) = match system {
                System::PvecriOverlay => pull_pvecri(&name, None, &mut leftovers).await?,
                System::PvecriZfs => {
                    let scratch = pool.scratch("bench")?;
                    let dataset = format!("{}/store", scratch.name);
                    leftovers.datasets.push(scratch);
                    pull_pvecri(&name, Some(&dataset), &mut leftovers).await?
                }
                System::Containerd => pull_containerd(&registry, &name, &mut leftovers).await?,
            };
            if id != large.config_digest {
                bail!("{system} pulled {id}, expected {}", large.config_digest);
            }
            // The image is unpacked, not only fetched: its files are on disk.
            if stored < unpacked / 2 {
                bail!("{system} stored {stored} bytes of an image of {unpacked}");
            }
            println!(
                "round {}: {system:15} {secs:6.2} s  ({:.0} MB unpacked in the store)",
                round + 1,
                stored as f64 / 1e6
            );
            if let Some((_, t)) = times.iter_mut().find(|(s, _)| *s == system) {
                t.push(secs);
            }
        }
    }

    println!(
        "\nmedian of {rounds} cold pulls ({:.1} MB compressed):",
        compressed as f64 / 1e6
    );
    let mut medians = Vec::new();
    for (system, t) in &times {
        let m = median(t);
        medians.push((*system, m));
        let all: Vec<String> = t.iter().map(|x| format!("{x:.2}")).collect();
        println!(
            "  {system:15} {m:6.2} s  ({:.0} MB/s)  runs: {}",
            compressed as f64 / 1e6 / m,
            all.join(" ")
        );
    }
    let of = |s: System| medians.iter().find(|(x, _)| *x == s).map(|(_, m)| *m);
    if let (Some(c), Some(o), Some(z)) = (
        of(System::Containerd),
        of(System::PvecriOverlay),
        of(System::PvecriZfs),
    ) {
        println!("  containerd / pvecri-overlay = {:.2}", c / o);
        println!("  containerd / pvecri-zfs     = {:.2}", c / z);
    }
    println!("\nremoving the stores");
    drop(leftovers);
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn version(binary: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(binary)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {binary} (Debian package containerd)"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn warm_page_cache(dir: &Path) -> anyhow::Result<()> {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else {
                std::io::copy(
                    &mut std::fs::File::open(entry.path())?,
                    &mut std::io::sink(),
                )?;
            }
        }
    }
    Ok(())
}

/// Bytes of the regular files below `dir`.
fn file_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

/// `used` of a dataset, in bytes.
fn zfs_used(dataset: &str) -> anyhow::Result<u64> {
    let out = e2e::cmd::run(
        Command::new("zfs").args(["get", "-H", "-p", "-o", "value", "used", dataset]),
    )?;
    out.trim()
        .parse()
        .with_context(|| format!("zfs used of {dataset}: {out:?}"))
}

/// Times one PullImage; returns the seconds and the image ID.
async fn timed_pull(client: &mut ImageClient, name: &str) -> anyhow::Result<(f64, String)> {
    let started = Instant::now();
    let response = client
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: name.to_owned(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await
        .with_context(|| format!("PullImage {name}"))?;
    Ok((
        started.elapsed().as_secs_f64(),
        response.into_inner().image_ref,
    ))
}

async fn pull_pvecri(
    name: &str,
    zfs_dataset: Option<&str>,
    leftovers: &mut Leftovers,
) -> anyhow::Result<(f64, String, u64)> {
    let storage = match zfs_dataset {
        None => "[storage]\ndriver = \"overlay\"\n".to_owned(),
        Some(d) => format!(
            "[storage]\ndriver = \"zfs\"\n[storage.zfs]\ndataset = {}\n",
            serde_json::to_string(d)?
        ),
    };
    let mut daemon = Daemon::start(DaemonOptions {
        config_toml_extra: storage,
        log_level: "info".into(),
        ..DaemonOptions::default()
    })?;
    let mut client = daemon.image_client().await?;
    let result = timed_pull(&mut client, name).await;
    drop(client);
    daemon.stop()?;
    let stored = match zfs_dataset {
        None => file_bytes(&daemon.state_dir.join("overlay").join("layers")),
        Some(d) => zfs_used(d)?,
    };
    leftovers.daemons.push(daemon);
    let (secs, id) = result?;
    Ok((secs, id, stored))
}

/// containerd ([`Containerd`]: its own root, state and socket, the CRI plugin and the
/// overlayfs snapshotter), the registry reached over plain HTTP through a mirror entry.
async fn pull_containerd(
    registry: &Registry,
    name: &str,
    leftovers: &mut Leftovers,
) -> anyhow::Result<(f64, String, u64)> {
    let cni = tempfile::Builder::new()
        .prefix("bench-ctrd-cni-")
        .tempdir()?;
    let mut ctrd = Containerd::start(&ContainerdOptions {
        // Never pulled: the benchmark runs no pod.
        sandbox_image: format!("{}/pause:unused", registry.addr()),
        registry: registry.addr(),
        cni_conf_dir: cni.path().to_path_buf(),
        cni_bin_dir: PathBuf::from(CNI_BIN_DIR),
    })?;
    let result = async {
        let mut client = ctrd.ready_image_client().await?;
        timed_pull(&mut client, name).await
    }
    .await;
    ctrd.stop();
    if result.is_err() {
        let log = std::fs::read_to_string(&ctrd.log_path).unwrap_or_default();
        println!("containerd log:\n{log}");
    }
    let stored = file_bytes(
        &ctrd
            .root()
            .join("io.containerd.snapshotter.v1.overlayfs/snapshots"),
    );
    leftovers.containerds.push(ctrd);
    leftovers.dirs.push(cni);
    let (secs, id) = result?;
    Ok((secs, id, stored))
}
