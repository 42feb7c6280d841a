//! What the image service tests share: a daemon on either layer store, CRI image calls,
//! and looks into the store and the registry's access log.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use e2e::cmd::run;
use e2e::cri_client::ImageClient;
use e2e::daemon::{Daemon, DaemonOptions};
use e2e::images::{TestImage, TestIndex};
use e2e::registry::Registry;
use e2e::zfs::{ScratchDataset, TestPool};
use k8s_cri::v1::{
    AuthConfig, Image, ImageFilter, ImageFsInfoRequest, ImageFsInfoResponse, ImageSpec,
    ImageStatusRequest, ListImagesRequest, PullImageRequest, RemoveImageRequest,
};
use layerfs::Digest;

/// The layer store a test's daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Overlay,
    Zfs,
}

/// A daemon with its own state directory and, for zfs, its own scratch dataset.
/// Fields drop in order: the daemon (and its mounts) before the dataset it used.
pub struct Env {
    pub daemon: Daemon,
    pub store: Store,
    /// The zfs store's dataset (a child of the scratch dataset, created by the daemon).
    pub zfs_dataset: Option<String>,
    scratch: Option<ScratchDataset>,
}

impl Env {
    /// Starts a daemon on `store`; `extra_toml` is appended to its config (it must not open
    /// a `[storage]` table).
    pub fn start(store: Store, extra_toml: &str) -> anyhow::Result<Env> {
        let (scratch, zfs_dataset, storage) = match store {
            Store::Overlay => (None, None, "[storage]\ndriver = \"overlay\"\n".to_owned()),
            Store::Zfs => {
                let scratch = TestPool::shared()?.scratch("images")?;
                let dataset = format!("{}/store", scratch.name);
                let toml = format!(
                    "[storage]\ndriver = \"zfs\"\n[storage.zfs]\ndataset = {}\n",
                    serde_json::to_string(&dataset)?
                );
                (Some(scratch), Some(dataset), toml)
            }
        };
        let daemon = Daemon::start(DaemonOptions {
            config_toml_extra: format!("{storage}\n{extra_toml}"),
            ..DaemonOptions::default()
        })?;
        Ok(Env {
            daemon,
            store,
            zfs_dataset,
            scratch,
        })
    }

    pub async fn client(&self) -> ImageClient {
        self.daemon.image_client().await.expect("image client")
    }

    /// ChainIDs (hex) of the complete layers in the store.
    pub fn layers(&self) -> BTreeMap<String, ()> {
        self.store_listing()
            .complete
            .into_iter()
            .map(|l| (l, ()))
            .collect()
    }

    /// What the layer store holds on disk, read without the daemon's help.
    pub fn store_listing(&self) -> StoreListing {
        match self.store {
            Store::Overlay => {
                let root = self.daemon.state_dir.join("overlay");
                StoreListing {
                    complete: dir_names(&root.join("layers")),
                    in_progress: dir_names(&root.join("tmp")),
                    rootfs: dir_names(&root.join("rootfs")),
                }
            }
            Store::Zfs => {
                let dataset = self.zfs_dataset.as_deref().unwrap_or_default();
                let names =
                    run(Command::new("zfs").args(["list", "-H", "-r", "-o", "name", dataset]))
                        .unwrap_or_default();
                let below = |part: &str| -> Vec<String> {
                    let prefix = format!("{dataset}/{part}/");
                    names
                        .lines()
                        .filter_map(|n| n.strip_prefix(&prefix))
                        .filter(|n| !n.contains('/'))
                        .map(str::to_owned)
                        .collect()
                };
                StoreListing {
                    complete: below("layers"),
                    in_progress: below("tmp"),
                    rootfs: below("rootfs"),
                }
            }
        }
    }

    /// Files in the daemon's spool directory (downloads waiting for their parent layer).
    pub fn spool_files(&self) -> Vec<String> {
        dir_names(&self.daemon.state_dir.join("spool"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreListing {
    /// Complete layers (ChainID hex).
    pub complete: Vec<String>,
    /// Work in progress: layers being applied (overlay `tmp/`, zfs `<dataset>/tmp/*`).
    pub in_progress: Vec<String>,
    pub rootfs: Vec<String>,
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The ChainIDs (hex) of an image's layers, bottom first.
pub fn chain_ids(image: &TestImage) -> Vec<String> {
    let diff_ids: Vec<Digest> = image
        .layers
        .iter()
        .map(|l| Digest::parse(&l.diff_id).expect("diff_id"))
        .collect();
    layerfs::chain_ids(&diff_ids)
        .iter()
        .map(|d| d.hex().to_owned())
        .collect()
}

/// What ImageStatus reports as size: manifest (and index) bytes, config and layer blobs.
pub fn image_size(image: &TestImage) -> u64 {
    image.manifest_bytes.len() as u64
        + image.config_bytes.len() as u64
        + image.layers.iter().map(|l| l.size).sum::<u64>()
}

/// The image of `index` for `architecture`.
pub fn index_entry<'a>(index: &'a TestIndex, architecture: &str) -> &'a TestImage {
    &index
        .images
        .iter()
        .find(|(p, _)| p.architecture == architecture)
        .unwrap_or_else(|| panic!("index has no {architecture} image"))
        .1
}

/// GET requests for a blob (by its digest) in the registry's access log.
pub fn blob_gets(registry: &Registry, digest: &str) -> usize {
    let suffix = format!("/blobs/{digest}");
    registry
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&suffix))
        .count()
}

/// GET requests for manifests (by tag or digest) in the registry's access log.
pub fn manifest_gets(registry: &Registry) -> usize {
    registry
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/manifests/"))
        .count()
}

pub fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    })
}

/// PullImage; the image ID on success.
pub async fn pull(
    client: &mut ImageClient,
    image: &str,
    auth: Option<AuthConfig>,
) -> Result<String, tonic::Status> {
    client
        .pull_image(PullImageRequest {
            image: spec(image),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

pub async fn list(client: &mut ImageClient, filter: Option<&str>) -> Vec<Image> {
    client
        .list_images(ListImagesRequest {
            filter: filter.map(|f| ImageFilter { image: spec(f) }),
        })
        .await
        .expect("ListImages")
        .into_inner()
        .images
}

/// ImageStatus: the image (None when unknown) and the verbose info.
pub async fn status(
    client: &mut ImageClient,
    image: &str,
    verbose: bool,
) -> (Option<Image>, std::collections::HashMap<String, String>) {
    let r = client
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose,
        })
        .await
        .expect("ImageStatus")
        .into_inner();
    (r.image, r.info)
}

pub async fn remove(client: &mut ImageClient, image: &str) -> Result<(), tonic::Status> {
    client
        .remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .map(|_| ())
}

pub async fn fs_info(client: &mut ImageClient) -> ImageFsInfoResponse {
    client
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo")
        .into_inner()
}

/// Sorted copy, for comparing lists whose order does not matter.
pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Waits until `cond` holds, polling; fails after `timeout` with `what`.
pub async fn wait_for(
    what: &str,
    timeout: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        if std::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Overwrites one byte in the middle of a file, keeping its size.
pub fn corrupt_middle(path: &PathBuf) -> anyhow::Result<()> {
    let mut data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if data.is_empty() {
        bail!("{} is empty", path.display());
    }
    let mid = data.len() / 2;
    data[mid] ^= 0x5a;
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}
