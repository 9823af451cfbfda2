//! Plain values shared by every stage: group definition, roles, write records,
//! positions and status. No behaviour beyond small helpers.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Size of one region of the dirty-region map (resync granularity).
pub const REGION_SIZE: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Role {
    /// Created, not yet part of a configured group.
    #[default]
    None,
    Primary,
    Secondary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum TransferType {
    #[default]
    Sync,
    Async,
}

/// Sync groups: what a write waits for. A flush (or FUA) waits, at either
/// level, until everything before it is on the disk of every member of the
/// in-sync set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SyncLevel {
    /// A write waits until every member of the in-sync set holds it.
    #[default]
    Write,
    /// A write waits only until it is queued, in order, to every member of
    /// the in-sync set; only flushes wait. For databases, which flush what
    /// they need durable: a failover lands on a prefix of the write order,
    /// as a disk does after a power cut.
    Flush,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum FailurePolicy {
    /// Writes wait, then fail, while a secondary cannot keep up.
    #[default]
    Block,
    /// Writes go on; the secondary is marked out of sync and resynced later.
    Degrade,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSpec {
    pub data_center: String,
    pub endpoint: String,
}

/// A copy volume group as one storage system knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GroupSpec {
    pub members: Vec<MemberSpec>,
    /// Data center of the primary at `epoch`.
    pub primary: String,
    pub epoch: u64,
    pub transfer_type: TransferType,
    /// Sync only.
    #[serde(default)]
    pub sync_level: SyncLevel,
    pub failure_policy: FailurePolicy,
    /// Async only: largest lag before new writes wait. 0 = no bound.
    pub max_lag_bytes: u64,
    pub max_lag_seconds: u64,
}

impl GroupSpec {
    /// A group of one: the replica in `data_center` is its own primary at
    /// epoch 1 (a volume without secondaries, as in benchmarks and tests).
    pub fn sole_member(data_center: &str) -> Self {
        Self {
            members: vec![MemberSpec {
                data_center: data_center.into(),
                endpoint: data_center.into(),
            }],
            primary: data_center.into(),
            epoch: 1,
            transfer_type: TransferType::Sync,
            sync_level: SyncLevel::Write,
            failure_policy: FailurePolicy::Block,
            max_lag_bytes: 0,
            max_lag_seconds: 0,
        }
    }

    pub fn member(&self, dc: &str) -> Option<&MemberSpec> {
        self.members.iter().find(|m| m.data_center == dc)
    }
}

/// Who wrote a run of sequence numbers: the epoch, and the primary's
/// incarnation in it. A primary starts a new incarnation whenever it opens
/// (after a crash it may have lost an unsynced tail, and hands out the lost
/// sequence numbers again for other data), so (term, seq) names one write.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Term {
    pub epoch: u64,
    pub incarnation: u64,
}

/// One entry of a replica's history: `term` wrote from `first_seq` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub epoch: u64,
    #[serde(default)]
    pub incarnation: u64,
    pub first_seq: u64,
}

impl Run {
    pub fn term(&self) -> Term {
        Term {
            epoch: self.epoch,
            incarnation: self.incarnation,
        }
    }
}

/// One write as it travels: cache, journal, wire, secondary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    pub seq: u64,
    pub epoch: u64,
    /// The primary's incarnation in `epoch` that accepted it (see [`Term`]).
    pub incarnation: u64,
    pub offset: u64,
    pub data: Bytes,
    /// crc32c over seq, epoch, offset and data, computed once where the write
    /// enters the system and checked wherever it lands.
    pub crc: u32,
}

impl WriteRecord {
    /// A write of incarnation 0 (tests and tools that speak for a primary).
    pub fn new(seq: u64, epoch: u64, offset: u64, data: Bytes) -> Self {
        Self::in_term(
            seq,
            Term {
                epoch,
                incarnation: 0,
            },
            offset,
            data,
        )
    }
    pub fn in_term(seq: u64, term: Term, offset: u64, data: Bytes) -> Self {
        let crc = record_crc_in(seq, term, offset, &data);
        Self {
            seq,
            epoch: term.epoch,
            incarnation: term.incarnation,
            offset,
            data,
            crc,
        }
    }
    pub fn term(&self) -> Term {
        Term {
            epoch: self.epoch,
            incarnation: self.incarnation,
        }
    }
    pub fn crc_ok(&self) -> bool {
        record_crc_in(self.seq, self.term(), self.offset, &self.data) == self.crc
    }
    pub fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

/// crc32c over seq, epoch, offset (little endian u64 each) and the payload:
/// the checksum of a write of incarnation 0.
pub fn record_crc(seq: u64, epoch: u64, offset: u64, data: &[u8]) -> u32 {
    let mut head = [0u8; 24];
    head[..8].copy_from_slice(&seq.to_le_bytes());
    head[8..16].copy_from_slice(&epoch.to_le_bytes());
    head[16..].copy_from_slice(&offset.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&head), data)
}

/// The checksum of a write in `term`: [`record_crc`], then the incarnation
/// (little endian u64) when it is not 0, so writes of incarnation 0 keep the
/// checksum they always had.
pub fn record_crc_in(seq: u64, term: Term, offset: u64, data: &[u8]) -> u32 {
    let crc = record_crc(seq, term.epoch, offset, data);
    if term.incarnation == 0 {
        return crc;
    }
    crc32c::crc32c_append(crc, &term.incarnation.to_le_bytes())
}

/// Where a secondary stands, returned by the hand-shake.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    pub epoch: u64,
    pub role: Role,
    /// Highest sequence number held durably.
    pub applied_seq: u64,
    /// Epoch of the write at `applied_seq` (0 when none).
    pub applied_epoch: u64,
    /// Incarnation of the write at `applied_seq` (see [`Term`]).
    pub applied_incarnation: u64,
    /// True while a region copy into this replica is unfinished.
    pub resyncing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    InSync,
    Lagging,
    Resyncing,
    Unreachable,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemberStatus {
    pub data_center: String,
    pub state: MemberState,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
    pub applied_seq: u64,
    pub message: String,
    /// Bytes of region data copied to this member by resyncs and full
    /// copies since this replica became its primary.
    pub resync_bytes: u64,
    /// In the group's in-sync set (see `replication::MemberTrack::in_sync`).
    pub in_sync: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VolumeStatus {
    pub volume_id: String,
    pub size_bytes: u64,
    pub role: Role,
    pub epoch: u64,
    pub written_seq: u64,
    pub durable_seq: u64,
    pub group: Option<GroupSpec>,
    pub members: Vec<MemberStatus>,
    pub fenced: bool,
    pub last_transfer_millis: u64,
}
