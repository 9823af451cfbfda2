//! Errors of the CSI node service, one variant per failed operation, and the
//! one conversion to a gRPC status at the service edge.

use std::path::PathBuf;

use roam_engine::frontend::{FrontendError, TargetError};
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("connecting volume {volume} to storage system {endpoint}: {source}")]
    Connect {
        volume: String,
        endpoint: String,
        source: Box<TargetError>,
    },
    #[error("staging volume {volume} at {path}: {source}")]
    Stage {
        volume: String,
        path: PathBuf,
        source: Box<FrontendError>,
    },
    #[error("growing volume {volume}'s export: {source}")]
    Expand {
        volume: String,
        source: Box<FrontendError>,
    },
    #[error("unstaging volume {volume}: {source}")]
    Unstage {
        volume: String,
        source: Box<FrontendError>,
    },
    #[error("reading /proc/self/mountinfo: {source}")]
    ReadMountTable { source: std::io::Error },
    #[error("bind mount {source_path} -> {target}: {cause}")]
    BindMount {
        source_path: PathBuf,
        target: PathBuf,
        cause: String,
    },
    #[error("unmounting {path}: {cause}")]
    Unmount { path: PathBuf, cause: String },
    #[error("creating {path}: {source}")]
    CreateTarget {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("removing {path}: {source}")]
    RemoveTarget {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("statvfs {path}: {cause}")]
    Statfs { path: PathBuf, cause: String },
    #[error("{tool}: {cause}")]
    Tool { tool: &'static str, cause: String },
    #[error("blocking task of {rpc} failed: {cause}")]
    Join { rpc: &'static str, cause: String },
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Self {
        let message = format!("{e:#}");
        match &e {
            NodeError::Connect { source, .. } => match source.as_ref() {
                TargetError::StaleEpoch { .. } => Status::failed_precondition(message),
                _ => Status::unavailable(message),
            },
            NodeError::Stage { source, .. }
                if matches!(source.as_ref(), FrontendError::FilesystemMismatch { .. }) =>
            {
                Status::failed_precondition(message)
            }
            // Something else still has the device or the export open: a
            // passing condition, and the volume stays tracked for the retry.
            NodeError::Unstage { source, .. }
                if matches!(
                    source.as_ref(),
                    FrontendError::LoopNotReleased { .. } | FrontendError::UnmountFuse { .. }
                ) =>
            {
                Status::unavailable(message)
            }
            NodeError::Expand { source, .. } => match source.as_ref() {
                FrontendError::ShrinkRefused { .. } => Status::out_of_range(message),
                FrontendError::QuerySize { .. } => Status::unavailable(message),
                _ => Status::internal(message),
            },
            _ => Status::internal(message),
        }
    }
}
