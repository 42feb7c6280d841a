//! OCI layer application: a (compressed) tar stream applied to a directory, confined to it.
//!
//! Two targets:
//! - [`Target::Merged`]: the directory already holds the parent layers' content (a ZFS
//!   clone of the parent); whiteouts delete, opaque markers empty directories.
//! - [`Target::Overlay`]: the directory is empty and receives only this layer's diff in
//!   overlayfs form: whiteouts become character devices 0:0, opaque directories carry
//!   `trusted.overlay.opaque=y`. The parents are consulted only when an entry needs them (a
//!   hard link to a lower file, or a parent directory the layer does not contain).
//!
//! Names are read as containerd reads them: cleaned lexically (`a/../b` is `b`) and
//! relative to the layer root, whether written `etc/x`, `./etc/x` or `/etc/x`; `/`, `.` and
//! `./` are the root itself, and such an entry is ignored, as containerd ignores it. The same holds for hard link targets and
//! whiteouts. The archive is read as Go's `archive/tar` reads it (module `archive`, with
//! `header` for the header blocks): the same entries in the same places, whatever the size
//! fields of links and directories say; it may end without end-of-archive blocks, and its
//! last entry without padding.
//!
//! Parent paths (of entries, hard link targets and whiteouts) are resolved as containerd
//! resolves them (`fs.RootPath`): as if the layer root were `/`. Symlinks are followed, an
//! absolute target starts again at the root and `..` stops there, so `var/run -> /run`
//! makes `var/run/x` land at `run/x`; a dangling symlink leads to new directories where its
//! target would be (module `inroot`; on overlay, the merged view of module `view`).
//!
//! Confinement: every file system operation is relative to a directory fd reached without
//! leaving the layer root: opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` or
//! `RESOLVE_IN_ROOT`, or found by a user-space walk that takes `..` from its own stack. A
//! relative name that climbs above the root (`../x`) and whiteouts of `.` or `..` fail the
//! layer with [`StoreError::UnsafeEntry`]. A symlink is never followed for the last
//! component of an entry: an existing one is replaced.

mod archive;
mod header;
mod inroot;
pub(crate) mod meta;
mod names;
mod sparse;
mod unpack;
mod view;

use std::io::Read;
use std::os::fd::{BorrowedFd, OwnedFd};

pub use meta::IdShift;

use crate::compression::Compression;
use crate::error::StoreError;
use crate::stream::{StreamDigests, with_layer_stream};
use unpack::Unpacker;

/// Gives an overlay-form layer the diff directories of its parents.
pub trait LowerLayers: Send {
    /// The parents' layer directories, nearest parent first. Called at most once per
    /// application, and only when an entry needs the lower layers; it may block until the
    /// parents are complete.
    fn lower_dirs(&mut self) -> Result<Vec<OwnedFd>, StoreError>;
}

/// No parents: a base layer.
pub struct NoLowerLayers;

impl LowerLayers for NoLowerLayers {
    fn lower_dirs(&mut self) -> Result<Vec<OwnedFd>, StoreError> {
        Ok(Vec::new())
    }
}

/// Where a layer goes.
pub enum Target<'a> {
    /// Onto a directory holding the merged content of the parent layers.
    Merged(BorrowedFd<'a>),
    /// Into an empty directory, as an overlayfs layer over `lowers`.
    Overlay {
        dir: BorrowedFd<'a>,
        lowers: &'a mut dyn LowerLayers,
    },
}

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Shift owners (and file capability root ids) into this range.
    pub id_shift: Option<IdShift>,
    /// Whether the target file system stores extended attributes; if not, they are
    /// dropped with a warning.
    pub xattrs: bool,
    /// Whether to set owners (needs root). Off only for tests running unprivileged.
    pub chown: bool,
    /// Whether block and character devices can be made. In a user namespace they cannot,
    /// and containerd skips them (with a warning): so does the applier where this is off.
    pub devices: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            id_shift: None,
            xattrs: true,
            chown: true,
            devices: !crate::sys::in_user_namespace(),
        }
    }
}

/// What an application did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub digests: StreamDigests,
    /// Tar entries processed (whiteouts included).
    pub entries: u64,
    /// Files, directories, links and nodes created (not hard links or whiteouts).
    pub inodes_created: u64,
    /// Extended attributes the target file system could not store.
    pub xattrs_dropped: u64,
    /// Block and character devices skipped (see [`ApplyOptions::devices`]).
    pub devices_skipped: u64,
}

/// Applies the layer read from `reader`, compressed as `compression`, to `target`.
///
/// On error the target holds a partial layer: the caller discards it. Digests are only
/// computed, not compared: the caller knows what to expect.
pub fn apply_layer(
    reader: &mut dyn Read,
    compression: Compression,
    target: Target<'_>,
    opts: &ApplyOptions,
) -> Result<Applied, StoreError> {
    let ((stats, dropped), digests) = with_layer_stream(reader, compression, |tar_stream| {
        let mut unpacker = Unpacker::new(target, opts)?;
        let end = archive::for_each_entry(tar_stream, |entry| unpacker.entry(entry))?;
        if end == archive::End::InPadding {
            tracing::debug!(
                "the layer's tar archive ends without padding or end-of-archive blocks"
            );
        }
        unpacker.finish()
    })?;
    Ok(Applied {
        digests,
        entries: stats.entries,
        inodes_created: stats.inodes_created,
        xattrs_dropped: dropped.unsupported_xattrs,
        devices_skipped: stats.devices_skipped,
    })
}

#[cfg(test)]
mod tests;
