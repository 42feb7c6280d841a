//! The `zfs` driver: a dataset per layer, a clone per container, all through the `zfs`
//! command.
//!
//! ```text
//! <dataset>                      the store (created if missing), marked pvecri:store
//! <dataset>/tmp/<name>           a layer being applied, mounted under <mount_root>/tmp
//! <dataset>/layers/<hex>@layer   a complete layer (hex = ChainID): a clone of its parent's
//!                                snapshot plus its diff, then snapshotted
//! <dataset>/rootfs/<id>          a container root filesystem, a clone of its image's top
//!                                layer snapshot, mounted where the caller asked
//! ```
//!
//! A layer is built under `tmp/`, snapshotted, and renamed into `layers/`, so `layers/`
//! only ever holds complete layers; opening the store destroys whatever `tmp/` holds. Layer
//! metadata lives in user properties (`pvecri:diffid`, `pvecri:parent`, and
//! `pvecri:inodes` on the snapshot), so one `zfs get -r` lists the store.

mod cmd;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use crate::apply::{ApplyOptions, IdShift, Target, apply_layer};
use crate::digest::Digest;
use crate::error::StoreError;
use crate::files::{self, StoreLock};
use crate::inflight::{Inflight, Role, Waited};
use crate::overlay::verify;
use crate::shift;
use crate::store::{
    LayerInfo, LayerRequest, LayerStore, RemoveOutcome, RootfsOptions, RootfsUsage, StoreOptions,
    Usage, looks_like_proxmox_volume, validate_rootfs_id,
};
use crate::sys;
use cmd::{Listing, NONE, prop};

const SNAPSHOT: &str = "layer";
const STORE_PROP: &str = "pvecri:store";
const SHIFT_PROP: &str = "pvecri:idshift";
const DIFF_PROP: &str = "pvecri:diffid";
const PARENT_PROP: &str = "pvecri:parent";
const INODES_PROP: &str = "pvecri:inodes";
/// On a container clone: the ID map asked for (`-` or absent: none) ...
const IDMAP_PROP: &str = "pvecri:idmap";
/// ... and the one its files were shifted to, set when the shift is complete.
const SHIFTED_PROP: &str = "pvecri:shifted";
const FORMAT_VERSION: &str = "1";

pub(crate) struct ZfsStore {
    dataset: String,
    mount_root: PathBuf,
    opts: StoreOptions,
    xattrs: bool,
    inflight: Inflight,
    mutate: Mutex<()>,
    _lock: StoreLock,
}

fn shift_value(shift: Option<IdShift>) -> String {
    match shift {
        None => NONE.to_owned(),
        Some(s) => format!("{}:{}:{}", s.uid_offset, s.gid_offset, s.count),
    }
}

fn validate_dataset(name: &str) -> Result<(), StoreError> {
    let bad = |why: &str| {
        Err(StoreError::InvalidRequest(format!(
            "zfs dataset {name:?}: {why}"
        )))
    };
    if name.is_empty() || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return bad("not a dataset name");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b))
    {
        return bad("may only contain letters, digits and _-.:/");
    }
    if name.split('/').any(looks_like_proxmox_volume) {
        return bad(
            "looks like a Proxmox volume (subvol-<vmid>-...), which Proxmox storage would claim",
        );
    }
    Ok(())
}

impl ZfsStore {
    pub(crate) fn open(
        dataset: &str,
        mount_root: &Path,
        opts: &StoreOptions,
    ) -> Result<ZfsStore, StoreError> {
        validate_dataset(dataset)?;
        files::ensure_dir(mount_root)?;
        let lock = StoreLock::acquire(&mount_root.join(".lock"))?;
        files::ensure_dir(&mount_root.join("tmp"))?;
        let store = ZfsStore {
            dataset: dataset.to_owned(),
            mount_root: mount_root.to_owned(),
            opts: opts.clone(),
            xattrs: false,
            inflight: Inflight::default(),
            mutate: Mutex::new(()),
            _lock: lock,
        };
        store.init_datasets()?;
        store.clean_leftovers()?;
        let xattrs = store.probe_xattrs()?;
        if !xattrs {
            tracing::warn!(
                dataset,
                "this ZFS does not store extended attributes (zfs-fuse): layer xattrs, file capabilities included, will be dropped"
            );
        }
        Ok(ZfsStore { xattrs, ..store })
    }

