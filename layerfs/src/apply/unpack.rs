//! The file system side of layer application: one tar entry at a time, every operation
//! relative to a directory fd that was opened without leaving the layer root.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, makedev, mkdirat, mknodat};
use nix::sys::time::TimeSpec;
use nix::unistd::{UnlinkatFlags, linkat, symlinkat, unlinkat};

use super::archive::Entry as TarEntry;
use super::header::kind as tar_kind;
use super::inroot::{self, WalkError};
use super::meta::{Dropped, Meta, MetaOptions, is_overlay_xattr};
use super::names::{EntryPath, NameKind, classify, join};
use super::sparse;
use super::view::{LayerView, Node, OPAQUE_XATTR, ResolveError, Resolved};
use super::{ApplyOptions, LowerLayers, Target};
use crate::error::StoreError;
use crate::sys::{self, Resolve};

const COPY_BUFFER: usize = 256 * 1024;

/// Counters reported after a layer is applied.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stats {
    pub entries: u64,
    pub inodes_created: u64,
    pub devices_skipped: u64,
}

/// An open directory inside the root and its real path (no symlinks) relative to the root.
struct Dir {
    fd: OwnedFd,
    real: PathBuf,
}

/// Whether a missing directory may be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Create missing directories (the parents of a new entry).
    Create,
    /// Only an existing directory will do; `None` if it is missing.
    Existing,
}

/// What to do with whatever exists where a new entry goes.
enum Slot {
    Create { opaque: bool },
    UpdateDir,
}

struct OverlayState<'a> {
    lowers: Option<&'a mut dyn LowerLayers>,
    view: Option<Rc<LayerView>>,
    /// `.wh..wh..opq` at the layer root, which overlayfs would ignore as an xattr there.
    root_opaque: bool,
    /// Whiteouts made (real paths). One that hides nothing is removed at the end: in a
    /// directory that merges no lower one, overlayfs would list it as a name that
    /// cannot be looked up.
    whiteouts: Vec<PathBuf>,
    /// Per lower layer: inode -> paths, for files with several links.
    link_index: HashMap<usize, HashMap<u64, Vec<Vec<OsString>>>>,
}

enum LayerMode<'a> {
    Merged,
    Overlay(OverlayState<'a>),
}

pub(crate) struct Unpacker<'a> {
    root: BorrowedFd<'a>,
    root_path: PathBuf,
    mode: LayerMode<'a>,
    /// Real paths this layer's entries made (and their ancestors). Whiteouts and opaque
    /// markers only remove what came from lower layers, and on overlay what was copied up
    /// from them.
    unpacked: HashSet<PathBuf>,
    opts: ApplyOptions,
    dropped: Dropped,
    dir_times: Vec<(PathBuf, TimeSpec, TimeSpec)>,
    cache: Option<(PathBuf, Rc<Dir>)>,
    buf: Vec<u8>,
    stats: Stats,
}

fn sys_err(what: &str, entry: &str, e: Errno) -> StoreError {
    StoreError::io(format!("{what} for entry {entry:?}"), io::Error::from(e))
}

