//! The directory: where a group's in-sync set and its primary's lease are
//! recorded, outside any one data center (the Kubernetes API server, through
//! the operator). The engine only sees the [`Directory`] trait; the storage
//! system provides the implementation and attaches it with
//! [`crate::Volume::attach_directory`].
//!
//! Guarantees, once a directory is attached to a primary:
//!
//! - **In-sync set** (Kafka's ISR in ZooKeeper, DRBD's outdate-peer): a
//!   write goes on without a member of the set only after
//!   [`Directory::record_out_of_sync`] returned: the directory holds the
//!   record durably, written with a precondition on the epoch, so a
//!   primary that another one superseded cannot record anything. While the
//!   directory cannot be reached, the write fails (it never goes on alone).
//!   A member rejoins with [`Directory::record_in_sync`] after a resync
//!   proven complete. Failover promotes only a member of the recorded set.
//! - **Lease**: the primary renews its lease through the directory and stops
//!   acknowledging writes and flushes when it runs out, measured from the
//!   moment it asked for the renewal (so the directory's clock is never
//!   ahead of the primary's idea of it). Whoever promotes another member
//!   waits out the lease first; then the old primary has stopped, whatever
//!   the policy (Block, Degrade, Async), even when it is cut off from
//!   everyone and keeps running.
//!
//! Without a directory (a group of one, tests of the data path) the engine
//! keeps its records in the replica's metadata only and holds no lease.

use std::time::Duration;

use async_trait::async_trait;

/// Why the directory refused or could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DirectoryError {
    /// The directory holds a newer epoch for the volume: another primary
    /// exists. The caller fences itself.
    #[error("directory holds epoch {held} for volume {volume}, newer than {asked}")]
    Superseded {
        volume: String,
        held: u64,
        asked: u64,
    },
    /// No answer, or an answer that says nothing was recorded.
    #[error("directory unreachable for volume {volume}: {reason}")]
    Unreachable { volume: String, reason: String },
}

#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// Durably record `member` out of the in-sync set of `volume`, on
    /// condition that `epoch` is still the volume's epoch in the directory.
    async fn record_out_of_sync(
        &self,
        volume: &str,
        epoch: u64,
        member: &str,
    ) -> Result<(), DirectoryError>;

    /// Record `member` back in the in-sync set (after a complete resync),
    /// on the same condition.
    async fn record_in_sync(
        &self,
        volume: &str,
        epoch: u64,
        member: &str,
    ) -> Result<(), DirectoryError>;

    /// Renew the lease of the primary `holder` at `epoch`; returns how long
    /// it holds from the moment of the request.
    async fn renew_lease(
        &self,
        volume: &str,
        epoch: u64,
        holder: &str,
    ) -> Result<Duration, DirectoryError>;
}
