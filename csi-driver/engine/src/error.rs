//! The engine's one error enum. Variants are named after the operation or rule
//! that failed and carry the ids involved, so the gRPC edge can map each to a
//! precise status code.

use crate::types::Role;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("volume {volume}: epoch {got} is older than the held epoch {held}")]
    StaleEpoch { volume: String, held: u64, got: u64 },
    #[error("volume {volume}: epoch {got} is not the held epoch {held}")]
    EpochMismatch { volume: String, held: u64, got: u64 },
    #[error(
        "volume {volume}: epoch {epoch} is already held with a different primary ({held_primary}, asked {asked_primary})"
    )]
    EpochConflict {
        volume: String,
        epoch: u64,
        held_primary: String,
        asked_primary: String,
    },
    #[error("volume {volume}: not primary (role {role:?})")]
    NotPrimary { volume: String, role: Role },
    #[error("volume {volume}: not a secondary (role {role:?})")]
    NotSecondary { volume: String, role: Role },
    #[error("volume {volume}: fenced: {reason}")]
    Fenced { volume: String, reason: String },
    #[error("volume {volume}: range offset {offset} length {len} exceeds size {size}")]
    OutOfRange {
        volume: String,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("volume {volume}: shrink from {size} to {requested} refused")]
    ShrinkRefused {
        volume: String,
        size: u64,
        requested: u64,
    },
    #[error("volume {volume}: sequence gap: expected {expected}, got {got}")]
    SeqGap {
        volume: String,
        expected: u64,
        got: u64,
    },
    #[error("volume {volume}: duplicate sequence {got} (already applied up to {applied})")]
    DuplicateSeq {
        volume: String,
        applied: u64,
        got: u64,
    },
    #[error("volume {volume}: write {seq} fails its checksum")]
    ChecksumMismatch { volume: String, seq: u64 },
    #[error("volume {volume}: region at {offset} fails its checksum")]
    RegionChecksum { volume: String, offset: u64 },
    #[error("volume {volume}: message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge { volume: String, len: u64, max: u64 },
    #[error("volume {volume}: field {field} is invalid: {reason}")]
    InvalidField {
        volume: String,
        field: &'static str,
        reason: String,
    },
    #[error("volume {volume}: no region copy is in progress")]
    NotResyncing { volume: String },
    #[error("volume {volume}: a region copy into this replica is unfinished")]
    ResyncUnfinished { volume: String },
    #[error("volume {volume}: secondary {member} did not confirm write {seq} in time")]
    ReplicateTimeout {
        volume: String,
        member: String,
        seq: u64,
    },
    #[error("volume {volume}: secondary {member} refused write {seq}: {reason}")]
    SecondaryRefused {
        volume: String,
        member: String,
        seq: u64,
        reason: String,
    },
    #[error("volume {volume}: member {member} is not in the group")]
    UnknownMember { volume: String, member: String },
    #[error("volume {volume}: no group is configured")]
    NoGroup { volume: String },
    #[error("volume {volume}: transfer to {target} failed: {reason}")]
    TransferFailed {
        volume: String,
        target: String,
        reason: String,
    },
    #[error("volume {volume}: member {member} is not in the in-sync set")]
    TargetNotInSync { volume: String, member: String },
    #[error("volume {volume}: target holds write {have}, primary handed over at {need}")]
    TargetBehind {
        volume: String,
        have: u64,
        need: u64,
    },
    #[error("volume {volume}: no space left for {op}")]
    NoSpace { volume: String, op: &'static str },
    #[error("volume {volume}: backend {op} failed: {source}")]
    BackendIo {
        volume: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {volume}: journal {op} failed: {source}")]
    JournalIo {
        volume: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {volume}: metadata {op} failed: {reason}")]
    Metadata {
        volume: String,
        op: &'static str,
        reason: String,
    },
    #[error("volume {volume}: replica does not exist")]
    NotFound { volume: String },
    #[error("volume {volume}: replica exists with size {size}, asked {requested}")]
    AlreadyExists {
        volume: String,
        size: u64,
        requested: u64,
    },
    #[error("volume {volume}: peer {peer} unreachable: {source}")]
    Transport {
        volume: String,
        peer: String,
        #[source]
        source: TransportError,
    },
    #[error("volume {volume}: closed")]
    Closed { volume: String },
    /// A write or sync of the replica's files failed. What the disk holds
    /// is unknown (Linux reports a failed writeback once and drops the
    /// pages), so the replica answers nothing until it is opened again and
    /// replays its journal; a retry could report success for lost data.
    #[error("volume {volume}: replica failed, reopen to replay its journal: {reason}")]
    ReplicaFailed { volume: String, reason: String },
    /// The primary's lease ran out: another member may be promoted, so this
    /// one acknowledges nothing until the directory renews it.
    #[error("volume {volume}: the primary's lease ran out")]
    LeaseExpired { volume: String },
    #[error("volume {volume}: snapshot {snapshot} does not exist")]
    SnapshotNotFound { volume: String, snapshot: String },
    #[error(
        "volume {volume}: snapshot {snapshot} exists at sequence {held}, asked to take it at {asked}"
    )]
    SnapshotConflict {
        volume: String,
        snapshot: String,
        held: u64,
        asked: u64,
    },
    /// A member asked to take a snapshot at a point of the write order it
    /// does not stand at: it would not hold the same bytes as the primary.
    #[error(
        "volume {volume}: snapshot {snapshot} is at sequence {want}, this replica stands at {have}"
    )]
    SnapshotPosition {
        volume: String,
        snapshot: String,
        want: u64,
        have: u64,
    },
    #[error("volume {volume}: directory: {source}")]
    Directory {
        volume: String,
        #[source]
        source: crate::directory::DirectoryError,
    },
}

