//! What can go wrong in the image service, and the class each failure belongs to, so that
//! the daemon answers with the right gRPC status.

use crate::auth::AuthError;
use crate::hosts::HostsConfigError;
use crate::manifest::ManifestError;
use crate::record::CatalogError;
use crate::reference::ReferenceError;

/// The class of a failure; the daemon maps each to a gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (a bad reference, bad credentials encoding).
    InvalidArgument,
    /// The image, tag or platform does not exist.
    NotFound,
    /// The registry refused the credentials (or their absence).
    Unauthenticated,
    /// No endpoint could be reached.
    Unavailable,
    /// Content did not match its digest.
    DataLoss,
    /// Something in pvecri or the registry failed.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("credentials: {0}")]
    Credentials(#[from] AuthError),
    #[error(transparent)]
    HostsConfig(#[from] HostsConfigError),
    #[error("{reference}: not found at {host}: {detail}")]
    NotFound {
        reference: String,
        host: String,
        detail: String,
    },
    #[error("{reference}: {host} refused the credentials: {detail}")]
    Unauthorized {
        reference: String,
        host: String,
        detail: String,
    },
    #[error("{reference}: registry {host} unreachable: {detail}")]
    Unreachable {
        reference: String,
        host: String,
        detail: String,
    },
    #[error("{reference}: registry {host}: {detail}")]
    Registry {
        reference: String,
        host: String,
        detail: String,
    },
    #[error("{reference}: manifest from {host}: {error}")]
    Manifest {
        reference: String,
        host: String,
        error: ManifestError,
    },
    #[error("{reference}: image config {digest}: {detail}")]
    Config {
        reference: String,
        digest: String,
        detail: String,
    },
    #[error("blob {blob} from {host}: {detail}")]
    BlobDigest {
        blob: String,
        host: String,
        detail: String,
    },
    #[error("blob {blob} from {host}: download failed: {detail}")]
    BlobDownload {
        blob: String,
        host: String,
        detail: String,
    },
    #[error("layer {blob}: {error}")]
    Layer {
        blob: String,
        error: layerfs::StoreError,
    },
    #[error("layer {blob}: {detail}")]
    LayerShared {
        blob: String,
        detail: String,
        kind: ErrorKind,
    },
    #[error("layer store: {0}")]
    Store(layerfs::StoreError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("image {0} is in use by a container")]
    InUse(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl ImageError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Reference(_) | Self::Credentials(_) | Self::HostsConfig(_) => {
                ErrorKind::InvalidArgument
            }
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::Manifest { error, .. } => match error {
                ManifestError::NoPlatform { .. } => ErrorKind::NotFound,
                _ => ErrorKind::Internal,
            },
            Self::Unauthorized { .. } => ErrorKind::Unauthenticated,
            Self::Unreachable { .. } => ErrorKind::Unavailable,
            Self::BlobDigest { .. } => ErrorKind::DataLoss,
            Self::Layer {
                error: layerfs::StoreError::DigestMismatch { .. },
                ..
            } => ErrorKind::DataLoss,
            Self::LayerShared { kind, .. } => *kind,
            Self::InUse(_) => ErrorKind::InvalidArgument,
            Self::Registry { .. }
            | Self::Config { .. }
            | Self::BlobDownload { .. }
            | Self::Layer { .. }
            | Self::Store(_)
            | Self::Catalog(_)
            | Self::Internal(_) => ErrorKind::Internal,
        }
    }
}
