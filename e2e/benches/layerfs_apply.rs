//! Layer application throughput of both layer store drivers, next to GNU tar extracting
//! the same blobs on the same disk in the same run.
//!
//! Run as root: `cargo bench -p e2e --bench layerfs_apply`
//!
//! Two workloads from /usr: `big-files`, a few hundred MB (the e2e `large` image's files,
//! in one layer), and `small-files`, 40,000 entries of files under 64 KiB, directories and
//! symlinks. Each is compressed once with gzip (level 6) and once with zstd (level 3),
//! cached under /var/tmp/pvecri-bench. Each measurement extracts into a fresh directory, store or
//! dataset; nothing is deleted until the end (deleting a big tree slows later file
//! creation on this kind of disk). MB/s are uncompressed bytes (10^6) per second of wall
//! time. Store applications include verifying both digests; the overlay store also flushes
//! the layer to disk (syncfs) before publishing it, which `tar` does not do, so the
//! overlay store is also measured without that flush.
//!
//! `LAYERFS_BENCH_LIST=N` also times listing a zfs store holding N layers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use e2e::images::{Compression as TestCompression, LayerBuilder, TestLayer, plan_large_layers};
use e2e::zfs::TestPool;
use layerfs::{
    Compression, Digest, LayerRequest, StoreConfig, StoreOptions, chain_id, open_store_with,
};
use serde::{Deserialize, Serialize};

const BENCH_DIR: &str = "/var/tmp/pvecri-bench";

/// Builds a workload's layer.
type MakeLayer = fn() -> anyhow::Result<LayerBuilder>;

#[derive(Serialize, Deserialize, Clone)]
struct Blob {
    path: PathBuf,
    digest: String,
    diff_id: String,
    size: u64,
}

#[derive(Serialize, Deserialize)]
struct Blobs {
    files: usize,
    gzip: Blob,
    zstd: Blob,
}

fn blob_of(layer: &TestLayer, path: &Path) -> Blob {
    Blob {
        path: path.to_owned(),
        digest: layer.digest.clone(),
        diff_id: layer.diff_id.clone(),
        size: layer.size,
    }
}

/// The layer blobs of a workload, built on first use.
fn blobs(
    dir: &Path,
    name: &str,
    make: impl FnOnce() -> anyhow::Result<LayerBuilder>,
) -> anyhow::Result<Blobs> {
    let index = dir.join(format!("{name}.json"));
    if let Ok(text) = std::fs::read(&index) {
        let blobs: Blobs = serde_json::from_slice(&text)?;
        if [&blobs.gzip, &blobs.zstd]
            .iter()
            .all(|b| std::fs::metadata(&b.path).map(|m| m.len()).ok() == Some(b.size))
        {
            return Ok(blobs);
        }
    }
    println!("building the {name} benchmark layer from /usr (once)...");
    let one = make()?;
    let files = one.entries().len();
    let (gz_path, zst_path) = (
        dir.join(format!("{name}.tar.gz")),
        dir.join(format!("{name}.tar.zst")),
    );
    let gz = one.finish_to_file(TestCompression::Gzip, &gz_path)?;
    let zst = one.finish_to_file(TestCompression::Zstd, &zst_path)?;
    let blobs = Blobs {
        files,
        gzip: blob_of(&gz, &gz_path),
        zstd: blob_of(&zst, &zst_path),
    };
    std::fs::write(&index, serde_json::to_vec_pretty(&blobs)?)?;
    Ok(blobs)
}

/// Big files: the e2e `large` image's files from /usr in one layer.
fn big_files() -> anyhow::Result<LayerBuilder> {
    let mut one = LayerBuilder::new();
    for builder in plan_large_layers()? {
        for entry in builder.entries() {
            one.entry(entry.clone());
        }
    }
    Ok(one)
}