    fn child(&self, sub: &str) -> String {
        format!("{}/{sub}", self.dataset)
    }

    fn layer_name(&self, chain_id: &Digest) -> String {
        format!("{}/layers/{}", self.dataset, chain_id.hex())
    }

    fn snapshot_name(&self, chain_id: &Digest) -> String {
        format!("{}@{SNAPSHOT}", self.layer_name(chain_id))
    }

    fn rootfs_name(&self, id: &str) -> String {
        format!("{}/rootfs/{id}", self.dataset)
    }

    fn init_datasets(&self) -> Result<(), StoreError> {
        let shift = shift_value(self.opts.id_shift);
        let listing = cmd::get(&[STORE_PROP, SHIFT_PROP, "type"], &[&self.dataset], Some(1))?;
        if !listing.contains_key(&self.dataset) {
            cmd::run(&["create", "-p", "-o", "canmount=off", &self.dataset])?;
        }
        match prop(&listing, &self.dataset, STORE_PROP) {
            None => {
                cmd::run(&[
                    "set",
                    &format!("{STORE_PROP}={FORMAT_VERSION}"),
                    &self.dataset,
                ])?;
                cmd::run(&["set", &format!("{SHIFT_PROP}={shift}"), &self.dataset])?;
            }
            Some(FORMAT_VERSION) => {
                let existing = prop(&listing, &self.dataset, SHIFT_PROP).unwrap_or(NONE);
                if existing != shift {
                    return Err(StoreError::InvalidRequest(format!(
                        "the store {} was created with id shift {existing}, not {shift}",
                        self.dataset
                    )));
                }
            }
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "{} has store format {other}, expected {FORMAT_VERSION}",
                    self.dataset
                )));
            }
        }
        for sub in ["tmp", "layers", "rootfs"] {
            let name = self.child(sub);
            if listing.contains_key(&name) {
                continue;
            }
            // OpenZFS: xattrs in the inode and POSIX ACLs, as Proxmox sets them for CT
            // volumes; zfs-fuse only knows xattr=on|off and no acltype.
            let base = ["create", "-o", "canmount=off", "-o", "mountpoint=none"];
            let tuned = [
                &base[..],
                &["-o", "xattr=sa", "-o", "acltype=posixacl", &name],
            ]
            .concat();
            if let Err(e) = cmd::run(&tuned) {
                tracing::debug!(error = %e, "xattr=sa/acltype=posixacl refused; creating without them");
                cmd::run(&[&base[..], &[name.as_str()]].concat())?;
            }
        }
        Ok(())
    }

    /// Destroys everything under `tmp/` and layers without their snapshot, and removes
    /// mount directories left behind.
    fn clean_leftovers(&self) -> Result<(), StoreError> {
        let tmp = self.child("tmp");
        let listing = cmd::get(&["type"], &[&tmp, &self.child("layers")], Some(1))?;
        for name in listing.keys() {
            let leftover = (name.starts_with(&format!("{tmp}/")))
                || (name.starts_with(&format!("{}/", self.child("layers")))
                    && !self.has_snapshot(name)?);
            if leftover {
                tracing::info!(
                    dataset = name,
                    "destroying the leftover of an interrupted operation"
                );
                self.destroy(name)?;
            }
        }
        let dir = self.mount_root.join("tmp");
        for entry in std::fs::read_dir(&dir).map_err(|e| StoreError::io_at("listing", &dir, e))? {
            let entry = entry.map_err(|e| StoreError::io_at("listing", &dir, e))?;
            // Only empty mount directories: never delete files from a still-mounted dataset.
            let _ = std::fs::remove_dir(entry.path());
        }
        Ok(())
    }

    fn has_snapshot(&self, dataset: &str) -> Result<bool, StoreError> {
        let snap = format!("{dataset}@{SNAPSHOT}");
        Ok(cmd::get(&["type"], &[&snap], None)?.contains_key(&snap))
    }

    /// Unmounts and destroys a dataset with its snapshots; missing is fine.
    fn destroy(&self, name: &str) -> Result<(), StoreError> {
        match cmd::run(&["unmount", name]) {
            Ok(_) => {}
            Err(StoreError::Zfs { stderr, .. }) if stderr.contains("not currently mounted") => {}
            Err(e) if cmd::is_missing(&e) => return Ok(()),
            Err(e) => tracing::debug!(dataset = name, error = %e, "unmount before destroy failed"),
        }
        match cmd::run_retry_busy(&["destroy", "-r", name]) {
            Ok(_) => Ok(()),
            Err(e) if cmd::is_missing(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn probe_xattrs(&self) -> Result<bool, StoreError> {
        let name = format!("{}/{}", self.child("tmp"), files::unique_name("probe"));
        let mountpoint = self
            .mount_root
            .join("tmp")
            .join(name.rsplit('/').next().unwrap_or("probe"));
        cmd::run(&[
            "create",
            "-o",
            &format!("mountpoint={}", mountpoint.display()),
            &name,
        ])?;
        let result = (|| {
            ensure_mounted(&name, &mountpoint)?;
            let fd = sys::open_dir(&mountpoint)
                .map_err(|e| StoreError::io_at("opening", &mountpoint, e))?;
            Ok::<_, StoreError>(sys::fset_xattr(
                fd.as_fd(),
                OsStr::new("user.pvecri.probe"),
                b"1",
            ))
        })();
        self.destroy(&name)?;
        let _ = std::fs::remove_dir(&mountpoint);
        match result? {
            Ok(()) => Ok(true),
            Err(e) if sys::is_unsupported(&e) => Ok(false),
            Err(e) => Err(StoreError::io("probing xattr support", e)),
        }
    }

    fn info_from(
        &self,
        listing: &Listing,
        chain_id: &Digest,
    ) -> Result<Option<LayerInfo>, StoreError> {
        let name = self.layer_name(chain_id);
        if !listing.contains_key(&self.snapshot_name(chain_id)) || !listing.contains_key(&name) {
            return Ok(None);
        }
        let corrupt = |what: &str| StoreError::Corrupt(format!("{name}: {what}"));
        let diff_id = prop(listing, &name, DIFF_PROP)
            .ok_or_else(|| corrupt("no diff_id property"))
            .and_then(|v| Digest::parse(v).map_err(|e| corrupt(&e.to_string())))?;
        let parent = match prop(listing, &name, PARENT_PROP) {
            None | Some(NONE) => None,
            Some(v) => Some(Digest::parse(v).map_err(|e| corrupt(&e.to_string()))?),
        };
        let size = prop(listing, &name, "used")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Some(LayerInfo {
            chain_id: chain_id.clone(),
            parent,
            diff_id,
            size,
        }))
    }

    /// Returns the layer if it exists; otherwise checks the parent and applies it. One
    /// `zfs get` answers both questions.
    fn apply_checked(
        &self,
        req: &LayerRequest,
        reader: &mut dyn Read,
    ) -> Result<LayerInfo, StoreError> {
        let mut targets = vec![
            self.layer_name(&req.chain_id),
            self.snapshot_name(&req.chain_id),
        ];
        if let Some(parent) = &req.parent {
            targets.extend([self.layer_name(parent), self.snapshot_name(parent)]);
        }
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        let listing = cmd::get(&["used", DIFF_PROP, PARENT_PROP], &targets, None)?;
        if let Some(info) = self.info_from(&listing, &req.chain_id)? {
            return Ok(info);
        }
        if let Some(parent) = &req.parent
            && self.info_from(&listing, parent)?.is_none()
        {
            self.wait_for_parent(parent, &req.chain_id)?;
        }
        self.apply_new(req, reader)
    }

    /// Waits for a parent being applied in this process; errors if it is not.
    fn wait_for_parent(&self, parent: &Digest, child: &Digest) -> Result<(), StoreError> {
        match self.inflight.wait(parent, std::time::Duration::ZERO) {
            Waited::Finished(Ok(_)) => Ok(()),
            Waited::Finished(Err(e)) => Err(StoreError::ParentFailed {
                chain_id: child.clone(),
                parent: parent.clone(),
                message: e.to_string(),
            }),
            Waited::NotInFlight => Err(StoreError::ParentMissing {
                chain_id: child.clone(),
                parent: parent.clone(),
            }),
        }
    }

    fn apply_new(
        &self,
        req: &LayerRequest,
        reader: &mut dyn Read,
    ) -> Result<LayerInfo, StoreError> {
        let short = files::unique_name(&req.chain_id.hex()[..12]);
        let tmp = format!("{}/{short}", self.child("tmp"));
        let mountpoint = self.mount_root.join("tmp").join(&short);
        let mut args = vec![
            format!("mountpoint={}", mountpoint.display()),
            format!("{DIFF_PROP}={}", req.diff_id),
            format!(
                "{PARENT_PROP}={}",
                req.parent
                    .as_ref()
                    .map(Digest::to_string)
                    .unwrap_or_else(|| NONE.to_owned())
            ),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect::<Vec<_>>();
        match &req.parent {
            Some(parent) => {
                args.insert(0, "clone".into());
                args.push(self.snapshot_name(parent));
            }
            None => args.insert(0, "create".into()),
        }
        args.push(tmp.clone());
        // Armed first: a clone that exists but failed to mount must go too.
        let guard = DestroyOnDrop {
            store: self,
            name: Some(tmp.clone()),
            mountpoint: mountpoint.clone(),
        };
        cmd::run(&args.iter().map(String::as_str).collect::<Vec<_>>())?;

        let applied = {
            ensure_mounted(&tmp, &mountpoint)?;
            let root = sys::open_dir(&mountpoint)
                .map_err(|e| StoreError::io_at("opening", &mountpoint, e))?;
            if req.parent.is_none() {
                let (uid, gid) = self.opts.id_shift.map(|s| s.root()).unwrap_or((0, 0));
                nix::unistd::fchown(
                    root.as_fd(),
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                )
                .map_err(|e| StoreError::io_at("chown", &mountpoint, e.into()))?;
                nix::sys::stat::fchmod(root.as_fd(), Mode::from_bits_truncate(0o755))
                    .map_err(|e| StoreError::io_at("chmod", &mountpoint, e.into()))?;
            }
            let opts = ApplyOptions {
                id_shift: self.opts.id_shift,
                xattrs: self.xattrs,
                chown: true,
                ..ApplyOptions::default()
            };
            apply_layer(reader, req.compression, Target::Merged(root.as_fd()), &opts)?
        };
        verify(req, &applied.digests)?;

        // Unmounts it; a layer is only ever read through clones.
        cmd::run_retry_busy(&["set", "mountpoint=none", &tmp])?;
        let snapshot = format!("{tmp}@{SNAPSHOT}");
        cmd::run(&[
            "snapshot",
            "-o",
            &format!("{INODES_PROP}={}", applied.inodes_created),
            &snapshot,
        ])?;
        let dest = self.layer_name(&req.chain_id);
        // zfs-fuse may still be finishing the unmount above: the dataset is briefly busy.
        cmd::run_retry_busy(&["rename", &tmp, &dest])?;
        guard.disarm();
        let _ = std::fs::remove_dir(&mountpoint);
        let listing = cmd::get(
            &["used", DIFF_PROP, PARENT_PROP],
            &[&dest, &self.snapshot_name(&req.chain_id)],
            None,
        )?;
        let info = self.info_from(&listing, &req.chain_id)?.ok_or_else(|| {
            StoreError::Corrupt(format!("{dest} vanished after it was published"))
        })?;
        tracing::info!(chain_id = %req.chain_id, size = info.size, entries = applied.entries, "layer applied");
        Ok(info)
    }

    fn listing(&self) -> Result<Listing, StoreError> {
        cmd::get(
            &[
                "type",
                "origin",
                "used",
                "mountpoint",
                "mounted",
                DIFF_PROP,
                PARENT_PROP,
                INODES_PROP,
            ],
            &[&self.dataset],
            Some(0),
        )
    }

    fn layer_ids(&self, listing: &Listing) -> Vec<Digest> {
        let prefix = format!("{}/", self.child("layers"));
        listing
            .keys()
            .filter_map(|name| name.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('@') && !rest.contains('/'))
            .filter_map(|hex| Digest::from_hex(hex).ok())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.mutate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether `path` is a mount point (its device differs from its parent's).
fn is_mounted(path: &Path) -> Result<bool, StoreError> {
    let md = match std::fs::metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io_at("stat", path, e)),
    };
    let parent = path.parent().unwrap_or(Path::new("/"));
    let pmd = std::fs::metadata(parent).map_err(|e| StoreError::io_at("stat", parent, e))?;
    Ok(md.dev() != pmd.dev())
}

/// Makes sure `dataset` is mounted at `path` before anything is written there: writing
/// into the directory of a dataset that did not mount would fill the host's disk. zfs-fuse
/// may finish a mount after `zfs create`/`clone` returned, so this waits a little, then
/// asks for the mount explicitly.
fn ensure_mounted(dataset: &str, path: &Path) -> Result<(), StoreError> {
    let wait = |limit: Duration| -> Result<bool, StoreError> {
        let deadline = Instant::now() + limit;
        loop {
            if is_mounted(path)? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    if wait(Duration::from_secs(2))? {
        return Ok(());
    }
    match cmd::run_retry_busy(&["mount", dataset]) {
        Ok(_) => {}
        Err(StoreError::Zfs { stderr, .. }) if stderr.contains("already mounted") => {}
        Err(e) => return Err(e),
    }
    if wait(Duration::from_secs(5))? {
        return Ok(());
    }
    Err(StoreError::Zfs {
        command: format!("zfs mount {dataset}"),
        stderr: format!("{} is still not a mount point", path.display()),
    })
}

struct DestroyOnDrop<'a> {
    store: &'a ZfsStore,
    name: Option<String>,
    mountpoint: PathBuf,
}

impl DestroyOnDrop<'_> {
    fn disarm(mut self) {
        self.name = None;
    }
}

impl Drop for DestroyOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            if let Err(e) = self.store.destroy(&name) {
                tracing::warn!(dataset = name, error = %e, "cannot destroy a failed layer's dataset; the next open will");
            }
            let _ = std::fs::remove_dir(&self.mountpoint);
        }
    }
}

