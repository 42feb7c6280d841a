//! The `overlay` driver: a directory per layer holding only that layer's diff in overlayfs
//! form, and an overlay mount per container root filesystem.
//!
//! ```text
//! <root>/.lock                   held while the store is open
//! <root>/store.json              format version and id shift
//! <root>/layers/<hex>/diff/      the layer (hex = ChainID)
//! <root>/layers/<hex>/layer.json LayerInfo plus inode count and root metadata flag
//! <root>/rootfs/<id>/{upper,work,rootfs.json}
//! <root>/tmp/                    work in progress and trash; emptied on open
//! <root>/empty/                  lower directory of root filesystems without an image
//! ```
//!
//! A layer is applied in `tmp/` and renamed into `layers/` once complete and verified, so
//! `layers/` only ever holds complete layers.

mod mount;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use serde::{Deserialize, Serialize};

use crate::apply::{ApplyOptions, IdShift, LowerLayers, Target, apply_layer};
use crate::digest::Digest;
use crate::error::{DigestKind, StoreError};
use crate::files::{self, StoreLock};
use crate::idmap::{self, IdMap};
use crate::inflight::{Inflight, Role, Waited};
use crate::shift;
use crate::store::{
    LayerInfo, LayerRequest, LayerStore, RemoveOutcome, RootfsOptions, RootfsUsage, StoreOptions,
    Usage, validate_rootfs_id,
};
use crate::sys;

