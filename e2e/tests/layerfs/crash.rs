//! A process killed with SIGKILL in the middle of applying a layer: reopening the store
//! shows no partial layer, and the leftover is gone.
//!
//! The child is this test binary run again with `PVECRI_LAYERFS_CRASH_CHILD` set: it opens
//! the store, applies a base layer, then applies a big layer through a reader that slows
//! down and signals once part of the layer is on disk.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::images::{Compression as TestCompression, LayerBlob, LayerBuilder, TestLayer};
use layerfs::{StoreConfig, open_store};

use crate::support::{DRIVERS, Driver, Fixture, list_recursive, request};

const CHILD_ENV: &str = "PVECRI_LAYERFS_CRASH_CHILD";
/// Bytes read before the child signals; the layer is much bigger.
const SIGNAL_AFTER: u64 = 2 << 20;

#[derive(serde::Serialize, serde::Deserialize)]
struct ChildArgs {
    overlay_root: Option<PathBuf>,
    zfs: Option<(String, PathBuf)>,
    /// Blob path, media type, digest, diff_id of the base and the big layer.
    base: (PathBuf, String, String, String),
    big: (PathBuf, String, String, String),
    marker: PathBuf,
}

fn child_layer(
    (path, media_type, digest, diff_id): &(PathBuf, String, String, String),
) -> TestLayer {
    TestLayer {
        media_type: media_type.clone(),
        compression: TestCompression::Gzip,
        digest: digest.clone(),
        diff_id: diff_id.clone(),
        size: std::fs::metadata(path).unwrap().len(),
        blob: LayerBlob::File(path.clone()),
        entries: Vec::new(),
    }
}

fn describe(layer: &TestLayer, path: PathBuf) -> (PathBuf, String, String, String) {
    (
        path,
        layer.media_type.clone(),
        layer.digest.clone(),
        layer.diff_id.clone(),
    )
}

fn layers(dir: &Path) -> anyhow::Result<(TestLayer, TestLayer)> {
    let mut base = LayerBuilder::new();
    base.dir("data", 0o755).file("data/base", "base\n", 0o644);
    let base = base.finish_to_file(TestCompression::Gzip, &dir.join("base.tar.gz"))?;
    let mut big = LayerBuilder::new();
    big.dir("data", 0o755);
    // Pseudo-random (xorshift) contents, so that the compressed blob is big too.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..400u32 {
        let contents: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        big.file(&format!("data/partial-{i:03}"), contents, 0o644);
    }
    let big = big.finish_to_file(TestCompression::Gzip, &dir.join("big.tar.gz"))?;
    Ok((base, big))
}

/// Slow after the first `SIGNAL_AFTER` bytes; creates `marker` when it gets there.
struct SlowReader<R> {
    inner: R,
    read: u64,
    marker: PathBuf,
}

impl<R: Read> Read for SlowReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read >= SIGNAL_AFTER {
            if !self.marker.exists() {
                std::fs::write(&self.marker, b"")?;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let limit = buf.len().min(16 * 1024);
        let n = self.inner.read(&mut buf[..limit])?;
        self.read += n as u64;
        Ok(n)
    }
}

/// The child's side: runs only when the parent re-executes this test.
#[test]
fn crash_child() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return;
    };
    let args: ChildArgs = serde_json::from_str(&args).unwrap();
    let cfg = match (&args.overlay_root, &args.zfs) {
        (Some(root), _) => StoreConfig::Overlay { root: root.clone() },
        (None, Some((dataset, mount_root))) => StoreConfig::Zfs {
            dataset: dataset.clone(),
            mount_root: mount_root.clone(),
        },
        _ => panic!("no store given"),
    };
    let store = open_store(&cfg).unwrap();
    let (base, big) = (child_layer(&args.base), child_layer(&args.big));
    let base_req = request(&base, None).unwrap();
    store
        .apply_layer(&base_req, &mut base.blob.open().unwrap())
        .unwrap();
    let req = request(&big, Some(&base_req.chain_id)).unwrap();
    let mut reader = SlowReader {
        inner: big.blob.open().unwrap(),
        read: 0,
        marker: args.marker.clone(),
    };
    let _ = store.apply_layer(&req, &mut reader);
    panic!("the parent should have killed this process before the layer finished");
}