impl LayerStore for ZfsStore {
    fn driver(&self) -> &'static str {
        "zfs"
    }

    fn layer(&self, chain_id: &Digest) -> Result<Option<LayerInfo>, StoreError> {
        let name = self.layer_name(chain_id);
        let listing = cmd::get(
            &["used", DIFF_PROP, PARENT_PROP],
            &[&name, &self.snapshot_name(chain_id)],
            None,
        )?;
        self.info_from(&listing, chain_id)
    }

    fn layers(&self) -> Result<Vec<LayerInfo>, StoreError> {
        let listing = cmd::get(
            &["used", DIFF_PROP, PARENT_PROP],
            &[&self.child("layers")],
            Some(0),
        )?;
        let mut out = Vec::new();
        for id in self.layer_ids(&listing) {
            if let Some(info) = self.info_from(&listing, &id)? {
                out.push(info);
            }
        }
        Ok(out)
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
        let result = self.apply_checked(req, reader);
        leader.finish(result)
    }

    fn parallel_apply(&self) -> bool {
        false
    }

    fn create_rootfs(
        &self,
        id: &str,
        top: Option<&Digest>,
        target: &Path,
        opts: &RootfsOptions,
    ) -> Result<(), StoreError> {
        validate_rootfs_id(id)?;
        let map_text = match &opts.idmap {
            Some(map) if !map.is_valid() => {
                return Err(StoreError::InvalidRequest(format!(
                    "root filesystem {id}: ID map {} is empty or wraps",
                    map.to_text()
                )));
            }
            Some(map) => map.to_text(),
            None => NONE.to_owned(),
        };
        let _guard = self.lock();
        let name = self.rootfs_name(id);
        let origin = top.map(|t| self.snapshot_name(t));
        let existing = cmd::get(
            &["origin", "mountpoint", "mounted", IDMAP_PROP, SHIFTED_PROP],
            &[&name],
            None,
        )?;
        if existing.contains_key(&name) {
            let same = prop(&existing, &name, "origin") == origin.as_deref()
                && prop(&existing, &name, "mountpoint") == Some(&target.to_string_lossy())
                && prop(&existing, &name, IDMAP_PROP).unwrap_or(NONE) == map_text;
            if !same {
                return Err(StoreError::RootfsConflict { id: id.to_owned() });
            }
            if opts.idmap.is_none() || prop(&existing, &name, SHIFTED_PROP) == Some(&map_text) {
                if prop(&existing, &name, "mounted") != Some("yes") {
                    cmd::run_retry_busy(&["mount", &name])?;
                }
                return Ok(());
            }
            // A create cut short while shifting (it never returned): start over.
            tracing::info!(id, "redoing a root filesystem whose shift did not finish");
            self.destroy(&name)?;
        }
        if let Some(top) = top
            && self.layer(top)?.is_none()
        {
            return Err(StoreError::LayerNotFound(top.clone()));
        }
        let mut args: Vec<String> = vec![match &origin {
            Some(_) => "clone".into(),
            None => "create".into(),
        }];
        args.extend(["-o".into(), format!("mountpoint={}", target.display())]);
        if opts.idmap.is_some() {
            args.extend(["-o".into(), format!("{IDMAP_PROP}={map_text}")]);
        }
        if let Some(q) = opts.quota_bytes {
            args.extend(["-o".into(), format!("refquota={q}")]);
        }
        args.extend(origin.iter().cloned());
        args.push(name.clone());
        let done = (|| {
            // A clone made but not mounted (a non-empty target, say) fails here too.
            cmd::run(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
            ensure_mounted(&name, target)?;
            if top.is_none() {
                let (uid, gid) = self.opts.id_shift.map(|s| s.root()).unwrap_or((0, 0));
                std::os::unix::fs::chown(target, Some(uid), Some(gid))
                    .map_err(|e| StoreError::io_at("chown", target, e))?;
            }
            if let Some(map) = &opts.idmap {
                // The clone is the container's own: shift it in place (zfs-fuse, like any
                // FUSE file system, has no idmapped mounts).
                let stats = shift::shift_tree(target, map, true)?;
                tracing::info!(
                    id,
                    entries = stats.entries,
                    unmapped = stats.unmapped,
                    "root filesystem shifted"
                );
                cmd::run(&["set", &format!("{SHIFTED_PROP}={map_text}"), &name])?;
            }
            Ok(())
        })();
        if let Err(e) = done {
            if let Err(cleanup) = self.destroy(&name) {
                tracing::warn!(id, error = %cleanup, "cannot destroy a root filesystem that failed to mount");
            }
            return Err(e);
        }
        tracing::info!(id, top = ?top, target = %target.display(), "root filesystem mounted");
        Ok(())
    }

    fn remove_rootfs(&self, id: &str) -> Result<(), StoreError> {
        validate_rootfs_id(id)?;
        let _guard = self.lock();
        self.destroy(&self.rootfs_name(id))
    }

    fn rootfs_ids(&self) -> Result<Vec<String>, StoreError> {
        let parent = self.child("rootfs");
        let listing = cmd::get(&["type"], &[&parent], Some(1))?;
        let prefix = format!("{parent}/");
        Ok(listing
            .keys()
            .filter_map(|n| n.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('@') && !rest.contains('/'))
            .map(str::to_owned)
            .collect())
    }

    fn remove_layer(&self, chain_id: &Digest) -> Result<RemoveOutcome, StoreError> {
        let _guard = self.lock();
        if self.inflight.is_in_flight(chain_id) || self.inflight.has_child_of(chain_id) {
            return Ok(RemoveOutcome::InUse);
        }
        let listing = self.listing()?;
        if self.info_from(&listing, chain_id)?.is_none() {
            return Ok(RemoveOutcome::NotFound);
        }
        let snapshot = self.snapshot_name(chain_id);
        if listing
            .keys()
            .any(|n| prop(&listing, n, "origin") == Some(snapshot.as_str()))
        {
            return Ok(RemoveOutcome::InUse);
        }
        match cmd::run_retry_busy(&["destroy", "-r", &self.layer_name(chain_id)]) {
            Ok(_) => {}
            // A clone made after the listing.
            Err(StoreError::Zfs { stderr, .. }) if stderr.contains("dependent clones") => {
                return Ok(RemoveOutcome::InUse);
            }
            Err(e) => return Err(e),
        }
        tracing::info!(%chain_id, "layer removed");
        Ok(RemoveOutcome::Removed)
    }

    fn usage(&self) -> Result<Usage, StoreError> {
        let listing = self.listing()?;
        let used_bytes = prop(&listing, &self.dataset, "used")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // Inodes: what each layer created, plus what each mounted container added on top
        // of its image (statvfs counts a whole clone, shared objects included).
        let layer_inodes = self.layer_inodes(&listing);
        let mut used_inodes: u64 = layer_inodes.values().sum();
        used_inodes += self
            .rootfs_usage_from(&listing, &layer_inodes)
            .values()
            .map(|u| u.inodes)
            .sum::<u64>();
        Ok(Usage {
            used_bytes,
            used_inodes,
            mountpoint: self.mount_root.clone(),
        })
    }

    fn rootfs_usage(&self) -> Result<BTreeMap<String, RootfsUsage>, StoreError> {
        let listing = self.listing()?;
        let layer_inodes = self.layer_inodes(&listing);
        Ok(self.rootfs_usage_from(&listing, &layer_inodes))
    }

    fn xattrs_supported(&self) -> bool {
        self.xattrs
    }
}

