//! Path lookup in the merged view of a stack of overlay layer directories, done in user
//! space with overlayfs's rules (a whiteout hides lower entries, an opaque directory hides
//! lower directories, a non-directory hides everything below it), so that a layer being
//! applied can consult its parents without mounting them.

use std::cell::Cell;
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::readlinkat;
use nix::sys::stat::{FileStat, SFlag};

use crate::apply::inroot::MAX_SYMLINKS;
use crate::apply::names::join;
use crate::sys::{self, Resolve};

pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What the merged view holds at a path.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// Nothing (never there, or whited out).
    Missing,
    /// A directory, merged from these layers (top first).
    Dir { layers: Vec<usize> },
    /// A non-directory, from layer `layer`.
    Other { layer: usize, stat: FileStat },
}

/// A resolved path: real components (no symlinks) and what each prefix is.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub real: Vec<OsString>,
    pub nodes: Vec<Node>,
}

impl Resolved {
    pub(crate) fn last(&self) -> Option<&Node> {
        self.nodes.last()
    }
}

#[derive(Debug)]
pub(crate) enum ResolveError {
    TooManySymlinks,
    /// A component that must be a directory is not one.
    NotDir,
    Sys(Errno),
}

impl From<Errno> for ResolveError {
    fn from(e: Errno) -> Self {
        ResolveError::Sys(e)
    }
}

/// Layer directories, index 0 on top.
pub(crate) struct LayerView {
    layers: Vec<OwnedFd>,
    /// The top layer's root is opaque (emulated: overlayfs ignores the mark on a root).
    root_opaque: Cell<bool>,
}

impl LayerView {
    pub(crate) fn new(layers: Vec<OwnedFd>) -> LayerView {
        LayerView {
            layers,
            root_opaque: Cell::new(false),
        }
    }

    pub(crate) fn set_root_opaque(&self) {
        self.root_opaque.set(true);
    }

    pub(crate) fn len(&self) -> usize {
        self.layers.len()
    }

    pub(crate) fn layer(&self, index: usize) -> BorrowedFd<'_> {
        self.layers[index].as_fd()
    }

    /// Layers that contribute to the root: all, unless the top layer hides the others.
    fn root_layers(&self) -> Vec<usize> {
        if self.root_opaque.get() {
            vec![0]
        } else {
            (0..self.layers.len()).collect()
        }
    }

    /// Opens directory `dir` (real components) in layer `layer`.
    pub(crate) fn open_in(&self, layer: usize, dir: &[OsString]) -> nix::Result<OwnedFd> {
        sys::open_dir_beneath(self.layer(layer), &join(dir), Resolve::NoSymlinks)
    }

    fn is_opaque(&self, dir_fd: BorrowedFd<'_>, name: &OsStr) -> nix::Result<bool> {
        match sys::lget_xattr_at(dir_fd, name, OsStr::new(OPAQUE_XATTR)) {
            Ok(v) => Ok(v.as_deref() == Some(b"y")),
            Err(e) => Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }

    /// Looks `name` up in directory `dir`, which the `visible` layers hold (top first).
    pub(crate) fn lookup(
        &self,
        visible: &[usize],
        dir: &[OsString],
        name: &OsStr,
    ) -> nix::Result<Node> {
        let mut dir_layers = Vec::new();
        for &layer in visible {
            let dir_fd = match self.open_in(layer, dir) {
                Ok(fd) => fd,
                // A layer listed as holding the directory always does; tolerate races anyway.
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => continue,
                Err(e) => return Err(e),
            };
            let Some(st) = sys::lstat_at(dir_fd.as_fd(), name)? else {
                continue;
            };
            if sys::is_whiteout(&st) {
                break;
            }
            if sys::is_dir(&st) {
                dir_layers.push(layer);
                if self.is_opaque(dir_fd.as_fd(), name)? {
                    break;
                }
                continue;
            }
            if dir_layers.is_empty() {
                return Ok(Node::Other { layer, stat: st });
            }
            break;
        }
        Ok(if dir_layers.is_empty() {
            Node::Missing
        } else {
            Node::Dir { layers: dir_layers }
        })
    }

    /// Resolves `components` in the merged view as if its root were `/` (see `inroot`):
    /// symlinks in all but the last component are followed (the last one too if
    /// `follow_last`), an absolute target starts again at the root, `..` stops there.
    /// Components below a missing one are missing too.
    pub(crate) fn resolve(
        &self,
        components: &[OsString],
        follow_last: bool,
    ) -> Result<Resolved, ResolveError> {
        let mut pending: VecDeque<OsString> = components.iter().cloned().collect();
        let mut real: Vec<OsString> = Vec::new();
        let mut nodes: Vec<Node> = Vec::new();
        let mut links = 0;
        while let Some(c) = pending.pop_front() {
            match c.as_bytes() {
                b"" | b"." => continue,
                b".." => {
                    if matches!(nodes.last(), Some(Node::Other { .. })) {
                        return Err(ResolveError::NotDir);
                    }
                    real.pop();
                    nodes.pop();
                    continue;
                }
                _ => {}
            }
            let visible = match nodes.last() {
                None => self.root_layers(),
                Some(Node::Dir { layers }) => layers.clone(),
                Some(Node::Missing) => Vec::new(),
                Some(Node::Other { .. }) => return Err(ResolveError::NotDir),
            };
            let node = if visible.is_empty() {
                Node::Missing
            } else {
                self.lookup(&visible, &real, &c)?
            };
            let is_last = pending.is_empty();
            if let Node::Other { layer, stat } = &node
                && sys::file_type(stat) == SFlag::S_IFLNK
                && (!is_last || follow_last)
            {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ResolveError::TooManySymlinks);
                }
                let dir_fd = self.open_in(*layer, &real)?;
                let target = readlinkat(dir_fd.as_fd(), c.as_os_str())?;
                let bytes = target.as_bytes();
                if bytes.first() == Some(&b'/') {
                    real.clear();
                    nodes.clear();
                }
                for part in bytes.split(|b| *b == b'/').rev() {
                    pending.push_front(OsStr::from_bytes(part).to_owned());
                }
                continue;
            }
            real.push(c);
            nodes.push(node);
        }
        Ok(Resolved { real, nodes })
    }

    /// The names visible in the merged root of the layers below the top one (index 0).
    pub(crate) fn lower_root_names(&self) -> nix::Result<Vec<OsString>> {
        let mut names: Vec<OsString> = Vec::new();
        for layer in 1..self.layers.len() {
            for name in sys::list_dir(self.layer(layer))? {
                names.push(name);
            }
        }
        names.sort();
        names.dedup();
        let lower: Vec<usize> = (1..self.layers.len()).collect();
        let mut visible = Vec::new();
        for name in names {
            if !matches!(self.lookup(&lower, &[], &name)?, Node::Missing) {
                visible.push(name);
            }
        }
        Ok(visible)
    }
}
