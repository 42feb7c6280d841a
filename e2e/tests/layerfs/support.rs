//! Store fixtures for the layer store tests: a fresh overlay store in a temporary directory
//! or a fresh zfs store in a scratch dataset of the shared zfs-fuse test pool.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, bail};
use e2e::images::TestLayer;
use e2e::zfs::{ScratchDataset, TestPool};
use layerfs::{
    Compression, Digest, LayerInfo, LayerRequest, LayerStore, StoreConfig, StoreOptions, chain_id,
    open_store_with,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Overlay,
    Zfs,
}

pub const DRIVERS: [Driver; 2] = [Driver::Overlay, Driver::Zfs];

pub struct Fixture {
    pub cfg: StoreConfig,
    pub opts: StoreOptions,
    store: Option<Arc<dyn LayerStore>>,
    /// Destroyed (with everything the store made in it) when the fixture goes, before
    /// `work`: its datasets are mounted below `work`, whose removal would otherwise delete
    /// their files one by one through zfs-fuse.
    _scratch: Option<ScratchDataset>,
    /// Holds the overlay root or the zfs mount root, and rootfs targets.
    pub work: tempfile::TempDir,
}

impl Fixture {
    pub fn new(driver: Driver) -> anyhow::Result<Fixture> {
        Fixture::with_options(driver, StoreOptions::default())
    }

    pub fn with_options(driver: Driver, opts: StoreOptions) -> anyhow::Result<Fixture> {
        let work = tempfile::Builder::new()
            .prefix("pvecri-layerfs-")
            .tempdir_in("/var/tmp")?;
        let (cfg, scratch) = match driver {
            Driver::Overlay => (
                StoreConfig::Overlay {
                    root: work.path().join("store"),
                },
                None,
            ),
            Driver::Zfs => {
                let scratch = TestPool::shared()?.scratch("layerfs")?;
                (
                    StoreConfig::Zfs {
                        // A child, so that the store creates its own dataset.
                        dataset: format!("{}/store", scratch.name),
                        mount_root: work.path().join("mnt"),
                    },
                    Some(scratch),
                )
            }
        };
        let store = open_store_with(&cfg, &opts).context("opening the store")?;
        Ok(Fixture {
            cfg,
            opts,
            store: Some(store),
            work,
            _scratch: scratch,
        })
    }

    pub fn store(&self) -> &Arc<dyn LayerStore> {
        self.store.as_ref().expect("store is open")
    }

    /// Closes the store (releasing its lock) without reopening it.
    pub fn close(&mut self) {
        self.store = None;
    }

    /// Closes and reopens the store, which cleans leftovers.
    pub fn reopen(&mut self) -> anyhow::Result<()> {
        self.store = None;
        self.store = Some(open_store_with(&self.cfg, &self.opts)?);
        Ok(())
    }

    pub fn zfs_dataset(&self) -> Option<&str> {
        match &self.cfg {
            StoreConfig::Zfs { dataset, .. } => Some(dataset),
            StoreConfig::Overlay { .. } => None,
        }
    }

    /// A directory for a container root filesystem.
    pub fn target(&self, name: &str) -> PathBuf {
        self.work.path().join("targets").join(name)
    }

    /// Applies `layers` as one image, base first.
    pub fn apply_image(&self, layers: &[TestLayer]) -> anyhow::Result<Vec<LayerInfo>> {
        let mut parent: Option<Digest> = None;
        let mut out = Vec::new();
        for layer in layers {
            let req = request(layer, parent.as_ref())?;
            let mut reader = layer.blob.open()?;
            let info = self
                .store()
                .apply_layer(&req, &mut reader)
                .with_context(|| format!("applying layer {}", req.chain_id))?;
            parent = Some(info.chain_id.clone());
            out.push(info);
        }
        Ok(out)
    }

    /// What an interrupted or failed application could have left: entries of the
    /// overlay store's `tmp/`, or datasets under the zfs store's `tmp`.
    pub fn leftovers(&self) -> anyhow::Result<Vec<String>> {
        match &self.cfg {
            StoreConfig::Overlay { root } => {
                let mut names: Vec<String> = std::fs::read_dir(root.join("tmp"))?
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<Result<_, _>>()?;
                names.sort();
                Ok(names)
            }
            StoreConfig::Zfs { dataset, .. } => {
                let tmp = format!("{dataset}/tmp");
                Ok(zfs_names(&tmp)?.into_iter().filter(|n| *n != tmp).collect())
            }
        }
    }

    /// Names of layer datasets (zfs) or layer directories (overlay), sorted.
    pub fn stored_layers(&self) -> anyhow::Result<Vec<String>> {
        match &self.cfg {
            StoreConfig::Overlay { root } => {
                let mut names: Vec<String> = std::fs::read_dir(root.join("layers"))?
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<Result<_, _>>()?;
                names.sort();
                Ok(names)
            }
            StoreConfig::Zfs { dataset, .. } => {
                let parent = format!("{dataset}/layers");
                Ok(zfs_names(&parent)?
                    .into_iter()
                    .filter_map(|n| n.strip_prefix(&format!("{parent}/")).map(str::to_owned))
                    .collect())
            }
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(store) = &self.store
            && let Ok(ids) = store.rootfs_ids()
        {
            for id in ids {
                if let Err(e) = store.remove_rootfs(&id) {
                    eprintln!("cannot remove root filesystem {id}: {e}");
                }
            }
        }
        self.store = None;
    }
}

/// `zfs list -H -o name -r <dataset>` (filesystems, no snapshots), sorted.
pub fn zfs_names(dataset: &str) -> anyhow::Result<Vec<String>> {
    let out = Command::new("zfs")
        .args(["list", "-H", "-o", "name", "-r", dataset])
        .output()?;
    if !out.status.success() {
        bail!(
            "zfs list {dataset}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut names: Vec<String> = String::from_utf8(out.stdout)?
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    Ok(names)
}

/// The store request for a test layer on top of `parent`.
pub fn request(layer: &TestLayer, parent: Option<&Digest>) -> anyhow::Result<LayerRequest> {
    let diff_id = Digest::parse(&layer.diff_id)?;
    Ok(LayerRequest {
        chain_id: chain_id(parent, &diff_id),
        parent: parent.cloned(),
        diff_id,
        compressed_digest: Some(Digest::parse(&layer.digest)?),
        compression: Compression::from_media_type(&layer.media_type)?,
    })
}

/// A reader that counts what was read from it.
pub struct Counting<R> {
    pub inner: R,
    pub count: Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
        Ok(n)
    }
}

/// Every path under `dir` (relative), sorted; for checking that nothing escaped.
pub fn list_recursive(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            out.push(path.strip_prefix(dir)?.to_string_lossy().into_owned());
            if entry.file_type()?.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}