impl ZfsStore {
    /// Inodes each complete layer created (recorded on its snapshot).
    fn layer_inodes(&self, listing: &Listing) -> BTreeMap<Digest, u64> {
        self.layer_ids(listing)
            .into_iter()
            .map(|id| {
                let n = prop(listing, &self.snapshot_name(&id), INODES_PROP)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                (id, n)
            })
            .collect()
    }

    /// A clone's `used` is what it holds beyond its origin snapshot: its writable layer.
    /// Inodes are those of the mounted clone less those of its image's layers; an unmounted
    /// clone counts none.
    fn rootfs_usage_from(
        &self,
        listing: &Listing,
        layer_inodes: &BTreeMap<Digest, u64>,
    ) -> BTreeMap<String, RootfsUsage> {
        let rootfs_prefix = format!("{}/", self.child("rootfs"));
        let mut out = BTreeMap::new();
        for (name, props) in listing {
            let Some(id) = name.strip_prefix(&rootfs_prefix) else {
                continue;
            };
            if id.contains('@') || id.contains('/') {
                continue;
            }
            let bytes = prop(listing, name, "used")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut inodes = 0;
            if props.get("mounted").map(String::as_str) == Some("yes")
                && let Some(mountpoint) = prop(listing, name, "mountpoint")
                && let Ok(st) = nix::sys::statvfs::statvfs(mountpoint)
            {
                let total = st.files().saturating_sub(st.files_free());
                let image = self.chain_inodes(listing, prop(listing, name, "origin"), layer_inodes);
                inodes = total.saturating_sub(image);
            }
            out.insert(id.to_string(), RootfsUsage { bytes, inodes });
        }
        out
    }

