//! pvecri's layer store: OCI layer application and the `zfs` and `overlay` drivers.
//!
//! # Using the store
//!
//! Open it with [`open_store`] (or [`open_store_with`]) from a [`StoreConfig`]; opening
//! takes an exclusive lock (one process per store) and cleans whatever an interrupted
//! process left. Then, per image:
//!
//! 1. [`chain_ids`] of the config's `rootfs.diff_ids` name the layers.
//! 2. [`LayerStore::apply_layer`] each missing layer with a [`LayerRequest`], streaming the
//!    blob straight from the registry. The call verifies the blob digest and the diff_id
//!    in the same pass and publishes the layer only when both match. On `overlay`
//!    ([`LayerStore::parallel_apply`]) all layers of an image may be applied at once; on
//!    `zfs` a layer needs its parent first.
//! 3. [`LayerStore::create_rootfs`] per container, from the image's top layer. For a
//!    container in a user namespace, [`RootfsOptions::idmap`] makes its files show the
//!    container's ids: idmapped lower layers on overlay ([`idmap`]), else a shifted copy
//!    ([`shift`]; ZFS clones, and overlay where the file system cannot be idmapped). The
//!    layers keep their owners either way.
//!
//! Errors are [`StoreError`]; [`StoreError::is_bad_content`] tells a bad layer (digest
//! mismatch, unsafe entry, malformed tar, wrong compression) from a failing machine.
//!
//! # Layer application ([`apply`])
//!
//! A blob is gzip, zstd or plain tar as its media type says ([`Compression`]), and its
//! magic bytes must agree. Two threads: one reads, hashes and decompresses, the other
//! hashes the tar stream and does the file system work. Tar forms are read as Go's
//! `archive/tar` reads them (containerd): ustar, GNU (long names and links, old sparse
//! files) and PAX (long names, ids, times, xattrs, GNU sparse files 0.0, 0.1 and 1.0,
//! written with holes). Regular files, directories,
//! symlinks, hard links (to this or a lower layer), devices, FIFOs, owners (optionally
//! shifted, [`IdShift`]), modes with setuid/setgid/sticky, times and xattrs are applied.
//! OCI whiteouts (`.wh.<name>`, `.wh..wh..opq`) act on lower layers only, never on the
//! layer's own entries, and never appear in the result.
//!
//! Member names are relative to the layer root, as containerd reads them: `/etc/x`,
//! `./etc/x` and `etc/x` are the same path, and `/`, `.` and `./` are the root (umoci and
//! KIWI write absolute names and a root entry `/`). An archive may end without its
//! end-of-archive blocks and its last entry without padding (umoci 0.4.7 writes such
//! layers); an end inside an entry's data or a header is an error.
//!
//! Confinement: every operation is relative to a directory opened with
//! `openat2(RESOLVE_BENEATH)`. Symlinks in an entry's parent path are followed while they
//! stay below the root; an absolute symlink or one climbing above the root is refused
//! (like `..` components, hard links to such paths and whiteouts of `.` or `..`) with
//! [`StoreError::UnsafeEntry`] naming the entry. (containerd instead
//! resolves absolute symlinks as if chrooted; layer tars never need that, since tools
//! write real paths.) The last component of an entry is never followed.
//!
//! # Drivers
//!
//! - `overlay`: a directory per layer holding only its diff in overlayfs form (whiteouts
//!   as character devices 0:0, opaque directories as `trusted.overlay.opaque=y`), and an
//!   overlay mount per container. A layer consults its parents (waiting for them if they
//!   are still being applied) only when it must: a hard link to a lower file (copied up
//!   with its other names), a parent directory it lacks (copied up, metadata only), a
//!   whiteout (kept only if it hides something, since overlayfs lists whiteouts in
//!   directories that merge nothing) or an opaque root. Layer xattrs named
//!   `trusted.overlay.*`/`user.overlay.*` are dropped, and a layer cannot hold a
//!   character device 0:0.
//! - `zfs`: a dataset per layer, cloned from its parent's snapshot, snapshotted when
//!   complete, renamed into place; a container is a clone of the top snapshot, with an
//!   optional `refquota`. Everything goes through the `zfs` command, a handful of
//!   processes per layer, one `zfs get -r` per listing. zfs-fuse stores no xattrs: the
//!   store probes once and drops them there ([`LayerStore::xattrs_supported`]).

pub mod apply;
mod compression;
mod digest;
mod error;
mod files;
pub mod idmap;
mod inflight;
mod overlay;
pub mod shift;
mod store;
mod stream;
mod sys;
#[cfg(test)]
mod testutil;
mod zfs;

pub use apply::{Applied, ApplyOptions, IdShift, LowerLayers, NoLowerLayers, Target, apply_layer};
pub use compression::Compression;
pub use digest::{Digest, DigestError, chain_id, chain_ids};
pub use error::{DigestKind, StoreError};
pub use store::{
    LayerInfo, LayerRequest, LayerStore, RemoveOutcome, RootfsOptions, RootfsUsage, StoreConfig,
    StoreOptions, Usage, open_store, open_store_with,
};
pub use stream::StreamDigests;