impl<'a> Unpacker<'a> {
    pub(crate) fn new(target: Target<'a>, opts: &ApplyOptions) -> Result<Unpacker<'a>, StoreError> {
        let (root, mode) = match target {
            Target::Merged(root) => (root, LayerMode::Merged),
            Target::Overlay { dir, lowers } => (
                dir,
                LayerMode::Overlay(OverlayState {
                    lowers: Some(lowers),
                    view: None,
                    root_opaque: false,
                    whiteouts: Vec::new(),
                    link_index: HashMap::new(),
                }),
            ),
        };
        let root_path =
            sys::fd_path(root).map_err(|e| StoreError::io("resolving the layer root", e))?;
        Ok(Unpacker {
            root,
            root_path,
            mode,
            unpacked: HashSet::new(),
            opts: opts.clone(),
            dropped: Dropped::default(),
            dir_times: Vec::new(),
            cache: None,
            buf: vec![0u8; COPY_BUFFER],
            stats: Stats::default(),
        })
    }

    fn meta_opts(&self) -> MetaOptions {
        MetaOptions {
            shift: self.opts.id_shift,
            xattrs: self.opts.xattrs,
            chown: self.opts.chown,
        }
    }

    fn is_overlay(&self) -> bool {
        matches!(self.mode, LayerMode::Overlay(_))
    }

    /// Applies one tar entry.
    pub(crate) fn entry<R: Read>(&mut self, entry: &mut TarEntry<'_, R>) -> Result<(), StoreError> {
        let kind = entry.header.typeflag;
        if kind == tar_kind::PAX_GLOBAL {
            return Ok(());
        }
        let raw = entry.header.name.clone();
        let name = String::from_utf8_lossy(&raw).into_owned();
        self.stats.entries += 1;
        // Before anything else, as containerd's `skipFile`: even a whiteout so typed.
        if matches!(kind, tar_kind::CHAR | tar_kind::BLOCK) && !self.opts.devices {
            tracing::warn!(entry = %name, "device ignored: devices cannot be made in a user namespace");
            self.stats.devices_skipped += 1;
            return Ok(());
        }
        let path = EntryPath::parse(&raw, &name)?;
        // An entry for the root itself (`/`, `./`, `a/..`), of whatever type, is ignored,
        // as containerd ignores it ("resolved to root"): the root keeps the metadata the
        // store gives it.
        let Some(last) = path.name() else {
            return Ok(());
        };
        match classify(last, &name)? {
            NameKind::Opaque => return self.opaque(path.parent(), &name),
            NameKind::Whiteout(target) => return self.whiteout(path.parent(), &target, &name),
            NameKind::Normal => {}
        }
        let last = last.to_owned();
        if kind == tar_kind::LINK {
            let target = EntryPath::parse(&entry.header.linkname, &name)?;
            let parent = self.dir(path.parent(), &name, Need::Create, "parent")?;
            return self.hardlink(&parent, &last, &target, &name);
        }
        let meta = Meta::from_header(&entry.header, &name, &self.meta_opts(), &mut self.dropped)?;
        let parent = self.dir(path.parent(), &name, Need::Create, "parent")?;
        match kind {
            tar_kind::DIR => self.make_dir(&parent, &last, &meta, &name),
            // `S`: the old GNU sparse form. containerd refuses it (its own switch lacks the
            // type Go's reader leaves it with); reading it as the file it is loses nothing.
            tar_kind::REG | tar_kind::GNU_SPARSE => {
                self.make_file(&parent, &last, &meta, entry, &name)
            }
            tar_kind::SYMLINK => {
                let target = entry.header.linkname.clone();
                if target.is_empty() {
                    return Err(StoreError::invalid(&name, "symlink with an empty target"));
                }
                self.make_symlink(&parent, &last, &target, &meta, &name)
            }
            tar_kind::CHAR | tar_kind::BLOCK | tar_kind::FIFO => {
                let sflag = match kind {
                    tar_kind::CHAR => SFlag::S_IFCHR,
                    tar_kind::BLOCK => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let number = |n: i64, what: &str| {
                    u32::try_from(n).map_err(|_| {
                        StoreError::invalid(&name, format!("device {what} number {n} out of range"))
                    })
                };
                let (major, minor) = (
                    number(entry.header.devmajor, "major")?,
                    number(entry.header.devminor, "minor")?,
                );
                let dev = if sflag == SFlag::S_IFIFO {
                    0
                } else {
                    makedev(u64::from(major), u64::from(minor))
                };
                self.make_node(&parent, &last, sflag, dev, &meta, &name)
            }
            // containerd refuses what its switch does not know, contiguous files (`7`)
            // included, though GNU tar would write them as regular files.
            tar_kind::CONT => Err(StoreError::invalid(
                &name,
                "unsupported tar entry type '7' (contiguous file), as in containerd",
            )),
            other => Err(StoreError::invalid(
                &name,
                format!("unsupported tar entry type {:?}", other as char),
            )),
        }
    }

    /// Finishes the layer: directory times (their children are all in place now) and, on
    /// the overlay driver, an opaque root.
    pub(crate) fn finish(mut self) -> Result<(Stats, Dropped), StoreError> {
        self.finish_root_opaque()?;
        self.remove_needless_whiteouts()?;
        for (real, atime, mtime) in std::mem::take(&mut self.dir_times) {
            let fd = match sys::open_dir_beneath(self.root, &real, Resolve::NoSymlinks) {
                Ok(fd) => fd,
                // Replaced by a later entry.
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => continue,
                Err(e) => return Err(sys_err("opening directory", &real.display().to_string(), e)),
            };
            nix::sys::stat::futimens(fd.as_fd(), &atime, &mtime)
                .map_err(|e| sys_err("setting times", &real.display().to_string(), e))?;
        }
        if self.dropped.unsupported_xattrs > 0 {
            tracing::warn!(
                count = self.dropped.unsupported_xattrs,
                "extended attributes dropped: the file system of the store does not support them"
            );
        }
        if self.dropped.ignored_xattrs > 0 {
            tracing::warn!(
                count = self.dropped.ignored_xattrs,
                "trusted.* and overlayfs xattrs in the layer ignored, as containerd ignores them"
            );
        }
        Ok((self.stats, self.dropped))
    }

    // ---- directories ---------------------------------------------------------------

    fn real_of(&self, fd: BorrowedFd<'_>) -> Result<PathBuf, StoreError> {
        let path = sys::fd_path(fd).map_err(|e| StoreError::io("resolving a directory path", e))?;
        path.strip_prefix(&self.root_path)
            .map(Path::to_path_buf)
            .map_err(|_| {
                StoreError::Corrupt(format!("{} is not below the layer root", path.display()))
            })
    }

    fn open_root(&self) -> Result<OwnedFd, StoreError> {
        sys::open_dir_beneath(self.root, Path::new(""), Resolve::NoSymlinks)
            .map_err(|e| sys_err("opening", "layer root", e))
    }

    /// The directory `components` inside the root, resolved the way the entry `entry`
    /// needs it. `what` names the role of the directory in errors.
    fn dir(
        &mut self,
        components: &[OsString],
        entry: &str,
        need: Need,
        what: &str,
    ) -> Result<Rc<Dir>, StoreError> {
        let literal = join(components);
        if let Some((key, dir)) = &self.cache
            && *key == literal
        {
            return Ok(dir.clone());
        }
        let found = if self.is_overlay() {
            self.overlay_dir(components, entry, need, what)?
        } else {
            self.merged_dir(components, entry, need, what)?
        };
        let Some(dir) = found else {
            return Err(StoreError::invalid(
                entry,
                format!("{what} directory {} does not exist", literal.display()),
            ));
        };
        let dir = Rc::new(dir);
        // Only a path of real directories stays valid until something is removed (which
        // clears the cache); one through symlinks can change meaning when a later entry
        // shadows a link.
        if dir.real == literal {
            self.cache = Some((literal, dir.clone()));
        }
        Ok(dir)
    }

    /// Like [`Self::dir`], but `None` when the directory does not exist.
    fn existing_dir(
        &mut self,
        components: &[OsString],
        entry: &str,
        what: &str,
    ) -> Result<Option<Rc<Dir>>, StoreError> {
        let found = if self.is_overlay() {
            self.overlay_dir(components, entry, Need::Existing, what)?
        } else {
            self.merged_dir(components, entry, Need::Existing, what)?
        };
        Ok(found.map(Rc::new))
    }

    fn merged_dir(
        &mut self,
        components: &[OsString],
        entry: &str,
        need: Need,
        what: &str,
    ) -> Result<Option<Dir>, StoreError> {
        let rel = join(components);
        // The common case: a path of real directories.
        match sys::open_dir_beneath(self.root, &rel, Resolve::NoSymlinks) {
            Ok(fd) => return Ok(Some(Dir { fd, real: rel })),
            Err(Errno::ELOOP) | Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => {}
            Err(e) => return Err(sys_err("opening directory", entry, e)),
        }
        let found = match inroot::resolve_dir(self.root, components) {
            Ok(found) => found,
            Err(WalkError::NotDir) => return self.not_a_dir(need, entry, what, &rel),
            Err(WalkError::TooManySymlinks) => {
                return Err(StoreError::invalid(
                    entry,
                    format!("too many symlinks in the {what} path"),
                ));
            }
            Err(WalkError::Sys(e)) => return Err(sys_err("resolving directory", entry, e)),
        };
        let mut real = join(&found.existing);
        if found.missing.is_empty() {
            return Ok(Some(Dir { fd: found.fd, real }));
        }
        if need == Need::Existing {
            return Ok(None);
        }
        // Missing directories are made where the path resolves to (through a dangling
        // symlink, its target), with default owner and mode, like containerd.
        let mut cur = found.fd;
        for name in &found.missing {
            let meta = Meta::default_dir(self.opts.id_shift.as_ref());
            cur = self.new_dir(cur.as_fd(), name, &meta, entry)?;
            real.push(name);
            self.mark_unpacked(&real);
        }
        Ok(Some(Dir { fd: cur, real }))
    }

    fn not_a_dir(
        &self,
        need: Need,
        entry: &str,
        what: &str,
        rel: &Path,
    ) -> Result<Option<Dir>, StoreError> {
        match need {
            Need::Existing => Ok(None),
            Need::Create => Err(StoreError::invalid(
                entry,
                format!(
                    "{what} path {} has a component that is not a directory",
                    rel.display()
                ),
            )),
        }
    }

    fn overlay_dir(
        &mut self,
        components: &[OsString],
        entry: &str,
        need: Need,
        what: &str,
    ) -> Result<Option<Dir>, StoreError> {
        let rel = join(components);
        match sys::open_dir_beneath(self.root, &rel, Resolve::NoSymlinks) {
            Ok(fd) => return Ok(Some(Dir { fd, real: rel })),
            // A path this layer resolves on its own is what the merged view resolves it to:
            // its entries are on top of everything below.
            Err(Errno::ELOOP) => match sys::open_dir_beneath(self.root, &rel, Resolve::InRoot) {
                Ok(fd) => {
                    let real = self.real_of(fd.as_fd())?;
                    return Ok(Some(Dir { fd, real }));
                }
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {}
                Err(e) => return Err(sys_err("opening directory", entry, e)),
            },
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => {}
            Err(e) => return Err(sys_err("opening directory", entry, e)),
        }
        // Not (entirely) in this layer: ask the merged view of this layer and its parents.
        let view = self.view()?;
        let resolved = match view.resolve(components, true) {
            Ok(r) => r,
            Err(e) => {
                return match e {
                    ResolveError::NotDir if need == Need::Existing => Ok(None),
                    other => Err(self.resolve_error(other, entry, what, &rel)),
                };
            }
        };
        match resolved.last() {
            Some(Node::Other { .. }) => return self.not_a_dir(need, entry, what, &rel),
            Some(Node::Missing) if need == Need::Existing => return Ok(None),
            _ => {}
        }
        self.materialize_dirs(&view, &resolved, entry).map(Some)
    }

    fn resolve_error(&self, e: ResolveError, entry: &str, what: &str, rel: &Path) -> StoreError {
        match e {
            ResolveError::TooManySymlinks => {
                StoreError::invalid(entry, format!("too many symlinks in the {what} path"))
            }
            ResolveError::NotDir => StoreError::invalid(
                entry,
                format!(
                    "{what} path {} has a component that is not a directory",
                    rel.display()
                ),
            ),
            ResolveError::Sys(e) => sys_err("looking up the lower layers", entry, e),
        }
    }

    /// The merged view of this layer over its parents, waiting for the parents if needed.
    fn view(&mut self) -> Result<Rc<LayerView>, StoreError> {
        let root = self.open_root()?;
        let LayerMode::Overlay(state) = &mut self.mode else {
            return Err(StoreError::Corrupt(
                "lower layers asked for in merged mode".into(),
            ));
        };
        if let Some(view) = &state.view {
            return Ok(view.clone());
        }
        let lowers = match state.lowers.take() {
            Some(l) => l.lower_dirs()?,
            None => Vec::new(),
        };
        let mut layers = vec![root];
        layers.extend(lowers);
        let view = Rc::new(LayerView::new(layers));
        if state.root_opaque {
            view.set_root_opaque();
        }
        state.view = Some(view.clone());
        Ok(view)
    }

    /// Makes every directory of `resolved` exist in this layer: copied up (metadata only)
    /// from the topmost lower layer holding it, or new.
    fn materialize_dirs(
        &mut self,
        view: &LayerView,
        resolved: &Resolved,
        entry: &str,
    ) -> Result<Dir, StoreError> {
        let mut cur = self.open_root()?;
        for (i, (name, node)) in resolved.real.iter().zip(&resolved.nodes).enumerate() {
            let existing =
                sys::lstat_at(cur.as_fd(), name).map_err(|e| sys_err("lstat", entry, e))?;
            match existing {
                Some(st) if sys::is_dir(&st) => {}
                Some(st) if sys::is_whiteout(&st) => {
                    // Deleted from the lower layers by this very layer, now a directory again.
                    unlinkat(cur.as_fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir)
                        .map_err(|e| sys_err("removing whiteout", entry, e))?;
                    let fd = self.new_dir(
                        cur.as_fd(),
                        name,
                        &Meta::default_dir(self.opts.id_shift.as_ref()),
                        entry,
                    )?;
                    set_opaque(fd.as_fd(), entry)?;
                }
                Some(_) => {
                    return Err(StoreError::invalid(
                        entry,
                        "a directory of the path is not a directory in this layer",
                    ));
                }
                None => match node {
                    Node::Dir { layers } if layers.first().is_some_and(|l| *l != 0) => {
                        self.copy_up_dir(
                            view,
                            layers[0],
                            &resolved.real[..i],
                            name,
                            cur.as_fd(),
                            entry,
                        )?;
                    }
                    _ => {
                        self.new_dir(
                            cur.as_fd(),
                            name,
                            &Meta::default_dir(self.opts.id_shift.as_ref()),
                            entry,
                        )?;
                    }
                },
            }
            cur = sys::open_child_dir(cur.as_fd(), name)
                .map_err(|e| sys_err("opening directory", entry, e))?;
        }
        Ok(Dir {
            fd: cur,
            real: join(&resolved.real),
        })
    }

    fn new_dir(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
        entry: &str,
    ) -> Result<OwnedFd, StoreError> {
        mkdirat(parent, name, Mode::from_bits_truncate(0o700))
            .map_err(|e| sys_err("creating directory", entry, e))?;
        let fd = sys::open_child_dir(parent, name)
            .map_err(|e| sys_err("opening directory", entry, e))?;
        meta.apply_to_fd(
            fd.as_fd(),
            &self.meta_opts(),
            false,
            entry,
            &mut self.dropped,
        )?;
        self.stats.inodes_created += 1;
        Ok(fd)
    }

    fn copy_up_dir(
        &mut self,
        view: &LayerView,
        layer: usize,
        parent_real: &[OsString],
        name: &OsStr,
        dst_parent: BorrowedFd<'_>,
        entry: &str,
    ) -> Result<(), StoreError> {
        let src_parent = view
            .open_in(layer, parent_real)
            .map_err(|e| sys_err("opening lower directory", entry, e))?;
        let st = sys::lstat_at(src_parent.as_fd(), name)
            .map_err(|e| sys_err("lstat in lower layer", entry, e))?
            .ok_or_else(|| StoreError::invalid(entry, "lower directory vanished"))?;
        let meta = self.meta_from_lower(src_parent.as_fd(), name, &st, entry)?;
        let fd = self.new_dir(dst_parent, name, &meta, entry)?;
        let mut real = join(parent_real);
        real.push(name);
        self.dir_times.push((real, meta.atime, meta.mtime));
        drop(fd);
        Ok(())
    }

    fn meta_from_lower(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        st: &FileStat,
        entry: &str,
    ) -> Result<Meta, StoreError> {
        let xattrs = sys::list_xattrs_at(dir, name)
            .map_err(|e| {
                StoreError::io(format!("reading xattrs in a lower layer for {entry:?}"), e)
            })?
            .into_iter()
            .filter(|(n, _)| !is_overlay_xattr(n.as_bytes()))
            .collect();
        Ok(Meta {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
            atime: TimeSpec::new(st.st_atime, st.st_atime_nsec),
            mtime: TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
            xattrs,
        })
    }

    // ---- bookkeeping ---------------------------------------------------------------

    fn mark_unpacked(&mut self, real: &Path) {
        let mut p = real;
        while !p.as_os_str().is_empty() && self.unpacked.insert(p.to_path_buf()) {
            match p.parent() {
                Some(parent) => p = parent,
                None => break,
            }
        }
    }

    fn invalidate(&mut self) {
        self.cache = None;
    }

    /// Clears the way for a new entry `name` in `parent`.
    fn slot(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        new_is_dir: bool,
        entry: &str,
    ) -> Result<Slot, StoreError> {
        let existing =
            sys::lstat_at(parent.fd.as_fd(), name).map_err(|e| sys_err("lstat", entry, e))?;
        let Some(st) = existing else {
            return Ok(Slot::Create { opaque: false });
        };
        let overlay = self.is_overlay();
        if sys::is_dir(&st) {
            if new_is_dir {
                return Ok(Slot::UpdateDir);
            }
            self.invalidate();
            sys::remove_all_at(parent.fd.as_fd(), name)
                .map_err(|e| sys_err("removing existing directory", entry, e))?;
            return Ok(Slot::Create { opaque: false });
        }
        self.invalidate();
        unlinkat(parent.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| sys_err("removing existing entry", entry, e))?;
        // On overlay, a non-directory of this layer (or a whiteout) hid the lower
        // directory; a directory replacing it must keep hiding it.
        Ok(Slot::Create {
            opaque: overlay && new_is_dir,
        })
    }

    /// Creates a non-directory with `create`, clearing the way first only if something is
    /// in it (one system call for the common case of a new name).
    fn create_non_dir<T>(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        entry: &str,
        what: &str,
        create: impl Fn() -> nix::Result<T>,
    ) -> Result<T, StoreError> {
        match create() {
            Ok(v) => Ok(v),
            Err(Errno::EEXIST) => {
                self.slot(parent, name, false, entry)?;
                create().map_err(|e| sys_err(what, entry, e))
            }
            Err(e) => Err(sys_err(what, entry, e)),
        }
    }

    // ---- entries -------------------------------------------------------------------

    /// Removes xattrs of an existing directory that the entry replacing it does not have.
    fn replace_xattrs(
        &mut self,
        fd: BorrowedFd<'_>,
        meta: &Meta,
        entry: &str,
    ) -> Result<(), StoreError> {
        if !self.opts.xattrs {
            return Ok(());
        }
        let existing = sys::list_xattrs_at(fd, OsStr::new("."))
            .map_err(|e| StoreError::io(format!("listing xattrs of {entry:?}"), e))?;
        for (name, _) in existing {
            if is_overlay_xattr(name.as_bytes()) || meta.xattrs.iter().any(|(n, _)| *n == name) {
                continue;
            }
            sys::fremove_xattr(fd, &name)
                .map_err(|e| StoreError::io(format!("removing xattr {name:?} of {entry:?}"), e))?;
        }
        Ok(())
    }

    fn make_dir(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        meta: &Meta,
        entry: &str,
    ) -> Result<(), StoreError> {
        let fd = match self.slot(parent, name, true, entry)? {
            Slot::UpdateDir => {
                let fd = sys::open_child_dir(parent.fd.as_fd(), name)
                    .map_err(|e| sys_err("opening directory", entry, e))?;
                self.replace_xattrs(fd.as_fd(), meta, entry)?;
                meta.apply_to_fd(
                    fd.as_fd(),
                    &self.meta_opts(),
                    false,
                    entry,
                    &mut self.dropped,
                )?;
                fd
            }
            Slot::Create { opaque } => {
                let fd = self.new_dir(parent.fd.as_fd(), name, meta, entry)?;
                if opaque {
                    set_opaque(fd.as_fd(), entry)?;
                }
                fd
            }
        };
        drop(fd);
        let real = parent.real.join(name);
        self.dir_times.push((real.clone(), meta.atime, meta.mtime));
        self.mark_unpacked(&real);
        Ok(())
    }

    fn make_file<R: Read>(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        meta: &Meta,
        data: &mut TarEntry<'_, R>,
        entry: &str,
    ) -> Result<(), StoreError> {
        let create = || {
            openat(
                parent.fd.as_fd(),
                name,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
        };
        let fd = self.create_non_dir(parent, name, entry, "creating file", create)?;
        let mut file = File::from(fd);
        if let Some(fragments) = data.header.sparse.clone() {
            let (size, physical) = (data.header.size, data.remaining());
            sparse::write(&fragments, size, data, physical, &mut file, &mut self.buf)
                .map_err(|e| StoreError::invalid(entry, e))?;
        } else {
            loop {
                let n = match data.read(&mut self.buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(StoreError::invalid(
                            entry,
                            format!("reading file data: {e}"),
                        ));
                    }
                };
                file.write_all(&self.buf[..n])
                    .map_err(|e| StoreError::io(format!("writing {entry:?}"), e))?;
            }
        }
        meta.apply_to_fd(
            file.as_fd(),
            &self.meta_opts(),
            true,
            entry,
            &mut self.dropped,
        )?;
        self.stats.inodes_created += 1;
        self.mark_unpacked(&parent.real.join(name));
        Ok(())
    }

    fn make_symlink(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        target: &[u8],
        meta: &Meta,
        entry: &str,
    ) -> Result<(), StoreError> {
        let create = || symlinkat(OsStr::from_bytes(target), parent.fd.as_fd(), name);
        self.create_non_dir(parent, name, entry, "creating symlink", create)?;
        meta.apply_at(
            parent.fd.as_fd(),
            name,
            true,
            &self.meta_opts(),
            entry,
            &mut self.dropped,
        )?;
        self.stats.inodes_created += 1;
        self.mark_unpacked(&parent.real.join(name));
        Ok(())
    }

    fn make_node(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        kind: SFlag,
        dev: u64,
        meta: &Meta,
        entry: &str,
    ) -> Result<(), StoreError> {
        if self.is_overlay() && kind == SFlag::S_IFCHR && dev == 0 {
            return Err(StoreError::invalid(
                entry,
                "a character device 0:0 cannot be stored in an overlay layer (overlayfs reads it as a whiteout)",
            ));
        }
        let create = || {
            mknodat(
                parent.fd.as_fd(),
                name,
                kind,
                Mode::from_bits_truncate(0o600),
                dev,
            )
        };
        self.create_non_dir(parent, name, entry, "creating device node", create)?;
        meta.apply_at(
            parent.fd.as_fd(),
            name,
            false,
            &self.meta_opts(),
            entry,
            &mut self.dropped,
        )?;
        self.stats.inodes_created += 1;
        self.mark_unpacked(&parent.real.join(name));
        Ok(())
    }

    fn hardlink(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        target: &EntryPath,
        entry: &str,
    ) -> Result<(), StoreError> {
        let Some(target_name) = target.name() else {
            return Err(StoreError::invalid(entry, "hard link to the layer root"));
        };
        let (target_dir, target_st) = self.hardlink_target(target, entry)?;
        if let Some(st) =
            sys::lstat_at(parent.fd.as_fd(), name).map_err(|e| sys_err("lstat", entry, e))?
            && st.st_dev == target_st.st_dev
            && st.st_ino == target_st.st_ino
        {
            return Ok(()); // already that file
        }
        self.slot(parent, name, false, entry)?;
        match linkat(
            target_dir.fd.as_fd(),
            target_name,
            parent.fd.as_fd(),
            name,
            AtFlags::empty(),
        ) {
            Ok(()) => {}
            // The target was inside the directory this entry replaced.
            Err(Errno::ENOENT) => {
                return Err(StoreError::invalid(
                    entry,
                    format!("hard link target {:?} was removed", target.to_path()),
                ));
            }
            Err(e) => return Err(sys_err("creating hard link", entry, e)),
        }
        self.mark_unpacked(&parent.real.join(name));
        Ok(())
    }

    /// The directory holding the hard link target (in this layer) and the target's stat.
    fn hardlink_target(
        &mut self,
        target: &EntryPath,
        entry: &str,
    ) -> Result<(Rc<Dir>, FileStat), StoreError> {
        let target_name = target.name().unwrap_or_default().to_owned();
        let missing = || {
            StoreError::invalid(
                entry,
                format!("hard link target {:?} does not exist", target.to_path()),
            )
        };
        let check = |st: Option<FileStat>| -> Result<FileStat, StoreError> {
            match st {
                Some(st) if sys::is_dir(&st) => {
                    Err(StoreError::invalid(entry, "hard link to a directory"))
                }
                Some(st) if !sys::is_whiteout(&st) => Ok(st),
                _ => Err(missing()),
            }
        };
        if !self.is_overlay() {
            let dir = self
                .existing_dir(target.parent(), entry, "hard link target")?
                .ok_or_else(missing)?;
            let st = sys::lstat_at(dir.fd.as_fd(), &target_name)
                .map_err(|e| sys_err("lstat", entry, e))?;
            return Ok((dir.clone(), check(st)?));
        }
        // Overlay: the target may be in this layer, or in a lower one, to be copied up.
        if let Ok(fd) =
            sys::open_dir_beneath(self.root, &join(target.parent()), Resolve::NoSymlinks)
        {
            let st =
                sys::lstat_at(fd.as_fd(), &target_name).map_err(|e| sys_err("lstat", entry, e))?;
            if let Some(st) = st {
                let st = check(Some(st))?;
                return Ok((
                    Rc::new(Dir {
                        fd,
                        real: target.parent().iter().collect(),
                    }),
                    st,
                ));
            }
        }
        let view = self.view()?;
        let resolved = view
            .resolve(target.components(), false)
            .map_err(|e| self.resolve_error(e, entry, "hard link target", &target.to_path()))?;
        let (layer, st) = match resolved.last() {
            Some(Node::Other { layer, stat }) => (*layer, *stat),
            Some(Node::Dir { .. }) => {
                return Err(StoreError::invalid(entry, "hard link to a directory"));
            }
            _ => return Err(missing()),
        };
        let parent_resolved = Resolved {
            real: resolved.real[..resolved.real.len() - 1].to_vec(),
            nodes: resolved.nodes[..resolved.nodes.len() - 1].to_vec(),
        };
        let real_name = resolved.real[resolved.real.len() - 1].clone();
        let dir = self.materialize_dirs(&view, &parent_resolved, entry)?;
        if layer != 0 {
            self.copy_up_nondir(
                &view,
                layer,
                &parent_resolved.real,
                &real_name,
                &st,
                &dir,
                entry,
            )?;
        }
        let st =
            sys::lstat_at(dir.fd.as_fd(), &real_name).map_err(|e| sys_err("lstat", entry, e))?;
        // The last component was not followed, so its real name is the target's name.
        Ok((Rc::new(dir), check(st)?))
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_up_nondir(
        &mut self,
        view: &LayerView,
        layer: usize,
        parent_real: &[OsString],
        name: &OsStr,
        st: &FileStat,
        dst: &Dir,
        entry: &str,
    ) -> Result<(), StoreError> {
        let src_dir = view
            .open_in(layer, parent_real)
            .map_err(|e| sys_err("opening lower directory", entry, e))?;
        let meta = self.meta_from_lower(src_dir.as_fd(), name, st, entry)?;
        let opts = MetaOptions {
            shift: None,
            xattrs: self.opts.xattrs,
            chown: self.opts.chown,
        };
        let kind = sys::file_type(st);
        if kind == SFlag::S_IFREG {
            let src = openat(
                src_dir.as_fd(),
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| sys_err("opening lower file", entry, e))?;
            let dst_fd = openat(
                dst.fd.as_fd(),
                name,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| sys_err("copying up", entry, e))?;
            let mut src = File::from(src);
            let mut dst_file = File::from(dst_fd);
            io::copy(&mut src, &mut dst_file)
                .map_err(|e| StoreError::io(format!("copying up the target of {entry:?}"), e))?;
            meta.apply_to_fd(dst_file.as_fd(), &opts, true, entry, &mut self.dropped)?;
        } else if kind == SFlag::S_IFLNK {
            let target = readlinkat(src_dir.as_fd(), name)
                .map_err(|e| sys_err("reading lower symlink", entry, e))?;
            symlinkat(target.as_os_str(), dst.fd.as_fd(), name)
                .map_err(|e| sys_err("copying up", entry, e))?;
            meta.apply_at(dst.fd.as_fd(), name, true, &opts, entry, &mut self.dropped)?;
        } else {
            mknodat(
                dst.fd.as_fd(),
                name,
                kind,
                Mode::from_bits_truncate(0o600),
                st.st_rdev,
            )
            .map_err(|e| sys_err("copying up", entry, e))?;
            meta.apply_at(dst.fd.as_fd(), name, false, &opts, entry, &mut self.dropped)?;
        }
        self.stats.inodes_created += 1;
        if kind == SFlag::S_IFREG && st.st_nlink > 1 {
            let mut path = parent_real.to_vec();
            path.push(name.to_owned());
            self.copy_up_links(view, layer, st, &path, dst, name, entry)?;
        }
        Ok(())
    }

    /// The copy of a lower file with several links takes along its other names that are
    /// still visible, so that they stay one file (overlayfs's own copy-up would split them).
    #[allow(clippy::too_many_arguments)]
    fn copy_up_links(
        &mut self,
        view: &LayerView,
        layer: usize,
        st: &FileStat,
        copied: &[OsString],
        dst: &Dir,
        name: &OsStr,
        entry: &str,
    ) -> Result<(), StoreError> {
        let others: Vec<Vec<OsString>> = self
            .link_index(view, layer, entry)?
            .get(&st.st_ino)
            .map(|paths| {
                paths
                    .iter()
                    .filter(|p| p.as_slice() != copied)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for path in others {
            let Ok(resolved) = view.resolve(&path, false) else {
                continue;
            };
            let same_file = matches!(
                resolved.last(),
                Some(Node::Other { layer: l, stat }) if *l == layer && stat.st_ino == st.st_ino
            );
            if !same_file || resolved.real != path {
                continue; // hidden, or replaced by a higher layer
            }
            let parent = Resolved {
                real: path[..path.len() - 1].to_vec(),
                nodes: resolved.nodes[..resolved.nodes.len() - 1].to_vec(),
            };
            let dir = self.materialize_dirs(view, &parent, entry)?;
            let last = &path[path.len() - 1];
            linkat(
                dst.fd.as_fd(),
                name,
                dir.fd.as_fd(),
                last.as_os_str(),
                AtFlags::empty(),
            )
            .map_err(|e| sys_err("linking a copied-up file", entry, e))?;
        }
        Ok(())
    }

    /// Paths of multiply linked files in lower layer `layer`, by inode (built once).
    fn link_index(
        &mut self,
        view: &LayerView,
        layer: usize,
        entry: &str,
    ) -> Result<&HashMap<u64, Vec<Vec<OsString>>>, StoreError> {
        let LayerMode::Overlay(state) = &mut self.mode else {
            return Err(StoreError::Corrupt(
                "link index asked for in merged mode".into(),
            ));
        };
        Ok(match state.link_index.entry(layer) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(
                index_links(view, layer)
                    .map_err(|e| sys_err("indexing a lower layer", entry, e))?,
            ),
        })
    }

    /// Overlay: removes whiteouts that hide nothing (see `OverlayState::whiteouts`).
    fn remove_needless_whiteouts(&mut self) -> Result<(), StoreError> {
        let LayerMode::Overlay(state) = &mut self.mode else {
            return Ok(());
        };
        let whiteouts = std::mem::take(&mut state.whiteouts);
        if whiteouts.is_empty() {
            return Ok(());
        }
        let view = self.view()?;
        for path in whiteouts {
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                continue;
            };
            let Ok(dir) = sys::open_dir_beneath(self.root, parent, Resolve::NoSymlinks) else {
                continue;
            };
            let st =
                sys::lstat_at(dir.as_fd(), name).map_err(|e| sys_err("lstat", "whiteout", e))?;
            if !st.as_ref().is_some_and(sys::is_whiteout) {
                continue;
            }
            let components: Vec<OsString> = parent.iter().map(OsStr::to_owned).collect();
            let below: Vec<usize> = match view.resolve(&components, true) {
                Ok(r) => match r.last() {
                    None => (1..view.len()).collect(),
                    Some(Node::Dir { layers }) => {
                        layers.iter().copied().filter(|l| *l != 0).collect()
                    }
                    Some(_) => Vec::new(),
                },
                Err(_) => Vec::new(),
            };
            let hides_something = !below.is_empty()
                && !matches!(
                    view.lookup(&below, &components, name).map_err(|e| sys_err(
                        "looking up lower layers",
                        "whiteout",
                        e
                    ))?,
                    Node::Missing
                );
            if !hides_something {
                unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| sys_err("removing whiteout", "whiteout", e))?;
            }
        }
        Ok(())
    }

    // ---- whiteouts -----------------------------------------------------------------

    fn whiteout(
        &mut self,
        parent: &[OsString],
        name: &OsStr,
        entry: &str,
    ) -> Result<(), StoreError> {
        // Nothing to delete below a directory that does not exist.
        let Some(dir) = self.existing_dir(parent, entry, "whiteout")? else {
            return Ok(());
        };
        self.invalidate();
        let real = dir.real.join(name);
        let existing =
            sys::lstat_at(dir.fd.as_fd(), name).map_err(|e| sys_err("lstat", entry, e))?;
        if self.unpacked.contains(&real) {
            // This layer's own entry stays; only what lower layers had under it goes.
            if existing.as_ref().is_some_and(sys::is_dir) {
                let fd = sys::open_child_dir(dir.fd.as_fd(), name)
                    .map_err(|e| sys_err("opening directory", entry, e))?;
                self.prune(fd.as_fd(), &real, entry)?;
                if self.is_overlay() {
                    set_opaque(fd.as_fd(), entry)?;
                }
            }
            return Ok(());
        }
        let LayerMode::Overlay(state) = &mut self.mode else {
            return sys::remove_all_at(dir.fd.as_fd(), name)
                .map_err(|e| sys_err("removing whited-out entry", entry, e));
        };
        if existing.as_ref().is_some_and(sys::is_whiteout) {
            return Ok(());
        }
        state.whiteouts.push(real);
        if existing.is_some() {
            // Copied up from a lower layer (for a hard link): it goes like the original.
            sys::remove_all_at(dir.fd.as_fd(), name)
                .map_err(|e| sys_err("removing copied-up entry", entry, e))?;
        }
        make_whiteout(dir.fd.as_fd(), name, entry)
    }

    fn opaque(&mut self, dir_components: &[OsString], entry: &str) -> Result<(), StoreError> {
        let dir = if dir_components.is_empty() {
            None
        } else {
            Some(self.dir(dir_components, entry, Need::Create, "opaque")?)
        };
        // The root, named or reached through a symlink: from here on lower layers are out
        // of view, and what was copied up from them goes.
        if dir.as_ref().is_none_or(|d| d.real.as_os_str().is_empty()) && self.is_overlay() {
            if let LayerMode::Overlay(state) = &mut self.mode {
                state.root_opaque = true;
                if let Some(view) = &state.view {
                    view.set_root_opaque();
                }
            }
            self.invalidate();
            let root = self.open_root()?;
            return self.prune(root.as_fd(), Path::new(""), entry);
        }
        let dir = match dir {
            Some(d) => d,
            None => self.dir(dir_components, entry, Need::Create, "opaque")?,
        };
        self.invalidate();
        let real = dir.real.clone();
        self.prune(dir.fd.as_fd(), &real, entry)?;
        if self.is_overlay() {
            set_opaque(dir.fd.as_fd(), entry)?;
        }
        self.mark_unpacked(&real);
        Ok(())
    }

    /// Removes everything below `dir` that this layer's entries did not make: in merged
    /// mode the lower layers' content, in overlay mode what was copied up from them.
    fn prune(&mut self, dir: BorrowedFd<'_>, real: &Path, entry: &str) -> Result<(), StoreError> {
        for name in sys::list_dir(dir).map_err(|e| sys_err("listing directory", entry, e))? {
            let child = real.join(&name);
            if !self.unpacked.contains(&child) {
                sys::remove_all_at(dir, &name)
                    .map_err(|e| sys_err("removing lower entry", entry, e))?;
                continue;
            }
            let st = sys::lstat_at(dir, &name).map_err(|e| sys_err("lstat", entry, e))?;
            if st.as_ref().is_some_and(sys::is_dir) {
                let fd = sys::open_child_dir(dir, &name)
                    .map_err(|e| sys_err("opening directory", entry, e))?;
                self.prune(fd.as_fd(), &child, entry)?;
            }
        }
        Ok(())
    }

    /// Overlay: `.wh..wh..opq` at the root hides every lower top-level entry. Overlayfs
    /// ignores an opaque mark on a layer root, so lower names get whiteouts and this
    /// layer's directories opaque marks.
    fn finish_root_opaque(&mut self) -> Result<(), StoreError> {
        let LayerMode::Overlay(state) = &self.mode else {
            return Ok(());
        };
        if !state.root_opaque {
            return Ok(());
        }
        let root = self.open_root()?;
        self.prune(root.as_fd(), Path::new(""), ".wh..wh..opq")?;
        let view = self.view()?;
        let names = view
            .lower_root_names()
            .map_err(|e| sys_err("listing lower layers", "/", e))?;
        for name in names {
            match sys::lstat_at(root.as_fd(), &name).map_err(|e| sys_err("lstat", "/", e))? {
                None => make_whiteout(root.as_fd(), &name, ".wh..wh..opq")?,
                Some(st) if sys::is_dir(&st) => {
                    let fd = sys::open_child_dir(root.as_fd(), &name)
                        .map_err(|e| sys_err("opening directory", "/", e))?;
                    set_opaque(fd.as_fd(), ".wh..wh..opq")?;
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// An overlayfs whiteout: a character device 0:0.
fn make_whiteout(dir: BorrowedFd<'_>, name: &OsStr, entry: &str) -> Result<(), StoreError> {
    mknodat(dir, name, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
        .map_err(|e| sys_err("creating whiteout", entry, e))
}

/// Marks a directory of an overlay layer opaque: lower layers' directories of the same
/// path are not merged into it.
fn set_opaque(fd: BorrowedFd<'_>, entry: &str) -> Result<(), StoreError> {
    sys::fset_xattr(fd, OsStr::new(OPAQUE_XATTR), b"y")
        .map_err(|e| StoreError::io(format!("marking the directory of {entry:?} opaque"), e))
}

/// Paths of the regular files with several links in layer `layer`, by inode. Walks by
/// path rather than holding a descriptor per directory level.
fn index_links(view: &LayerView, layer: usize) -> nix::Result<HashMap<u64, Vec<Vec<OsString>>>> {
    let mut index: HashMap<u64, Vec<Vec<OsString>>> = HashMap::new();
    let mut pending: Vec<Vec<OsString>> = vec![Vec::new()];
    while let Some(path) = pending.pop() {
        let dir = view.open_in(layer, &path)?;
        for child in sys::list_dir(dir.as_fd())? {
            let Some(st) = sys::lstat_at(dir.as_fd(), &child)? else {
                continue;
            };
            let mut child_path = path.clone();
            child_path.push(child);
            if sys::is_dir(&st) {
                pending.push(child_path);
            } else if sys::file_type(&st) == SFlag::S_IFREG && st.st_nlink > 1 {
                index.entry(st.st_ino).or_default().push(child_path);
            }
        }
    }
    Ok(index)
}