/// Many small files: directories, symlinks and files under 64 KiB from /usr/share and
/// /usr/lib, walked in sorted order, up to `SMALL_ENTRIES` entries.
fn small_files() -> anyhow::Result<LayerBuilder> {
    use std::os::unix::fs::MetadataExt;
    const SMALL_ENTRIES: usize = 40_000;
    let mut b = LayerBuilder::new();
    let mut stack: Vec<PathBuf> = vec![PathBuf::from("/usr/lib"), PathBuf::from("/usr/share")];
    b.dir("usr", 0o755);
    while let Some(dir) = stack.pop() {
        if b.entries().len() >= SMALL_ENTRIES {
            break;
        }
        let rel = dir.strip_prefix("/")?.to_string_lossy().into_owned();
        b.dir(&rel, std::fs::metadata(&dir)?.mode() & 0o7777);
        let mut children: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        children.sort();
        let mut subdirs = Vec::new();
        for child in children {
            let md = std::fs::symlink_metadata(&child)?;
            let rel = child.strip_prefix("/")?.to_string_lossy().into_owned();
            if md.is_dir() {
                subdirs.push(child);
            } else if md.file_type().is_symlink() {
                b.symlink(&rel, &std::fs::read_link(&child)?.to_string_lossy());
            } else if md.is_file() && md.len() < 64 * 1024 && std::fs::File::open(&child).is_ok() {
                b.file_from_path(&rel, &child, md.mode() & 0o7777)?;
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(b)
}

/// Size of the uncompressed tar stream.
fn uncompressed_size(blob: &Blob) -> anyhow::Result<u64> {
    let mut reader = std::io::BufReader::new(std::fs::File::open(&blob.path)?);
    let mut decoder = flate2::bufread::MultiGzDecoder::new(&mut reader);
    Ok(std::io::copy(&mut decoder, &mut std::io::sink())?)
}

fn time<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(Duration, T)> {
    let start = Instant::now();
    let value = f()?;
    Ok((start.elapsed(), value))
}

fn tar_extract(args: &[&str], blob: &Path, into: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(into)?;
    let status = Command::new("tar")
        .args(args)
        .arg(blob)
        .arg("-C")
        .arg(into)
        .status()?;
    if !status.success() {
        bail!("tar {args:?} failed: {status}");
    }
    Ok(())
}

fn store_apply(
    cfg: &StoreConfig,
    opts: &StoreOptions,
    blob: &Blob,
    compression: Compression,
) -> anyhow::Result<()> {
    let store = open_store_with(cfg, opts)?;
    let diff_id = Digest::parse(&blob.diff_id)?;
    let req = LayerRequest {
        chain_id: chain_id(None, &diff_id),
        parent: None,
        diff_id,
        compressed_digest: Some(Digest::parse(&blob.digest)?),
        compression,
    };
    let mut reader = std::fs::File::open(&blob.path)?;
    store.apply_layer(&req, &mut reader).context("applying")?;
    Ok(())
}

struct Row {
    label: String,
    seconds: f64,
}

fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("run as root: the benchmark creates device nodes, sets owners and uses ZFS");
    }
    let base = Path::new(BENCH_DIR);
    std::fs::create_dir_all(base)?;
    let runs = tempfile::Builder::new().prefix("run-").tempdir_in(base)?;
    let pool = TestPool::shared()?;
    let mut scratch = Vec::new();
    let mut tables = Vec::new();
    let workloads: [(&str, MakeLayer); 2] =
        [("big-files", big_files), ("small-files", small_files)];
    for (name, make) in workloads {
        let blobs = blobs(base, name, make)?;
        let r = runs.path().join(name);
        std::fs::create_dir_all(&r)?;
        let rows = workload(&blobs, &r, &pool, &mut scratch)?;
        tables.push((name, blobs, rows));
    }

    if let Some(n) = std::env::var("LAYERFS_BENCH_LIST")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        list_bench(&pool, runs.path(), n)?;
    }

    for (name, blobs, (bytes, rows)) in &tables {
        println!(
            "\n{name}: {} entries, {:.1} MB uncompressed, gzip {:.1} MB, zstd {:.1} MB\n\n| measurement | s | MB/s (uncompressed) |\n|---|---|---|",
            blobs.files,
            *bytes as f64 / 1e6,
            blobs.gzip.size as f64 / 1e6,
            blobs.zstd.size as f64 / 1e6
        );
        for row in rows {
            println!(
                "| {} | {:.2} | {:.1} |",
                row.label.split_whitespace().collect::<Vec<_>>().join(" "),
                row.seconds,
                *bytes as f64 / 1e6 / row.seconds
            );
        }
    }
    drop(scratch);
    println!("cleaning up {}", runs.path().display());
    Ok(())
}

