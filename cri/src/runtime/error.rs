//! Errors of the pod and container logic, each of a gRPC class.

use tonic::{Code, Status};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RuntimeError {
    pub code: Code,
    pub message: String,
}

impl RuntimeError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(Code::NotFound, m)
    }
    pub fn already_exists(m: impl Into<String>) -> Self {
        Self::new(Code::AlreadyExists, m)
    }
    pub fn invalid(m: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, m)
    }
    pub fn precondition(m: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(Code::Internal, m)
    }
    pub fn unimplemented(m: impl Into<String>) -> Self {
        Self::new(Code::Unimplemented, m)
    }

    /// Prefixes the message with what was being done.
    pub fn context(mut self, what: impl std::fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl From<RuntimeError> for Status {
    fn from(e: RuntimeError) -> Self {
        Status::new(e.code, e.message)
    }
}

impl From<crate::metadata::MetadataError> for RuntimeError {
    fn from(e: crate::metadata::MetadataError) -> Self {
        match e {
            crate::metadata::MetadataError::DuplicateKey { .. } => {
                Self::already_exists(e.to_string())
            }
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<super::ids::IdError> for RuntimeError {
    fn from(e: super::ids::IdError) -> Self {
        match e {
            super::ids::IdError::NotFound { .. } => Self::not_found(e.to_string()),
            super::ids::IdError::Ambiguous { .. } => Self::invalid(e.to_string()),
        }
    }
}

impl From<podinit::client::ClientError> for RuntimeError {
    fn from(e: podinit::client::ClientError) -> Self {
        use podinit::api::ErrorKind;
        let code = match e.api_kind() {
            Some(ErrorKind::NotFound) => Code::NotFound,
            Some(ErrorKind::AlreadyExists) => Code::AlreadyExists,
            Some(ErrorKind::InvalidArgument) => Code::InvalidArgument,
            Some(ErrorKind::FailedPrecondition) => Code::FailedPrecondition,
            Some(ErrorKind::StartFailed) => Code::Unknown,
            Some(ErrorKind::Internal) => Code::Internal,
            None if e.is_unavailable() => Code::Unavailable,
            None => Code::Internal,
        };
        Self::new(code, e.to_string())
    }
}

impl From<pve::PodHostError> for RuntimeError {
    fn from(e: pve::PodHostError) -> Self {
        use pve::PodHostError as E;
        let code = match &e {
            E::NotFound(_) => Code::NotFound,
            E::AlreadyExists(_) => Code::AlreadyExists,
            E::InvalidSpec(_) => Code::InvalidArgument,
            E::Unsupported { .. } | E::DriverUnavailable { .. } => Code::FailedPrecondition,
            E::Unavailable(_) => Code::Unavailable,
            E::Unauthenticated(_) => Code::Unauthenticated,
            E::PermissionDenied(_) => Code::PermissionDenied,
            E::ResourceExhausted(_) => Code::ResourceExhausted,
            _ => Code::Internal,
        };
        Self::new(code, e.to_string())
    }
}

impl From<imageservice::error::ImageError> for RuntimeError {
    fn from(e: imageservice::error::ImageError) -> Self {
        use imageservice::error::ErrorKind;
        let code = match e.kind() {
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::Unauthenticated => Code::Unauthenticated,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::DataLoss => Code::DataLoss,
            ErrorKind::Internal => Code::Internal,
        };
        Self::new(code, e.to_string())
    }
}

impl From<layerfs::StoreError> for RuntimeError {
    fn from(e: layerfs::StoreError) -> Self {
        Self::internal(format!("layer store: {e}"))
    }
}

pub type Result<T> = std::result::Result<T, RuntimeError>;
