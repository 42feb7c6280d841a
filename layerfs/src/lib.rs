//! pvecri's layer store: OCI layer application and the `zfs` and `overlay` drivers.
//!
//! - [`apply`]: a layer blob (tar, gzip or zstd) applied to a directory in one pass that
//!   also computes both of its digests, confined to that directory.
//! - [`LayerStore`]: layers by ChainID and container root filesystems, opened with
//!   [`open_store`]. Drivers: `overlay` (a directory per layer, an overlay mount per
//!   container) and `zfs` (a dataset per layer, snapshot and clone, through the `zfs`
//!   command).

pub mod apply;
mod compression;
mod digest;
mod error;
mod files;
mod inflight;
mod overlay;
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
    LayerInfo, LayerRequest, LayerStore, RemoveOutcome, RootfsOptions, StoreConfig, StoreOptions,
    Usage, open_store, open_store_with,
};
pub use stream::StreamDigests;
