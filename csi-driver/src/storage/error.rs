//! The storage system server's error enum and its one mapping to gRPC status.

use roam_engine::EngineError;
use tonic::{Code, Status};

/// Metadata key naming the engine's refusal class, so a peer can tell a stale
/// epoch from an ordering error (both FAILED_PRECONDITION). Values:
/// `stale-epoch`, `no-space`, `out-of-order`, `invalid`, `not-found`,
/// `not-ready` (a copy into the replica is unfinished, or it lacks what a
/// hand-over needs: nothing changed), `unavailable` (closed, failed, or its
/// lease ran out), `internal` (the outcome is unknown). A status without the
/// key is read as `internal`, except NOT_FOUND and the connection errors.
pub const REFUSAL_KEY: &str = "roam-refusal";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("field {field} is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("volume {volume}: replica does not exist on this storage system")]
    ReplicaNotFound { volume: String },
    #[error("volume {volume}: replica exists with size {size}, asked {requested}")]
    ReplicaExists {
        volume: String,
        size: u64,
        requested: u64,
    },
    #[error("volume {volume}: no space for a replica of {size} bytes: {source}")]
    CreateNoSpace {
        volume: String,
        size: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {volume}: create replica failed: {source}")]
    CreateReplica {
        volume: String,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {volume}: delete replica failed: {source}")]
    DeleteReplica {
        volume: String,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn engine_code(e: &EngineError) -> Code {
    use EngineError::*;
    match e {
        StaleEpoch { .. }
        | EpochMismatch { .. }
        | EpochConflict { .. }
        | NotPrimary { .. }
        | NotSecondary { .. }
        | Fenced { .. }
        | SeqGap { .. }
        | DuplicateSeq { .. }
        | NotResyncing { .. }
        | ResyncUnfinished { .. }
        | NoGroup { .. }
        | TargetBehind { .. }
        | TargetNotInSync { .. }
        | SnapshotPosition { .. } => Code::FailedPrecondition,
        OutOfRange { .. } | ShrinkRefused { .. } => Code::OutOfRange,
        ChecksumMismatch { .. }
        | RegionChecksum { .. }
        | InvalidField { .. }
        | UnknownMember { .. } => Code::InvalidArgument,
        MessageTooLarge { .. } | NoSpace { .. } => Code::ResourceExhausted,
        ReplicateTimeout { .. } => Code::DeadlineExceeded,
        SecondaryRefused { .. } | Transport { .. } | TransferFailed { .. } => Code::Unavailable,
        NotFound { .. } | SnapshotNotFound { .. } => Code::NotFound,
        AlreadyExists { .. } | SnapshotConflict { .. } => Code::AlreadyExists,
        BackendIo { .. } | JournalIo { .. } | Metadata { .. } => Code::Internal,
        Closed { .. } | ReplicaFailed { .. } | LeaseExpired { .. } | Directory { .. } => {
            Code::Unavailable
        }
    }
}

fn refusal_name(e: &EngineError) -> &'static str {
    e.refusal_code().name()
}

impl From<StorageError> for Status {
    fn from(e: StorageError) -> Self {
        let message = format!("{e:#}");
        match &e {
            StorageError::Engine(inner) => {
                let mut s = Status::new(engine_code(inner), message);
                if let Ok(v) = refusal_name(inner).parse() {
                    s.metadata_mut().insert(REFUSAL_KEY, v);
                }
                s
            }
            StorageError::InvalidField { .. } => Status::invalid_argument(message),
            StorageError::ReplicaNotFound { .. } => Status::not_found(message),
            StorageError::ReplicaExists { .. } => Status::already_exists(message),
            StorageError::CreateNoSpace { .. } => Status::resource_exhausted(message),
            StorageError::CreateReplica { .. }
            | StorageError::DeleteReplica { .. }
            | StorageError::DataDir { .. } => Status::internal(message),
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
