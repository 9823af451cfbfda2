//! The operator's errors: one enum for the storage system calls, one for the
//! reconcilers. Each variant names the operation that failed and its ids.

/// A call to a storage system failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage endpoint {endpoint:?} is not a valid URI: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    #[error("storage system {endpoint} is unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("{op} on {endpoint}: not found")]
    NotFound { endpoint: String, op: &'static str },
    #[error("{op} on {endpoint} refused ({code}): {message}")]
    Refused {
        endpoint: String,
        op: &'static str,
        code: String,
        message: String,
    },
}

/// A reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {kind} {name}: {source}")]
    ReadObject {
        kind: &'static str,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("writing {kind} {name}: {source}")]
    WriteObject {
        kind: &'static str,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("volume {volume}: {action} on data center {dc}: {source}")]
    StorageCall {
        volume: String,
        action: &'static str,
        dc: String,
        source: Box<StorageError>,
    },
    #[error("finalizer on {volume}: {source}")]
    Finalizer {
        volume: String,
        source: Box<kube::runtime::finalizer::Error<Error>>,
    },
    #[error("volume {volume}: real volumes left after delete: {left}")]
    CleanupBlocked { volume: String, left: String },
    #[error("volume {volume}: spec.size: {source}")]
    InvalidSize {
        volume: String,
        source: roam_crds::quantity::QuantityError,
    },
    #[error("volume {volume}: copy volume group has no member in data center {dc}")]
    UnknownMember { volume: String, dc: String },
    #[error("{kind} has no name or namespace")]
    MissingMetadata { kind: &'static str },
}

impl Error {
    /// Metric label for the error kind.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::ReadObject { .. } => "read_object",
            Self::WriteObject { .. } => "write_object",
            Self::StorageCall { .. } => "storage_call",
            Self::Finalizer { .. } => "finalizer",
            Self::MissingMetadata { .. } => "missing_metadata",
            Self::CleanupBlocked { .. } => "cleanup_blocked",
            Self::InvalidSize { .. } => "invalid_size",
            Self::UnknownMember { .. } => "unknown_member",
        }
    }
}
