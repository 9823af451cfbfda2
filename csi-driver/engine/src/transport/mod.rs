//! Transport: how one storage system talks to another. The engine only sees
//! the [`Transport`] trait; the gRPC implementation lives in the server crate,
//! `local::LocalTransport` connects volumes inside one process (tests, and a
//! group of one). It is the only part of this module that reaches back into
//! the volume, so it sits behind the `local-transport` feature (on by
//! default) and the rest of the engine never depends on it.
//!
//! A [`PeerLink`] is an ordered stream: requests are handled in the order
//! sent, with one reply per request in the same order. The sender keeps many
//! requests in flight on one link (pipelining) and relies on that order.

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::TransportError;
use crate::types::{GroupSpec, Position, Run, WriteRecord};

/// One region of a resync copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub data: Bytes,
    /// crc32c of `data`.
    pub crc: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PeerMessage {
    /// Hand-shake from a primary: adopt `epoch`, answer with the position.
    Hello {
        primary: String,
    },
    /// Writes in sequence order, contiguous.
    Append {
        records: Vec<WriteRecord>,
    },
    /// A region copy starts; `full` when every region will come.
    ResyncBegin {
        full: bool,
    },
    Regions {
        regions: Vec<Region>,
    },
    /// The copy is complete: the replica now holds every write up to `seq`.
    ResyncDone {
        seq: u64,
        applied_epoch: u64,
        history: Vec<Run>,
    },
    /// Planned change of primary: become primary at the request's epoch.
    TakePrimary {
        group: GroupSpec,
        last_seq: u64,
    },
    /// Take the primary's snapshot at the same point of the write order
    /// (this replica must stand at `meta.seq`).
    TakeSnapshot {
        meta: crate::snapshot::SnapshotMeta,
    },
}

impl PeerMessage {
    /// Payload bytes carried (for size limits).
    pub fn payload_len(&self) -> u64 {
        match self {
            PeerMessage::Append { records } => records.iter().map(|r| r.data.len() as u64).sum(),
            PeerMessage::Regions { regions } => regions.iter().map(|r| r.data.len() as u64).sum(),
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PeerRequest {
    pub volume_id: String,
    pub epoch: u64,
    pub msg: PeerMessage,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PeerReply {
    Position(Position),
    /// The reply to an Append: everything up to `seq` is in the peer's
    /// replica (its journal file: it survives a crash of the peer's
    /// process), not necessarily on its disk yet.
    Ack {
        seq: u64,
    },
    Done,
    /// Pushed unasked, between replies, each time the peer's journal commit
    /// raises its durable position: everything up to `seq` is on its disk.
    /// What a flush on the primary waits for.
    Durable {
        seq: u64,
    },
}

/// An ordered request/reply stream to one peer. Dropping `tx` closes it.
pub struct PeerLink {
    pub tx: mpsc::Sender<PeerRequest>,
    pub rx: mpsc::Receiver<Result<PeerReply, TransportError>>,
}

#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Open an ordered stream to the storage system at `endpoint`.
    async fn open(&self, endpoint: &str) -> Result<PeerLink, TransportError>;
    /// One request, one reply.
    async fn call(&self, endpoint: &str, req: PeerRequest) -> Result<PeerReply, TransportError>;
}

#[cfg(feature = "local-transport")]
pub mod local;