fn run(driver: Driver) -> anyhow::Result<()> {
    let mut fx = Fixture::new(driver)?;
    fx.close(); // the child must be able to lock the store
    let dir = fx.work.path().join("blobs");
    std::fs::create_dir_all(&dir)?;
    let (base, big) = layers(&dir)?;
    anyhow::ensure!(
        big.size > 8 * SIGNAL_AFTER,
        "big layer is only {} bytes",
        big.size
    );
    let marker = fx.work.path().join("child-is-applying");
    let args = ChildArgs {
        overlay_root: match &fx.cfg {
            StoreConfig::Overlay { root } => Some(root.clone()),
            StoreConfig::Zfs { .. } => None,
        },
        zfs: match &fx.cfg {
            StoreConfig::Zfs {
                dataset,
                mount_root,
            } => Some((dataset.clone(), mount_root.clone())),
            StoreConfig::Overlay { .. } => None,
        },
        base: describe(&base, dir.join("base.tar.gz")),
        big: describe(&big, dir.join("big.tar.gz")),
        marker: marker.clone(),
    };
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "crash::crash_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, serde_json::to_string(&args)?)
        .stdin(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker.exists() {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the child exited ({status}) before it was killed");
        }
        anyhow::ensure!(Instant::now() < deadline, "the child never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id())?),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let status = child.wait()?;
    anyhow::ensure!(
        std::os::unix::process::ExitStatusExt::signal(&status) == Some(9),
        "child ended with {status}"
    );

    // The killed application left its work behind, with some of the layer's files in it.
    let leftovers = fx.leftovers()?;
    anyhow::ensure!(
        !leftovers.is_empty(),
        "no leftover to clean: the test proves nothing"
    );
    if let StoreConfig::Overlay { root } = &fx.cfg {
        let partial = list_recursive(&root.join("tmp"))?;
        anyhow::ensure!(
            partial.iter().any(|p| p.contains("partial-")),
            "the child was killed before writing any file: {partial:?}"
        );
    }

    fx.reopen()?;
    let store = fx.store();
    let base_req = request(&base, None)?;
    let req = request(&big, Some(&base_req.chain_id))?;
    anyhow::ensure!(
        store.layer(&base_req.chain_id)?.is_some(),
        "the completed base layer was lost"
    );
    anyhow::ensure!(
        store.layer(&req.chain_id)?.is_none(),
        "the partial layer is visible"
    );
    let layers = store.layers()?;
    anyhow::ensure!(layers.len() == 1, "layers after reopening: {layers:?}");
    anyhow::ensure!(
        fx.leftovers()?.is_empty(),
        "leftovers after reopening: {:?}",
        fx.leftovers()?
    );
    if let Some(dataset) = fx.zfs_dataset() {
        let all = crate::support::zfs_names(dataset)?;
        anyhow::ensure!(all.len() == 5, "datasets after reopening: {all:?}"); // store, tmp, layers, base, rootfs
    }
    let stray: Vec<String> = list_recursive(fx.work.path())?
        .into_iter()
        .filter(|p| p.contains("partial-"))
        .collect();
    anyhow::ensure!(
        stray.is_empty(),
        "files of the partial layer remain: {stray:?}"
    );

    // The layer applies cleanly afterwards.
    store.apply_layer(&req, &mut big.blob.open()?)?;
    Ok(())
}

#[test]
fn sigkill_mid_apply_leaves_no_partial_layer() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let failures: Vec<String> = DRIVERS
        .into_iter()
        .filter_map(|d| run(d).err().map(|e| format!("{d:?}: {e:#}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
