//! The layer store interface that the image service and the daemon use.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::apply::IdShift;
use crate::compression::Compression;
use crate::digest::{Digest, chain_id};
use crate::error::StoreError;

/// One layer to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRequest {
    /// The layer's ChainID; must equal `chain_id(parent, diff_id)`.
    pub chain_id: Digest,
    /// ChainID of the layer below (None for the base layer).
    pub parent: Option<Digest>,
    /// The expected digest of the uncompressed tar stream (from the image config).
    pub diff_id: Digest,
    /// The expected digest of the blob as read (from the manifest); None skips that check.
    pub compressed_digest: Option<Digest>,
    pub compression: Compression,
}

impl LayerRequest {
    /// Checks that the chain ID is the one the parent and diff_id make.
    pub fn validate(&self) -> Result<(), StoreError> {
        let expected = chain_id(self.parent.as_ref(), &self.diff_id);
        if expected != self.chain_id {
            return Err(StoreError::InvalidRequest(format!(
                "chain id {} does not match parent {:?} and diff_id {} (expected {expected})",
                self.chain_id, self.parent, self.diff_id
            )));
        }
        Ok(())
    }
}

/// A complete, verified layer in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub chain_id: Digest,
    pub parent: Option<Digest>,
    pub diff_id: Digest,
    /// Bytes this layer adds to the store (its own diff, not its parents').
    pub size: u64,
}

/// Options for a container root filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootfsOptions {
    /// Limit on the bytes the container may write (zfs `refquota`; the whole filesystem
    /// including the image counts). Not supported by the overlay driver.
    pub quota_bytes: Option<u64>,
    /// For a container in a user namespace: the owners its files must show. Ids `0..count`
    /// of the image appear as `host..`, through idmapped mounts where the file system has
    /// them (overlay lower layers), else by shifting the container's own copy (a ZFS clone,
    /// or an overlay upper that every file is copied into).
    pub idmap: Option<crate::idmap::IdMap>,
}

/// Space and inodes the store uses (for CRI ImageFsInfo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub used_bytes: u64,
    pub used_inodes: u64,
    /// A directory on the store's file system.
    pub mountpoint: PathBuf,
}

/// What one container root filesystem adds on top of its image: its writable layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RootfsUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// Result of [`LayerStore::remove_layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveOutcome {
    Removed,
    /// A child layer or a container root filesystem still depends on it.
    InUse,
    NotFound,
}

/// Which driver, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// Layers are directories under `root`; container root filesystems are overlay mounts.
    Overlay { root: PathBuf },
    /// Layers are datasets under `dataset` (created if missing), snapshotted and cloned;
    /// datasets being filled are mounted under `mount_root`.
    Zfs {
        dataset: String,
        mount_root: PathBuf,
    },
}

/// Store-wide options beyond the driver's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Owners are shifted by this while extracting (a store for unprivileged containers).
    /// Fixed when the store is created; reopening with a different shift is an error.
    pub id_shift: Option<IdShift>,
    /// Flush a layer to disk before publishing it (overlay), so that a power loss cannot
    /// leave a published layer with missing data. ZFS snapshots are durable anyway.
    pub sync: bool,
    /// Overlay: how long an application that needs its parents waits for a parent that is
    /// neither present nor being applied before failing.
    pub parent_wait: Duration,
    /// Overlay: mount with the classic `mount(2)` string instead of the `fsconfig`
    /// `lowerdir+` API (which older kernels lack). For tests of the fallback.
    #[doc(hidden)]
    pub legacy_overlay_mount: bool,
    /// Overlay: shift a copy of idmapped root filesystems as if the file system had no
    /// idmapped mounts. For tests of the fallback.
    #[doc(hidden)]
    pub shift_instead_of_idmap: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            id_shift: None,
            sync: true,
            parent_wait: Duration::from_secs(30),
            legacy_overlay_mount: false,
            shift_instead_of_idmap: false,
        }
    }
}

/// The layer store.
pub trait LayerStore: Send + Sync {
    /// `"overlay"` or `"zfs"`.
    fn driver(&self) -> &'static str;

    /// A complete layer, if present. On drivers with [`Self::parallel_apply`] a present layer
    /// does not imply its parents are present; [`Self::create_rootfs`] checks the chain.
    fn layer(&self, chain_id: &Digest) -> Result<Option<LayerInfo>, StoreError>;

    /// All complete layers.
    fn layers(&self) -> Result<Vec<LayerInfo>, StoreError>;

    /// Blocking. Applies the layer read from `reader` (compressed as `req.compression`),
    /// verifying compressed digest and diff_id in the same pass; publishes it only when
    /// complete and verified. If the layer already exists, returns it without reading.
    /// If another thread is applying the same chain id, waits for that and returns its result.
    fn apply_layer(
        &self,
        req: &LayerRequest,
        reader: &mut dyn Read,
    ) -> Result<LayerInfo, StoreError>;

