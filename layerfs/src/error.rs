//! The one error type of the layer store and the layer applier.
//!
//! It is `Clone` because threads waiting for another thread's application of the same layer
//! receive that thread's result.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::compression::Compression;
use crate::digest::Digest;

/// Which of a layer's two digests disagreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    /// The digest of the blob as fetched (the manifest's layer descriptor).
    Compressed,
    /// The digest of the uncompressed tar stream (the config's `rootfs.diff_ids`).
    DiffId,
}

impl fmt::Display for DigestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DigestKind::Compressed => "compressed digest",
            DigestKind::DiffId => "diff_id",
        })
    }
}

/// Everything that can go wrong in the layer store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The layer's content does not match a digest the caller expected.
    #[error("layer {which} mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        which: DigestKind,
        expected: Digest,
        actual: Digest,
    },

    /// An entry would create or write something outside the layer root (or whiteout `..`).
    #[error("layer rejected: unsafe entry {entry:?}: {reason}")]
    UnsafeEntry { entry: String, reason: String },

    /// The tar stream or one of its entries is malformed or cannot be represented.
    #[error("invalid layer{}: {reason}", entry.as_ref().map(|e| format!(" (entry {e:?})")).unwrap_or_default())]
    InvalidLayer {
        entry: Option<String>,
        reason: String,
    },

    /// A layer media type that the store cannot apply.
    #[error("unsupported layer media type {0:?}")]
    UnsupportedMediaType(String),

    /// The stream's magic bytes disagree with the compression the media type declared.
    #[error("layer declared as {declared} but its data {found}")]
    CompressionMismatch {
        declared: Compression,
        found: String,
    },

    /// The request contradicts itself (for example a chain ID that its parent and diff_id
    /// do not produce) or names something invalid.
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// The layer's parent is neither present nor being applied.
    #[error("parent layer {parent} of {chain_id} is not in the store")]
    ParentMissing { chain_id: Digest, parent: Digest },

    /// The parent's application, which this layer waited for, failed.
    #[error("parent layer {parent} of {chain_id} failed to apply: {message}")]
    ParentFailed {
        chain_id: Digest,
        parent: Digest,
        message: String,
    },

    /// A layer that an operation needs is not in the store.
    #[error("layer {0} is not in the store")]
    LayerNotFound(Digest),

    /// A container root filesystem of that id exists with a different top layer.
    #[error("root filesystem {id:?} already exists with a different top layer")]
    RootfsConflict { id: String },

    /// The driver cannot do what was asked (for example a quota on overlay).
    #[error("{driver} driver: {what} is not supported")]
    Unsupported { driver: &'static str, what: String },

    /// Another process holds the store.
    #[error("store {path:?} is in use by another process (lock held)")]
    Locked { path: PathBuf },

    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: Arc<io::Error>,
    },

    /// A `zfs` command failed.
    #[error("`{command}` failed: {stderr}")]
    Zfs { command: String, stderr: String },

    /// The store's on-disk state is not what this code wrote.
    #[error("store state is inconsistent: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> StoreError {
        StoreError::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn io_at(what: &str, path: &Path, source: io::Error) -> StoreError {
        StoreError::io(format!("{what} {}", path.display()), source)
    }

    pub(crate) fn unsafe_entry(entry: &str, reason: impl Into<String>) -> StoreError {
        StoreError::UnsafeEntry {
            entry: entry.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(entry: &str, reason: impl Into<String>) -> StoreError {
        StoreError::InvalidLayer {
            entry: Some(entry.to_owned()),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_stream(reason: impl Into<String>) -> StoreError {
        StoreError::InvalidLayer {
            entry: None,
            reason: reason.into(),
        }
    }

    /// Whether the error says the layer's content is bad (as opposed to the machine).
    pub fn is_bad_content(&self) -> bool {
        matches!(
            self,
            StoreError::DigestMismatch { .. }
                | StoreError::UnsafeEntry { .. }
                | StoreError::InvalidLayer { .. }
                | StoreError::CompressionMismatch { .. }
        )
    }
}