/// What went wrong between two storage systems.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("stream to {endpoint} closed")]
    StreamClosed { endpoint: String },
    /// The peer answered with a refusal; `code` is the peer's error class.
    #[error("peer {endpoint} refused ({code:?}): {message}")]
    Refused {
        endpoint: String,
        code: RefusalCode,
        message: String,
    },
}

/// Classes of refusal a peer can send back, mirrored from [`EngineError`].
/// Each tells the caller what to do: `StaleEpoch`, another primary exists
/// (fence yourself); `NoSpace`, `OutOfOrder`, `Invalid`, `NotFound`,
/// `NotReady`, the peer changed nothing (go on, retry later, or resync);
/// `Unavailable`, the peer answers nothing now (retry); `Internal`, the peer
/// failed part way and the outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    StaleEpoch,
    NoSpace,
    OutOfOrder,
    Invalid,
    NotFound,
    /// The peer cannot take the role yet (a copy into it is unfinished, or
    /// it lacks writes the hand-over needs); nothing changed.
    NotReady,
    /// Closed or failed: the peer answers nothing until it is opened again.
    Unavailable,
    Internal,
}

impl RefusalCode {
    /// The name carried on the wire.
    pub fn name(self) -> &'static str {
        match self {
            RefusalCode::StaleEpoch => "stale-epoch",
            RefusalCode::NoSpace => "no-space",
            RefusalCode::OutOfOrder => "out-of-order",
            RefusalCode::Invalid => "invalid",
            RefusalCode::NotFound => "not-found",
            RefusalCode::NotReady => "not-ready",
            RefusalCode::Unavailable => "unavailable",
            RefusalCode::Internal => "internal",
        }
    }

    /// The code a wire name stands for; an unknown name (a newer peer) is
    /// `Internal`: the outcome is unknown to this version.
    pub fn from_name(name: &str) -> RefusalCode {
        [
            RefusalCode::StaleEpoch,
            RefusalCode::NoSpace,
            RefusalCode::OutOfOrder,
            RefusalCode::Invalid,
            RefusalCode::NotFound,
            RefusalCode::NotReady,
            RefusalCode::Unavailable,
        ]
        .into_iter()
        .find(|c| c.name() == name)
        .unwrap_or(RefusalCode::Internal)
    }
}

impl EngineError {
    pub fn is_no_space(&self) -> bool {
        matches!(self, EngineError::NoSpace { .. })
    }

    /// The refusal class sent to a peer for this error.
    pub fn refusal_code(&self) -> RefusalCode {
        use EngineError::*;
        match self {
            StaleEpoch { .. }
            | EpochMismatch { .. }
            | EpochConflict { .. }
            | NotSecondary { .. } => RefusalCode::StaleEpoch,
            NoSpace { .. } => RefusalCode::NoSpace,
            SeqGap { .. } | DuplicateSeq { .. } | NotResyncing { .. } => RefusalCode::OutOfOrder,
            OutOfRange { .. }
            | ChecksumMismatch { .. }
            | RegionChecksum { .. }
            | MessageTooLarge { .. }
            | InvalidField { .. } => RefusalCode::Invalid,
            NotFound { .. } | SnapshotNotFound { .. } => RefusalCode::NotFound,
            SnapshotConflict { .. } => RefusalCode::Invalid,
            SnapshotPosition { .. } => RefusalCode::OutOfOrder,
            ResyncUnfinished { .. }
            | TargetBehind { .. }
            | TargetNotInSync { .. }
            | NoGroup { .. } => RefusalCode::NotReady,
            NotPrimary { .. } | Fenced { .. } | UnknownMember { .. } | ShrinkRefused { .. } => {
                RefusalCode::Invalid
            }
            AlreadyExists { .. } => RefusalCode::Invalid,
            Closed { .. } | ReplicaFailed { .. } | LeaseExpired { .. } => RefusalCode::Unavailable,
            Directory { .. } => RefusalCode::Internal,
            ReplicateTimeout { .. }
            | SecondaryRefused { .. }
            | TransferFailed { .. }
            | Transport { .. }
            | BackendIo { .. }
            | JournalIo { .. }
            | Metadata { .. } => RefusalCode::Internal,
        }
    }

    pub(crate) fn backend(volume: &str, op: &'static str, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(nix::libc::ENOSPC) {
            return EngineError::NoSpace {
                volume: volume.to_string(),
                op,
            };
        }
        EngineError::BackendIo {
            volume: volume.to_string(),
            op,
            source,
        }
    }

    /// A failed write of meta.json; a full disk is [`EngineError::NoSpace`]
    /// like any other, so a peer refuses with the code the writer acts on.
    pub(crate) fn metadata_store(volume: &str, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(nix::libc::ENOSPC) {
            return EngineError::NoSpace {
                volume: volume.to_string(),
                op: "metadata store",
            };
        }
        EngineError::Metadata {
            volume: volume.to_string(),
            op: "store",
            reason: source.to_string(),
        }
    }

    pub(crate) fn journal(volume: &str, op: &'static str, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(nix::libc::ENOSPC) {
            return EngineError::NoSpace {
                volume: volume.to_string(),
                op,
            };
        }
        EngineError::JournalIo {
            volume: volume.to_string(),
            op,
            source,
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