    /// Whether a child's apply_layer may run before its parent is complete (overlay: yes, since a
    /// layer is a directory of its own diff; zfs: no, since a layer is a clone of its parent).
    fn parallel_apply(&self) -> bool;

    /// Creates the writable root filesystem `id` from the layer chain ending in `top`
    /// (empty if None) and mounts it at `target` (created if missing). Idempotent for the
    /// same `id` and `top`: it then only makes sure the filesystem is mounted.
    fn create_rootfs(
        &self,
        id: &str,
        top: Option<&Digest>,
        target: &Path,
        opts: &RootfsOptions,
    ) -> Result<(), StoreError>;

    /// Unmounts and destroys root filesystem `id`; nothing to do if it does not exist.
    fn remove_rootfs(&self, id: &str) -> Result<(), StoreError>;

    /// Ids of the root filesystems in the store.
    fn rootfs_ids(&self) -> Result<Vec<String>, StoreError>;

    /// Removes a layer that no child layer and no root filesystem depends on.
    fn remove_layer(&self, chain_id: &Digest) -> Result<RemoveOutcome, StoreError>;

    /// Bytes and inodes the store uses.
    fn usage(&self) -> Result<Usage, StoreError>;

    /// The writable layer of every root filesystem, by id (overlay: its upper directory;
    /// zfs: what its clone holds beyond the image snapshot). One pass over the store, so
    /// that stats for many containers cost one listing.
    fn rootfs_usage(&self) -> Result<BTreeMap<String, RootfsUsage>, StoreError>;

    /// Whether layers keep extended attributes (false on zfs-fuse, which has none).
    fn xattrs_supported(&self) -> bool;
}

/// Opens (creating if needed) the store `cfg` describes with default options, and cleans
/// what an interrupted process left behind.
pub fn open_store(cfg: &StoreConfig) -> Result<Arc<dyn LayerStore>, StoreError> {
    open_store_with(cfg, &StoreOptions::default())
}

/// [`open_store`] with options.
pub fn open_store_with(
    cfg: &StoreConfig,
    opts: &StoreOptions,
) -> Result<Arc<dyn LayerStore>, StoreError> {
    Ok(match cfg {
        StoreConfig::Overlay { root } => Arc::new(crate::overlay::OverlayStore::open(root, opts)?),
        StoreConfig::Zfs {
            dataset,
            mount_root,
        } => Arc::new(crate::zfs::ZfsStore::open(dataset, mount_root, opts)?),
    })
}

/// Container root filesystem ids become directory and dataset names. Proxmox claims
/// datasets named like its volumes, so those names are refused.
pub(crate) fn validate_rootfs_id(id: &str) -> Result<(), StoreError> {
    let bad = |why: &str| {
        Err(StoreError::InvalidRequest(format!(
            "root filesystem id {id:?}: {why}"
        )))
    };
    if id.is_empty() || id.len() > 128 {
        return bad("must be 1 to 128 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return bad("may only contain letters, digits, '-', '_' and '.'");
    }
    if id.starts_with('.') || id.starts_with('-') {
        return bad("must start with a letter or digit");
    }
    if looks_like_proxmox_volume(id) {
        return bad("looks like a Proxmox volume name (base-/basevol-/vm-/subvol-<vmid>-...)");
    }
    Ok(())
}

pub(crate) fn looks_like_proxmox_volume(name: &str) -> bool {
    ["base-", "basevol-", "vm-", "subvol-"]
        .iter()
        .any(|prefix| {
            name.strip_prefix(prefix).is_some_and(|rest| {
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                digits > 0 && rest.as_bytes().get(digits) == Some(&b'-')
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_ids() {
        assert!(validate_rootfs_id(&"a".repeat(64)).is_ok());
        assert!(validate_rootfs_id("ctr-1_x.y").is_ok());
        assert!(validate_rootfs_id("subvol").is_ok());
        assert!(validate_rootfs_id("subvol-x-disk-0").is_ok());
        for bad in [
            "",
            ".x",
            "-x",
            "a/b",
            "a b",
            "subvol-100-disk-0",
            "vm-1-x",
            "basevol-9-disk-1",
            "base-12-a",
        ] {
            assert!(validate_rootfs_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests_must_have_consistent_chain_ids() {
        let diff = Digest::of_bytes(b"layer");
        let parent = Digest::of_bytes(b"parent");
        let good = LayerRequest {
            chain_id: chain_id(Some(&parent), &diff),
            parent: Some(parent.clone()),
            diff_id: diff.clone(),
            compressed_digest: None,
            compression: Compression::Gzip,
        };
        assert!(good.validate().is_ok());
        let bad = LayerRequest {
            chain_id: diff.clone(),
            ..good
        };
        assert!(matches!(bad.validate(), Err(StoreError::InvalidRequest(_))));
    }
}