const FORMAT_VERSION: u32 = 1;
/// How often a layer waiting for a parent that nobody applies yet looks again.
const PARENT_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Serialize, Deserialize)]
struct StoreRecord {
    version: u32,
    driver: String,
    id_shift: Option<IdShift>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LayerRecord {
    #[serde(flatten)]
    info: LayerInfo,
    inodes: u64,
    compressed_digest: Digest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RootfsRecord {
    id: String,
    top: Option<Digest>,
    target: PathBuf,
    /// The ID map the container's files show (a container in a user namespace).
    #[serde(default)]
    idmap: Option<IdMap>,
    /// The lower layers could not be idmapped, and the whole tree was shifted through the
    /// mount instead: every file of the image is copied up, owned by mapped ids. Later
    /// mounts are plain.
    #[serde(default)]
    shifted: bool,
}

pub(crate) struct OverlayStore {
    root: PathBuf,
    opts: StoreOptions,
    user_xattrs: bool,
    inflight: Inflight,
    /// Serializes changes to root filesystems and layer removal (applications publish
    /// with a rename and need no lock).
    mutate: Mutex<()>,
    _lock: StoreLock,
}

impl OverlayStore {
    pub(crate) fn open(root: &Path, opts: &StoreOptions) -> Result<OverlayStore, StoreError> {
        files::ensure_dir(root)?;
        let lock = StoreLock::acquire(&root.join(".lock"))?;
        for sub in ["layers", "rootfs", "tmp", "empty"] {
            files::ensure_dir(&root.join(sub))?;
        }
        check_store_record(&root.join("store.json"), opts.id_shift)?;
        let store = OverlayStore {
            root: root.to_owned(),
            opts: opts.clone(),
            user_xattrs: false,
            inflight: Inflight::default(),
            mutate: Mutex::new(()),
            _lock: lock,
        };
        store.clean_leftovers()?;
        let user_xattrs = store.probe_xattrs()?;
        Ok(OverlayStore {
            user_xattrs,
            ..store
        })
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.layers_dir().join(chain_id.hex())
    }

    fn diff_dir(&self, chain_id: &Digest) -> PathBuf {
        self.layer_dir(chain_id).join("diff")
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn rootfs_dir(&self, id: &str) -> PathBuf {
        self.root.join("rootfs").join(id)
    }

    /// Empties `tmp/` (interrupted applications, unfinished removals) and drops layer
    /// directories without a record (which a rename never produces, but a hand-edited
    /// store might hold).
    fn clean_leftovers(&self) -> Result<(), StoreError> {
        let tmp = self.tmp();
        for entry in std::fs::read_dir(&tmp).map_err(|e| StoreError::io_at("listing", &tmp, e))? {
            let entry = entry.map_err(|e| StoreError::io_at("listing", &tmp, e))?;
            tracing::info!(path = %entry.path().display(), "removing leftover of an interrupted operation");
            files::remove_tree(&entry.path())?;
        }
        for name in self.layer_names()? {
            let ok = Digest::from_hex(&name).is_ok() && self.layer_dir_record(&name)?.is_some();
            if !ok {
                tracing::warn!(name, "removing an incomplete layer directory");
                files::remove_via_trash(&self.layers_dir().join(&name), &tmp, "bad-layer")?;
            }
        }
        Ok(())
    }

    /// Overlay needs trusted.* xattrs for opaque directories; user.* decides whether layer
    /// xattrs are kept.
    fn probe_xattrs(&self) -> Result<bool, StoreError> {
        let probe = self.tmp().join(files::unique_name("probe"));
        files::ensure_dir(&probe)?;
        let fd = sys::open_dir(&probe).map_err(|e| StoreError::io_at("opening", &probe, e))?;
        let trusted = sys::fset_xattr(fd.as_fd(), OsStr::new("trusted.pvecri.probe"), b"1");
        let user = sys::fset_xattr(fd.as_fd(), OsStr::new("user.pvecri.probe"), b"1");
        drop(fd);
        files::remove_tree(&probe)?;
        if let Err(e) = trusted {
            return Err(StoreError::Unsupported {
                driver: "overlay",
                what: format!("a store on {} (trusted.* xattrs: {e})", self.root.display()),
            });
        }
        if let Err(e) = &user {
            tracing::warn!(root = %self.root.display(), error = %e, "user.* xattrs unsupported: layer xattrs will be dropped");
        }
        Ok(user.is_ok())
    }

    fn layer_names(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.layers_dir();
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| StoreError::io_at("listing", &dir, e))? {
            let entry = entry.map_err(|e| StoreError::io_at("listing", &dir, e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn layer_dir_record(&self, hex: &str) -> Result<Option<LayerRecord>, StoreError> {
        files::read_json(&self.layers_dir().join(hex).join("layer.json"))
    }

    fn record(&self, chain_id: &Digest) -> Result<Option<LayerRecord>, StoreError> {
        let record: Option<LayerRecord> = self.layer_dir_record(chain_id.hex())?;
        if let Some(r) = &record
            && r.info.chain_id != *chain_id
        {
            return Err(StoreError::Corrupt(format!(
                "layer directory {} holds {}",
                chain_id.hex(),
                r.info.chain_id
            )));
        }
        Ok(record)
    }

    fn records(&self) -> Result<Vec<LayerRecord>, StoreError> {
        let mut out = Vec::new();
        for name in self.layer_names()? {
            if Digest::from_hex(&name).is_err() {
                continue;
            }
            if let Some(record) = self.layer_dir_record(&name)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Waits until layer `id` (an ancestor of `child`) is complete.
    fn wait_for_layer(&self, id: &Digest, child: &Digest) -> Result<LayerRecord, StoreError> {
        let deadline = Instant::now() + self.opts.parent_wait;
        loop {
            if let Some(record) = self.record(id)? {
                return Ok(record);
            }
            let now = Instant::now();
            match self
                .inflight
                .wait(id, PARENT_POLL.min(deadline.saturating_duration_since(now)))
            {
                Waited::Finished(Ok(_)) => {}
                Waited::Finished(Err(e)) => {
                    return Err(StoreError::ParentFailed {
                        chain_id: child.clone(),
                        parent: id.clone(),
                        message: e.to_string(),
                    });
                }
                Waited::NotInFlight if now >= deadline => {
                    return match self.record(id)? {
                        Some(record) => Ok(record),
                        None => Err(StoreError::ParentMissing {
                            chain_id: child.clone(),
                            parent: id.clone(),
                        }),
                    };
                }
                Waited::NotInFlight => {}
            }
        }
    }

    fn apply_new(
        &self,
        req: &LayerRequest,
        reader: &mut dyn Read,
    ) -> Result<LayerInfo, StoreError> {
        let work = self
            .tmp()
            .join(files::unique_name(&req.chain_id.hex()[..12]));
        let guard = RemoveOnDrop(Some(work.clone()));
        let diff = work.join("diff");
        files::ensure_dir(&diff)?;
        let diff_fd = sys::open_dir(&diff).map_err(|e| StoreError::io_at("opening", &diff, e))?;
        let (uid, gid) = self.opts.id_shift.map(|s| s.root()).unwrap_or((0, 0));
        nix::unistd::fchown(
            diff_fd.as_fd(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
        )
        .map_err(|e| StoreError::io_at("chown", &diff, e.into()))?;
        nix::sys::stat::fchmod(diff_fd.as_fd(), Mode::from_bits_truncate(0o755))
            .map_err(|e| StoreError::io_at("chmod", &diff, e.into()))?;

        let mut lowers = StoreLowers {
            store: self,
            chain_id: &req.chain_id,
            parent: req.parent.clone(),
        };
        let apply_opts = ApplyOptions {
            id_shift: self.opts.id_shift,
            xattrs: self.user_xattrs,
            chown: true,
            ..ApplyOptions::default()
        };
        let applied = apply_layer(
            reader,
            req.compression,
            Target::Overlay {
                dir: diff_fd.as_fd(),
                lowers: &mut lowers,
            },
            &apply_opts,
        )?;
        verify(req, &applied.digests)?;

        let (size, inodes) = sys::disk_usage(diff_fd.as_fd())
            .map_err(|e| StoreError::io_at("measuring", &diff, e.into()))?;
        let info = LayerInfo {
            chain_id: req.chain_id.clone(),
            parent: req.parent.clone(),
            diff_id: req.diff_id.clone(),
            size,
        };
        let record = LayerRecord {
            info: info.clone(),
            inodes,
            compressed_digest: applied.digests.compressed_digest.clone(),
        };
        files::write_json(&work.join("layer.json"), &record)?;
        if self.opts.sync {
            sys::syncfs(diff_fd.as_fd()).map_err(|e| StoreError::io_at("syncfs", &diff, e))?;
        }
        drop(diff_fd);
        let dest = self.layer_dir(&req.chain_id);
        std::fs::rename(&work, &dest)
            .map_err(|e| StoreError::io_at("publishing layer", &dest, e))?;
        guard.disarm();
        files::sync_dir(&self.layers_dir())?;
        tracing::info!(chain_id = %req.chain_id, size, inodes, entries = applied.entries, "layer applied");
        Ok(info)
    }

    /// The layer directories of the chain ending in `top`, top first, with their records.
    fn chain(&self, top: &Digest) -> Result<Vec<(PathBuf, LayerRecord)>, StoreError> {
        let mut out = Vec::new();
        let mut next = Some(top.clone());
        while let Some(id) = next {
            let record = self
                .record(&id)?
                .ok_or_else(|| StoreError::LayerNotFound(id.clone()))?;
            next = record.info.parent.clone();
            out.push((self.diff_dir(&id), record));
            if out.len() > 1000 {
                return Err(StoreError::Corrupt(format!(
                    "layer chain of {top} does not end"
                )));
            }
        }
        Ok(out)
    }

    fn mount_rootfs(&self, id: &str, record: &RootfsRecord) -> Result<(), StoreError> {
        let dir = self.rootfs_dir(id);
        let lowers: Vec<PathBuf> = match &record.top {
            Some(top) => self.chain(top)?.into_iter().map(|(path, _)| path).collect(),
            None => vec![self.root.join("empty")],
        };
        files::ensure_dir(&record.target)?;
        let mount = |lowers: &[PathBuf], opts: &[&str]| {
            mount::mount_overlay(
                lowers,
                &dir.join("upper"),
                &dir.join("work"),
                &record.target,
                self.opts.legacy_overlay_mount,
                opts,
            )
        };
        let Some(map) = record.idmap.filter(|_| !record.shifted) else {
            return mount(&lowers, &[]);
        };
        match self.idmapped_lowers(&lowers, &map) {
            Ok(clones) => {
                // The upper is not idmapped: its root (which overlayfs shows as the root)
                // carries the mapped owner itself.
                self.init_upper_root(&dir.join("upper"), Some(&map))?;
                // Detached idmapped clones, named through our fds while the mount resolves
                // them; the overlay keeps them alive after.
                let paths: Vec<PathBuf> = clones
                    .iter()
                    .map(|fd| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())))
                    .collect();
                mount(&paths, &[])
            }
            Err(e) if idmap::is_unsupported(&e) => {
                tracing::info!(id, error = %e, "layers cannot be idmapped here; shifting a copy instead");
                // index=off: each name of a hard link is copied up (and shifted) on its own.
                mount(&lowers, &["index=off"])?;
                let done = shift::shift_tree(&record.target, &map, false).and_then(|stats| {
                    tracing::info!(
                        id,
                        entries = stats.entries,
                        unmapped = stats.unmapped,
                        "root filesystem shifted"
                    );
                    files::write_json(
                        &dir.join("rootfs.json"),
                        &RootfsRecord {
                            shifted: true,
                            ..record.clone()
                        },
                    )
                });
                if let Err(e) = done {
                    let _ = mount::unmount_overlays_of(&dir.join("upper"));
                    return Err(e);
                }
                Ok(())
            }
            Err(e) => Err(StoreError::io(
                format!("idmapping the layers of root filesystem {id}"),
                e,
            )),
        }
    }

    /// Idmapped detached clones of the lower layers (or the `EINVAL`/`EOPNOTSUPP` of a file
    /// system that cannot have them, or a test that pretends so).
    fn idmapped_lowers(&self, lowers: &[PathBuf], map: &IdMap) -> std::io::Result<Vec<OwnedFd>> {
        if self.opts.shift_instead_of_idmap {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        let userns = idmap::user_namespace(map)?;
        lowers
            .iter()
            .map(|l| idmap::idmapped_clone(l, userns.as_fd()))
            .collect()
    }

    /// Gives a new upper directory the root of a container's root filesystem: owned by the
    /// container's root (with `map`, the mapped one: the upper is not idmapped), mode
    /// 0755, as containerd's overlay snapshotter makes it (a layer's own entry for its root
    /// is ignored, as containerd ignores it).
    fn init_upper_root(&self, upper: &Path, map: Option<&IdMap>) -> Result<(), StoreError> {
        let (uid, gid) = match map {
            Some(map) => map.root(),
            None => self.opts.id_shift.map(|s| s.root()).unwrap_or((0, 0)),
        };
        std::os::unix::fs::chown(upper, Some(uid), Some(gid))
            .map_err(|e| StoreError::io_at("chown", upper, e))?;
        std::fs::set_permissions(upper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| StoreError::io_at("chmod", upper, e))
    }

    fn rootfs_records(&self) -> Result<Vec<RootfsRecord>, StoreError> {
        let mut out = Vec::new();
        for id in self.rootfs_ids()? {
            if let Some(r) =
                files::read_json::<RootfsRecord>(&self.rootfs_dir(&id).join("rootfs.json"))?
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.mutate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Checks the digests the caller expects against what the stream had.
pub(crate) fn verify(
    req: &LayerRequest,
    got: &crate::stream::StreamDigests,
) -> Result<(), StoreError> {
    if let Some(expected) = &req.compressed_digest
        && *expected != got.compressed_digest
    {
        return Err(StoreError::DigestMismatch {
            which: DigestKind::Compressed,
            expected: expected.clone(),
            actual: got.compressed_digest.clone(),
        });
    }
    if req.diff_id != got.diff_id {
        return Err(StoreError::DigestMismatch {
            which: DigestKind::DiffId,
            expected: req.diff_id.clone(),
            actual: got.diff_id.clone(),
        });
    }
    Ok(())
}

fn check_store_record(path: &Path, id_shift: Option<IdShift>) -> Result<(), StoreError> {
    match files::read_json::<StoreRecord>(path)? {
        Some(r) if r.version != FORMAT_VERSION || r.driver != "overlay" => {
            Err(StoreError::Corrupt(format!(
                "{} is a {} store of format {}, expected overlay format {FORMAT_VERSION}",
                path.display(),
                r.driver,
                r.version
            )))
        }
        Some(r) if r.id_shift != id_shift => Err(StoreError::InvalidRequest(format!(
            "the store at {} was created with id shift {:?}, not {:?}",
            path.display(),
            r.id_shift,
            id_shift
        ))),
        Some(_) => Ok(()),
        None => files::write_json(
            path,
            &StoreRecord {
                version: FORMAT_VERSION,
                driver: "overlay".into(),
                id_shift,
            },
        ),
    }
}

/// Deletes a work directory unless the work was published.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take()
            && let Err(e) = files::remove_tree(&path)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a failed layer's work directory");
        }
    }
}

/// The parents of a layer being applied, waited for on first use.
struct StoreLowers<'a> {
    store: &'a OverlayStore,
    chain_id: &'a Digest,
    parent: Option<Digest>,
}

impl LowerLayers for StoreLowers<'_> {
    fn lower_dirs(&mut self) -> Result<Vec<OwnedFd>, StoreError> {
        let mut out = Vec::new();
        let mut next = self.parent.take();
        while let Some(id) = next {
            let record = self.store.wait_for_layer(&id, self.chain_id)?;
            let diff = self.store.diff_dir(&id);
            out.push(sys::open_dir(&diff).map_err(|e| StoreError::io_at("opening", &diff, e))?);
            next = record.info.parent;
        }
        Ok(out)
    }
}

impl LayerStore for OverlayStore {
    fn driver(&self) -> &'static str {
        "overlay"
    }

    fn layer(&self, chain_id: &Digest) -> Result<Option<LayerInfo>, StoreError> {
        Ok(self.record(chain_id)?.map(|r| r.info))
    }

    fn layers(&self) -> Result<Vec<LayerInfo>, StoreError> {
        Ok(self.records()?.into_iter().map(|r| r.info).collect())
    }

    fn apply_layer(
        &self,
        req: &LayerRequest,
        reader: &mut dyn Read,
    ) -> Result<LayerInfo, StoreError> {
        req.validate()?;
        let leader = match self.inflight.begin(&req.chain_id, req.parent.as_ref()) {
            Role::Follower(result) => return result,
            Role::Leader(leader) => leader,
        };
        let result = match self.layer(&req.chain_id) {
            Ok(Some(info)) => Ok(info),
            Ok(None) => self.apply_new(req, reader),
            Err(e) => Err(e),
        };
        leader.finish(result)
    }

    fn parallel_apply(&self) -> bool {
        true
    }

    fn create_rootfs(
        &self,
        id: &str,
        top: Option<&Digest>,
        target: &Path,
        opts: &RootfsOptions,
    ) -> Result<(), StoreError> {
        validate_rootfs_id(id)?;
        if opts.quota_bytes.is_some() {
            return Err(StoreError::Unsupported {
                driver: "overlay",
                what: "a quota on a root filesystem".into(),
            });
        }
        let _guard = self.lock();
        let dir = self.rootfs_dir(id);
        if let Some(map) = &opts.idmap
            && !map.is_valid()
        {
            return Err(StoreError::InvalidRequest(format!(
                "root filesystem {id}: ID map {} is empty or wraps",
                map.to_text()
            )));
        }
        if let Some(existing) = files::read_json::<RootfsRecord>(&dir.join("rootfs.json"))? {
            if existing.top.as_ref() != top
                || existing.target != target
                || existing.idmap != opts.idmap
            {
                return Err(StoreError::RootfsConflict { id: id.to_owned() });
            }
            if !mount::overlay_mounts_of(&dir.join("upper"))?.contains(&existing.target) {
                self.mount_rootfs(id, &existing)?;
            }
            return Ok(());
        }
        if let Some(top) = top {
            self.chain(top)?; // every layer present
        }
        let work = self.tmp().join(files::unique_name(&format!("rootfs-{id}")));
        let guard = RemoveOnDrop(Some(work.clone()));
        files::ensure_dir(&work.join("upper"))?;
        files::ensure_dir(&work.join("work"))?;
        self.init_upper_root(&work.join("upper"), None)?;
        let record = RootfsRecord {
            id: id.to_owned(),
            top: top.cloned(),
            target: target.to_owned(),
            idmap: opts.idmap,
            shifted: false,
        };
        files::write_json(&work.join("rootfs.json"), &record)?;
        std::fs::rename(&work, &dir)
            .map_err(|e| StoreError::io_at("creating root filesystem", &dir, e))?;
        guard.disarm();
        if let Err(e) = self.mount_rootfs(id, &record) {
            if let Err(cleanup) = files::remove_via_trash(&dir, &self.tmp(), id) {
                tracing::warn!(id, error = %cleanup, "cannot remove a root filesystem that failed to mount");
            }
            return Err(e);
        }
        tracing::info!(id, top = ?top, target = %target.display(), idmap = ?opts.idmap.map(|m| m.to_text()), "root filesystem mounted");
        Ok(())
    }

    fn remove_rootfs(&self, id: &str) -> Result<(), StoreError> {
        validate_rootfs_id(id)?;
        let _guard = self.lock();
        let dir = self.rootfs_dir(id);
        if !dir.exists() {
            return Ok(());
        }
        mount::unmount_overlays_of(&dir.join("upper"))?;
        files::remove_via_trash(&dir, &self.tmp(), id)
    }

    fn rootfs_ids(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join("rootfs");
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| StoreError::io_at("listing", &dir, e))? {
            let entry = entry.map_err(|e| StoreError::io_at("listing", &dir, e))?;
            ids.push(entry.file_name().to_string_lossy().into_owned());
        }
        ids.sort();
        Ok(ids)
    }

    fn remove_layer(&self, chain_id: &Digest) -> Result<RemoveOutcome, StoreError> {
        let _guard = self.lock();
        if self.inflight.is_in_flight(chain_id) || self.inflight.has_child_of(chain_id) {
            return Ok(RemoveOutcome::InUse);
        }
        if self.record(chain_id)?.is_none() {
            return Ok(RemoveOutcome::NotFound);
        }
        if self
            .records()?
            .iter()
            .any(|r| r.info.parent.as_ref() == Some(chain_id))
        {
            return Ok(RemoveOutcome::InUse);
        }
        for rootfs in self.rootfs_records()? {
            if let Some(top) = &rootfs.top {
                // A chain with a missing layer cannot include this one past the gap.
                let chain = self.chain(top).unwrap_or_default();
                if top == chain_id || chain.iter().any(|(_, r)| r.info.chain_id == *chain_id) {
                    return Ok(RemoveOutcome::InUse);
                }
            }
        }
        files::remove_via_trash(
            &self.layer_dir(chain_id),
            &self.tmp(),
            &chain_id.hex()[..12],
        )?;
        tracing::info!(%chain_id, "layer removed");
        Ok(RemoveOutcome::Removed)
    }

    fn usage(&self) -> Result<Usage, StoreError> {
        let mut used_bytes = 0;
        let mut used_inodes = 0;
        for record in self.records()? {
            used_bytes += record.info.size;
            used_inodes += record.inodes;
        }
        for id in self.rootfs_ids()? {
            let dir = self.rootfs_dir(&id);
            let fd = match sys::open_dir(&dir) {
                Ok(fd) => fd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io_at("opening", &dir, e)),
            };
            let (bytes, inodes) = sys::disk_usage(fd.as_fd())
                .map_err(|e| StoreError::io_at("measuring", &dir, e.into()))?;
            used_bytes += bytes;
            used_inodes += inodes;
        }
        Ok(Usage {
            used_bytes,
            used_inodes,
            mountpoint: self.root.clone(),
        })
    }

    fn rootfs_usage(&self) -> Result<BTreeMap<String, RootfsUsage>, StoreError> {
        let mut out = BTreeMap::new();
        for id in self.rootfs_ids()? {
            let upper = self.rootfs_dir(&id).join("upper");
            let fd = match sys::open_dir(&upper) {
                Ok(fd) => fd,
                // Removed since the listing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io_at("opening", &upper, e)),
            };
            let (bytes, inodes) = sys::disk_usage(fd.as_fd())
                .map_err(|e| StoreError::io_at("measuring", &upper, e.into()))?;
            out.insert(id, RootfsUsage { bytes, inodes });
        }
        Ok(out)
    }

    fn xattrs_supported(&self) -> bool {
        self.user_xattrs
    }
}
