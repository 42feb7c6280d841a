//! The pod host's error type, shared by all drivers.

use crate::cgroup::CgroupError;
use crate::spec::SpecError;

#[derive(Debug, thiserror::Error)]
pub enum PodHostError {
    #[error("pod CT {0} not found")]
    NotFound(String),
    #[error("pod CT {0} already exists")]
    AlreadyExists(String),
    #[error("invalid pod spec: {0}")]
    InvalidSpec(#[from] SpecError),
    /// The host cannot run this pod as asked (missing podinit, missing id delegation, ...).
    #[error("pod CT {id}: {reason}")]
    Unsupported { id: String, reason: String },
    /// An external command failed: what ran, how it ended, and what it and the CT's log said.
    #[error("{command} {status}: {detail}")]
    Command {
        command: String,
        status: String,
        detail: String,
    },
    /// The CT did something other than expected (its init exited at once, its monitor did
    /// not go away, ...). `log` holds the last lines of the CT's LXC and console logs.
    #[error("pod CT {id}: {message}{log}")]
    Ct {
        id: String,
        message: String,
        log: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("pod host driver `{driver}` is not available: {reason}")]
    DriverUnavailable { driver: String, reason: String },
    /// The pod host's backend (the Proxmox API) cannot be reached right now.
    #[error("{0}")]
    Unavailable(String),
    /// The backend refused the credentials (a wrong or expired API token).
    #[error("{0}")]
    Unauthenticated(String),
    /// The credentials lack a privilege; the message names it.
    #[error("{0}")]
    PermissionDenied(String),
    /// No CT can be made (the vmid range is full).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The backend failed an operation (a Proxmox task error, with its log).
    #[error("{0}")]
    Backend(String),
}

impl PodHostError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn io_at(what: &str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::io(format!("{what} {}", path.display()), source)
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }
}