/// Every measurement of one workload, each into a fresh directory, store or dataset.
fn workload(
    blobs: &Blobs,
    r: &Path,
    pool: &TestPool,
    scratch: &mut Vec<e2e::zfs::ScratchDataset>,
) -> anyhow::Result<(u64, Vec<Row>)> {
    let bytes = uncompressed_size(&blobs.gzip)?;
    let mut rows: Vec<Row> = Vec::new();
    let mut record = |label: &str, d: Duration| {
        println!(
            "  {label:<38} {:>7.2} s {:>8.1} MB/s",
            d.as_secs_f64(),
            bytes as f64 / 1e6 / d.as_secs_f64()
        );
        rows.push(Row {
            label: label.to_owned(),
            seconds: d.as_secs_f64(),
        });
    };
    // Warm the page cache for the blobs so that the first run does not pay for reading them.
    for b in [&blobs.gzip, &blobs.zstd] {
        std::io::copy(&mut std::fs::File::open(&b.path)?, &mut std::io::sink())?;
    }
    let (d, ()) = time(|| tar_extract(&["-xzf"], &blobs.gzip.path, &r.join("tar-gz")))?;
    record("tar -xzf            (ext4)", d);
    let (d, ()) = time(|| {
        store_apply(
            &StoreConfig::Overlay {
                root: r.join("ov-gz"),
            },
            &StoreOptions::default(),
            &blobs.gzip,
            Compression::Gzip,
        )
    })?;
    record("overlay store, gzip (ext4)", d);
    let nosync = StoreOptions {
        sync: false,
        ..StoreOptions::default()
    };
    let (d, ()) = time(|| {
        store_apply(
            &StoreConfig::Overlay {
                root: r.join("ov-gz-ns"),
            },
            &nosync,
            &blobs.gzip,
            Compression::Gzip,
        )
    })?;
    record("overlay store, gzip, no syncfs (ext4)", d);

    let (d, ()) = time(|| tar_extract(&["--zstd", "-xf"], &blobs.zstd.path, &r.join("tar-zst")))?;
    record("tar --zstd -xf      (ext4)", d);
    let (d, ()) = time(|| {
        store_apply(
            &StoreConfig::Overlay {
                root: r.join("ov-zst"),
            },
            &StoreOptions::default(),
            &blobs.zstd,
            Compression::Zstd,
        )
    })?;
    record("overlay store, zstd (ext4)", d);
    let (d, ()) = time(|| {
        store_apply(
            &StoreConfig::Overlay {
                root: r.join("ov-zst-ns"),
            },
            &nosync,
            &blobs.zstd,
            Compression::Zstd,
        )
    })?;
    record("overlay store, zstd, no syncfs (ext4)", d);

    for (label, args, blob) in [
        ("tar -xzf            (zfs-fuse)", &["-xzf"][..], &blobs.gzip),
        (
            "tar --zstd -xf      (zfs-fuse)",
            &["--zstd", "-xf"][..],
            &blobs.zstd,
        ),
    ] {
        let ds = pool.scratch("bench-tar")?;
        let (d, ()) = time(|| tar_extract(args, &blob.path, &ds.mountpoint))?;
        record(label, d);
        scratch.push(ds);
    }
    for (label, blob, compression) in [
        (
            "zfs store, gzip     (zfs-fuse)",
            &blobs.gzip,
            Compression::Gzip,
        ),
        (
            "zfs store, zstd     (zfs-fuse)",
            &blobs.zstd,
            Compression::Zstd,
        ),
    ] {
        let ds = pool.scratch("bench-store")?;
        let cfg = StoreConfig::Zfs {
            dataset: format!("{}/store", ds.name),
            mount_root: r.join(format!("zfs-mnt-{}", scratch.len())),
        };
        let (d, ()) = time(|| store_apply(&cfg, &StoreOptions::default(), blob, compression))?;
        record(label, d);
        scratch.push(ds);
    }
    Ok((bytes, rows))
}

/// Times `layers()` of a zfs store holding `n` small layers (one chain).
fn list_bench(pool: &TestPool, runs: &Path, n: usize) -> anyhow::Result<()> {
    let ds = pool.scratch("bench-list")?;
    let cfg = StoreConfig::Zfs {
        dataset: format!("{}/store", ds.name),
        mount_root: runs.join("zfs-list-mnt"),
    };
    let store = open_store_with(&cfg, &StoreOptions::default())?;
    let mut parent: Option<Digest> = None;
    let start = Instant::now();
    for i in 0..n {
        let mut b = LayerBuilder::new();
        b.file(&format!("f{i}"), format!("{i}\n"), 0o644);
        let layer = b.finish(TestCompression::Gzip)?;
        let diff_id = Digest::parse(&layer.diff_id)?;
        let req = LayerRequest {
            chain_id: chain_id(parent.as_ref(), &diff_id),
            parent: parent.clone(),
            diff_id,
            compressed_digest: Some(Digest::parse(&layer.digest)?),
            compression: Compression::Gzip,
        };
        store.apply_layer(&req, &mut layer.blob.open()?)?;
        parent = Some(req.chain_id);
    }
    let applied = start.elapsed();
    let (d, layers) = time(|| Ok(store.layers()?))?;
    anyhow::ensure!(layers.len() == n);
    println!(
        "\nzfs store with {n} layers: applying took {:.1} s ({:.0} ms per small layer); layers() took {:.0} ms",
        applied.as_secs_f64(),
        applied.as_secs_f64() * 1000.0 / n as f64,
        d.as_secs_f64() * 1000.0
    );
    let (d, _) = time(|| Ok(store.usage()?))?;
    println!("usage() took {:.0} ms", d.as_secs_f64() * 1000.0);
    drop(store);
    drop(ds);
    Ok(())
}