    /// Inodes created by the layers of the chain whose top snapshot is `origin`.
    fn chain_inodes(
        &self,
        listing: &Listing,
        origin: Option<&str>,
        layer_inodes: &BTreeMap<Digest, u64>,
    ) -> u64 {
        let prefix = format!("{}/", self.child("layers"));
        let mut next = origin
            .and_then(|o| o.strip_prefix(&prefix))
            .and_then(|o| o.strip_suffix(&format!("@{SNAPSHOT}")))
            .and_then(|hex| Digest::from_hex(hex).ok());
        let mut total = 0;
        let mut steps = 0;
        while let Some(id) = next {
            total += layer_inodes.get(&id).copied().unwrap_or(0);
            next = prop(listing, &self.layer_name(&id), PARENT_PROP)
                .and_then(|p| Digest::parse(p).ok());
            steps += 1;
            if steps > 1000 {
                break;
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names() {
        assert!(validate_dataset("rpool/pvecri").is_ok());
        assert!(validate_dataset("tank/data/pvecri-layers").is_ok());
        for bad in [
            "",
            "/rpool",
            "rpool/",
            "rpool//x",
            "rpool/a b",
            "rpool/x@snap",
            "rpool/data/subvol-100-disk-0",
        ] {
            assert!(validate_dataset(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn id_shift_property_round_trip_values() {
        assert_eq!(shift_value(None), "none");
        assert_eq!(
            shift_value(Some(IdShift::PROXMOX_DEFAULT)),
            "100000:100000:65536"
        );
    }
}
