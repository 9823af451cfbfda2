//! The volume handle: one replica on this storage system, in whatever role.
//!
//! ```ignore
//! impl Volume {
//!     async fn open(id, data_center, files: VolumeFiles, transport, config) -> Result<Volume>;
//!     async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<u64 /* seq */>;
//!     async fn read(&self, offset: u64, len: u64) -> Result<Bytes>;
//!     async fn flush(&self) -> Result<u64 /* durable seq */>;
//!     fn size(&self) -> u64;
//! }
//! ```
//!
//! Write execution on the primary (claims 15, 16, 20): under the state lock a
//! write gets the next sequence number, is written to the real volume and
//! the journal file (page cache) and put in the in-memory cache for the
//! streaming secondaries (or marked in the dirty maps of the others); outside
//! the lock — for a Sync group, or FUA — it waits for every streaming
//! secondary to hold it durably, and a FUA write also for the journal's next
//! sync. A flush waits for the journal's sync and, in a Sync group, for every
//! streaming secondary. Reads come from the real volume, which always holds
//! every accepted write.
//!
//! Guarantees: an acknowledged write is in the journal file (it survives a
//! crash of this process) and, in a Sync group, durable on every in-sync
//! secondary; a flushed write is durable here too. Sequence numbers are
//! contiguous across epochs. Only the primary at the held epoch accepts writes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tracing::instrument;

use crate::backend::{Backend, MetaStore, VolumeFiles, VolumeMeta};
use crate::cache::journal::Journal;
use crate::cache::memory::WriteCache;
use crate::error::{EngineError, Result};
use crate::replication::{Holds, MemberTrack};
use crate::transport::Transport;
use crate::types::{Role, Term, VolumeStatus, WriteRecord};

/// Tunables; the defaults suit production, tests shorten the timeouts.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a write waits for a secondary (Sync, FUA, lag bound) before
    /// the failure policy applies.
    pub ack_timeout: Duration,
    /// How long a planned change of primary waits for the target to catch up.
    pub transfer_timeout: Duration,
    /// Journal size that triggers a checkpoint.
    pub checkpoint_bytes: u64,
    /// Largest in-memory cache before new writes wait, whatever the lag bound.
    pub cache_limit_bytes: u64,
    /// Largest single write.
    pub max_write_bytes: u64,
    /// Largest peer message payload accepted.
    pub max_message_bytes: u64,
    /// Target payload of one batch sent to a secondary.
    pub batch_bytes: u64,
    /// Batches in flight per secondary.
    pub window: usize,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(10),
            transfer_timeout: Duration::from_secs(30),
            checkpoint_bytes: 64 << 20,
            cache_limit_bytes: 256 << 20,
            max_write_bytes: 4 << 20,
            max_message_bytes: 8 << 20,
            batch_bytes: 1 << 20,
            window: 16,
            max_backoff: Duration::from_secs(2),
        }
    }
}

pub(crate) struct State {
    pub meta: VolumeMeta,
    /// No new writes: a change of primary is in progress, or a peer holds a
    /// newer epoch (`superseded`).
    pub fenced: bool,
    /// A peer refused this primary at a newer epoch: another primary exists.
    /// Lifted only by a role change (configure, promote, hand-over).
    pub superseded: bool,
    /// Highest sequence number accepted.
    pub last_seq: u64,
    /// Epoch of the write at `last_seq`.
    pub last_epoch: u64,
    /// Incarnation of the write at `last_seq`.
    pub last_incarnation: u64,
    pub cache: WriteCache,
    /// Primary only: one entry per secondary, by data center.
    pub members: BTreeMap<String, MemberTrack>,
    pub checkpointing: bool,
    pub closed: bool,
    /// Set when a write or sync of the data file failed: what the disk holds
    /// is unknown, so the replica refuses everything ([`crate::fence`])
    /// until it is opened again and replays its journal. Never retried: a
    /// failed fsync is reported once, and a retry that succeeds proves
    /// nothing about the lost pages.
    pub failed: Option<String>,
    /// A directory is attached: as primary, acknowledge only until `lease_until`.
    pub lease_required: bool,
    pub lease_until: Option<std::time::Instant>,
}

pub(crate) struct Inner {
    pub id: String,
    pub config: EngineConfig,
    /// The real volume as every write reaches it: through the snapshots'
    /// copy-on-write ([`crate::snapshot::CowData`]).
    pub data: Arc<dyn Backend>,
    /// The real volume itself, for reads of snapshots.
    pub raw_data: Arc<dyn Backend>,
    pub snapshots: Arc<crate::snapshot::Snapshots>,
    /// Host writes hold it shared while they are accepted; taking a
    /// snapshot holds it exclusively, so its point in the write order is
    /// the last write accepted before.
    pub write_barrier: tokio::sync::RwLock<()>,
    pub meta_store: Arc<dyn MetaStore>,
    pub journal: Journal,
    pub transport: Arc<dyn Transport>,
    pub state: Mutex<State>,
    /// Serializes role changes and peer control messages.
    pub role_lock: tokio::sync::Mutex<()>,
    /// Serializes metadata writes so the newest always lands last.
    /// Held by the blocking store itself, so a cancelled caller cannot let
    /// a store of this instance run on after `close` returned.
    pub meta_lock: Arc<tokio::sync::Mutex<()>>,
    /// Serializes records of members leaving the in-sync set.
    pub in_sync_lock: tokio::sync::Mutex<()>,
    /// Highest accepted sequence number, for senders waiting on new writes.
    pub last_seq_tx: watch::Sender<u64>,
    pub io: crate::counters::IoCounters,
    /// Where the in-sync set and the lease are recorded, once attached.
    pub directory: Mutex<Option<Arc<dyn crate::directory::Directory>>>,
    /// The lease renewal task and the epoch it renews for.
    pub lease_task: Mutex<Option<(u64, tokio::task::AbortHandle)>>,
}

/// A handle to one replica. Cheap to clone.
#[derive(Clone)]
pub struct Volume {
    pub(crate) inner: Arc<Inner>,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Persist the current metadata (the newest wins).
    pub(crate) async fn persist(self: &Arc<Self>) -> Result<()> {
        let guard = self.meta_lock.clone().lock_owned().await;
        let bytes = {
            let st = self.lock();
            if st.closed {
                // A closed replica writes nothing more; a new instance may own the files.
                return Ok(());
            }
            let mut meta = st.meta.clone();
            meta.dirty = crate::replication::persisted_maps(&st);
            serde_json::to_vec(&meta).map_err(|e| EngineError::Metadata {
                volume: self.id.clone(),
                op: "encode",
                reason: e.to_string(),
            })?
        };
        let store = self.meta_store.clone();
        let id = self.id.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            store.store(&bytes)
        })
        .await
        .map_err(|e| EngineError::Metadata {
            volume: id.clone(),
            op: "store",
            reason: e.to_string(),
        })?
        .map_err(|e| EngineError::metadata_store(&id, e))
    }

    pub(crate) fn check_range(&self, offset: u64, len: u64, size: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(EngineError::OutOfRange {
                volume: self.id.clone(),
                offset,
                len,
                size,
            }),
        }
    }

    /// A write or sync of the data file failed: stop the replica (see
    /// [`State::failed`]). Returns the error for the caller.
    pub(crate) fn fail(&self, st: &mut State, op: &'static str, e: std::io::Error) -> EngineError {
        let err = EngineError::backend(&self.id, op, e);
        if st.failed.is_none() {
            tracing::error!(volume = %self.id, error = %err, "replica failed; it answers nothing until reopened");
            st.failed = Some(err.to_string());
        }
        // Writers and senders waiting on this replica stop waiting.
        self.last_seq_tx.send_modify(|_| {});
        err
    }

    /// Start a checkpoint in the background when the journal has grown past its bound.
    pub(crate) fn maybe_checkpoint(self: &Arc<Self>) {
        if self.journal.len() < self.config.checkpoint_bytes {
            return;
        }
        {
            let mut st = self.lock();
            if st.checkpointing || st.closed {
                return;
            }
            st.checkpointing = true;
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = this.checkpoint_blocking()
                && !matches!(e, EngineError::Closed { .. })
            {
                tracing::error!(volume = %this.id, error = %format!("{e:#}"), "checkpoint failed");
            }
            this.lock().checkpointing = false;
        });
    }

    /// Blocking: sync the real volume, record the checkpoint (and the dirty
    /// maps that cover what members lack) in the metadata, empty the journal.
    /// Holds the state lock for the last part, so writes wait meanwhile; the
    /// bulk of the volume's dirty data is synced before that, with writes
    /// still flowing, so the locked sync only has what came in meanwhile
    /// (under a stream of large writes a locked sync of everything since the
    /// last checkpoint held writes up for a third of the time).
    pub(crate) fn checkpoint_blocking(self: &Arc<Self>) -> Result<()> {
        if let Err(e) = self.data.sync() {
            return Err(self.fail(&mut self.lock(), "checkpoint sync", e));
        }
        let _g = self.meta_lock.blocking_lock();
        let mut st = self.lock();
        crate::fence::alive(&self.id, &st)?;
        if let Err(e) = self.data.sync() {
            return Err(self.fail(&mut st, "checkpoint sync", e));
        }
        st.meta.checkpoint_seq = st.last_seq;
        st.meta.checkpoint_epoch = st.last_epoch;
        st.meta.checkpoint_incarnation = st.last_incarnation;
        let mut meta = st.meta.clone();
        meta.dirty = crate::replication::persisted_maps(&st);
        let bytes = serde_json::to_vec(&meta).map_err(|e| EngineError::Metadata {
            volume: self.id.clone(),
            op: "encode",
            reason: e.to_string(),
        })?;
        self.meta_store
            .store(&bytes)
            .map_err(|e| EngineError::metadata_store(&self.id, e))?;
        self.journal.reset()?;
        drop(st);
        Ok(())
    }
}

impl Volume {
    /// Open a replica: load the metadata, replay the journal into the real
    /// volume, and — on a primary — start the senders (every member begins
    /// by resyncing what its dirty map says it lacks).
    #[instrument(skip_all, fields(volume = %id))]
    pub async fn open(
        id: &str,
        files: VolumeFiles,
        transport: Arc<dyn Transport>,
        config: EngineConfig,
    ) -> Result<Volume> {
        let raw = files
            .meta
            .load()
            .map_err(|e| EngineError::Metadata {
                volume: id.into(),
                op: "load",
                reason: e.to_string(),
            })?
            .ok_or_else(|| EngineError::NotFound { volume: id.into() })?;
        let mut meta: VolumeMeta =
            serde_json::from_slice(&raw).map_err(|e| EngineError::Metadata {
                volume: id.into(),
                op: "decode",
                reason: e.to_string(),
            })?;
        let size = files
            .data
            .size()
            .map_err(|e| EngineError::backend(id, "size", e))?;
        meta.size_bytes = size;
        let snapshots = Arc::new(
            crate::snapshot::Snapshots::open(files.snapshots.clone(), &meta.snapshots)
                .map_err(|e| EngineError::backend(id, "open snapshots", e))?,
        );
        let raw_data = files.data.clone();
        // Every write from here on, the replay included, goes through the
        // snapshots' copy-on-write.
        let data: Arc<dyn Backend> = Arc::new(crate::snapshot::CowData {
            data: raw_data.clone(),
            snapshots: snapshots.clone(),
        });
        let (journal, records) = Journal::open(id, files.journal.clone())?;
        // What the journal file holds may be in the page cache only (the
        // process was killed, the machine was not): sync it before counting
        // it durable, or a flush after the restart would skip the sync.
        files
            .journal
            .sync()
            .map_err(|e| EngineError::journal(id, "sync at open", e))?;
        let mut last_seq = meta.checkpoint_seq;
        let mut last_term = Term {
            epoch: meta.checkpoint_epoch,
            incarnation: meta.checkpoint_incarnation,
        };
        let mut replayed = Vec::new();
        for rec in records.into_iter().filter(|r| r.seq > meta.checkpoint_seq) {
            // A record that does not continue the sequence is from an older
            // generation of the (reused) journal file: replay ends there.
            if rec.seq != last_seq + 1 || rec.term() < last_term || rec.end() > size {
                break;
            }
            data.write_at(rec.offset, &rec.data)
                .map_err(|e| EngineError::backend(id, "replay", e))?;
            last_seq = rec.seq;
            last_term = rec.term();
            crate::receive::note_history(&mut meta.history, rec.term(), rec.seq);
            replayed.push(rec);
        }
        // Everything replayed or checkpointed is durable now.
        journal.advance_to(last_seq);
        if meta.role == Role::Primary {
            // A new incarnation: this primary may have lost an unsynced tail
            // that secondaries hold; the sequence numbers it hands out next
            // are told apart from those by their term. Stored (below) before
            // any write is accepted.
            meta.incarnation = meta.incarnation.max(last_term.incarnation) + 1;
            let term = Term {
                epoch: meta.epoch,
                incarnation: meta.incarnation,
            };
            crate::receive::note_history(&mut meta.history, term, last_seq + 1);
        }
        tracing::info!(replayed = replayed.len(), last_seq, role = ?meta.role, epoch = meta.epoch, "replica opened");
        let mut members = BTreeMap::new();
        if meta.role == Role::Primary {
            members = crate::replication::restore_members(&meta, &replayed, size);
        }
        let (last_seq_tx, _) = watch::channel(last_seq);
        let inner = Arc::new(Inner {
            id: id.to_string(),
            config,
            data,
            raw_data,
            snapshots,
            write_barrier: tokio::sync::RwLock::new(()),
            meta_store: files.meta,
            journal,
            transport,
            state: Mutex::new(State {
                meta,
                fenced: false,
                superseded: false,
                last_seq,
                last_epoch: last_term.epoch,
                last_incarnation: last_term.incarnation,
                cache: WriteCache::default(),
                members,
                checkpointing: false,
                closed: false,
                failed: None,
                lease_required: false,
                lease_until: None,
            }),
            role_lock: tokio::sync::Mutex::new(()),
            meta_lock: Arc::new(tokio::sync::Mutex::new(())),
            in_sync_lock: tokio::sync::Mutex::new(()),
            last_seq_tx,
            io: Default::default(),
            directory: Mutex::new(None),
            lease_task: Mutex::new(None),
        });
        let vol = Volume { inner };
        vol.inner.persist().await?;
        crate::replication::start_senders(&vol.inner);
        Ok(vol)
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Record the in-sync set in `directory` and hold a lease through it
    /// (see [`crate::directory`]). From now on, as primary, this replica
    /// acknowledges only while its lease holds; the first renewal starts at
    /// once.
    pub fn attach_directory(&self, directory: Arc<dyn crate::directory::Directory>) {
        *self
            .inner
            .directory
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(directory);
        self.inner.lock().lease_required = true;
        crate::replication::start_senders(&self.inner);
    }

    pub fn size(&self) -> u64 {
        self.inner.lock().meta.size_bytes
    }

    /// Host I/O counted on this replica since it was opened.
    pub fn io_counters(&self) -> crate::IoSnapshot {
        self.inner.io.snapshot()
    }

    pub fn role(&self) -> Role {
        self.inner.lock().meta.role
    }

    pub fn epoch(&self) -> u64 {
        self.inner.lock().meta.epoch
    }

    /// Write on the primary. Returns the write's sequence number once it is
    /// durable here and, for a Sync group or `fua`, on every streaming secondary.
    /// Fails (`StaleEpoch`, `NotPrimary`, `Fenced`) when a newer epoch
    /// superseded this primary before every one of them held it.
    #[instrument(skip_all, fields(volume = %self.inner.id, offset, len = data.len()))]
    pub async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<u64> {
        self.write_at_epoch(None, offset, data, fua).await
    }

    /// [`Volume::write`], refused unless `epoch` (when given) is the held epoch.
    pub async fn write_at_epoch(
        &self,
        epoch: Option<u64>,
        offset: u64,
        data: Bytes,
        fua: bool,
    ) -> Result<u64> {
        let inner = &self.inner;
        let started = std::time::Instant::now();
        if data.is_empty() {
            return Err(EngineError::InvalidField {
                volume: inner.id.clone(),
                field: "data",
                reason: "empty".into(),
            });
        }
        if data.len() as u64 > inner.config.max_write_bytes {
            return Err(EngineError::MessageTooLarge {
                volume: inner.id.clone(),
                len: data.len() as u64,
                max: inner.config.max_write_bytes,
            });
        }
        crate::replication::wait_for_room(inner, epoch).await?;
        let len = data.len() as u64;
        let barrier = inner.write_barrier.read().await;
        let (seq, held_epoch, waits) = {
            let mut st = inner.lock();
            crate::fence::writable(&inner.id, &st, epoch)?;
            inner.check_range(offset, data.len() as u64, st.meta.size_bytes)?;
            let seq = st.last_seq + 1;
            let term = Term {
                epoch: st.meta.epoch,
                incarnation: st.meta.incarnation,
            };
            let rec = WriteRecord::in_term(seq, term, offset, data);
            // The journal first: a write that reaches the data file is always
            // in the journal too, so a failure between the two leaves nothing
            // that a replay and the dirty maps do not cover. A failed data
            // write after it stops the replica; reopening replays the record.
            inner.journal.append(&rec)?;
            if let Err(e) = inner.data.write_at(offset, &rec.data) {
                return Err(inner.fail(&mut st, "write", e));
            }
            st.last_seq = seq;
            st.last_epoch = rec.epoch;
            st.last_incarnation = rec.incarnation;
            let held_epoch = rec.epoch;
            let waits = crate::replication::enqueue(&mut st, rec, fua);
            (seq, held_epoch, waits)
        };
        drop(barrier);
        inner.last_seq_tx.send_replace(seq);
        // In the journal file the write survives a crash of this process;
        // only FUA (and a flush) waits for it to be on the disk too.
        if fua {
            inner.journal.wait_durable(seq).await?;
        }
        let holds = if fua { Holds::Durable } else { Holds::Received };
        crate::replication::wait_acks(inner, held_epoch, seq, holds, waits).await?;
        crate::fence::lease(&inner.id, &inner.lock())?;
        inner.maybe_checkpoint();
        inner.io.wrote(len, started.elapsed());
        Ok(seq)
    }

    /// Read from the real volume (it holds every accepted write). Any role:
    /// on a secondary it shows what that replica holds.
    #[instrument(skip_all, fields(volume = %self.inner.id, offset, len))]
    pub async fn read(&self, offset: u64, len: u64) -> Result<Bytes> {
        let size = self.size();
        self.inner.check_range(offset, len, size)?;
        if len > self.inner.config.max_message_bytes {
            return Err(EngineError::MessageTooLarge {
                volume: self.inner.id.clone(),
                len,
                max: self.inner.config.max_message_bytes,
            });
        }
        let mut buf = vec![0u8; len as usize];
        self.inner
            .data
            .read_at(offset, &mut buf)
            .map_err(|e| EngineError::backend(&self.inner.id, "read", e))?;
        Ok(Bytes::from(buf))
    }

    /// Read on the primary at `epoch`: the host's reads, through the storage
    /// API or in-process, counted in [`Volume::io_counters`].
    pub async fn read_at_epoch(&self, epoch: u64, offset: u64, len: u64) -> Result<Bytes> {
        let started = std::time::Instant::now();
        {
            let st = self.inner.lock();
            crate::fence::primary(&self.inner.id, &st, Some(epoch))?;
        }
        let data = self.read(offset, len).await?;
        self.inner.io.read(len, started.elapsed());
        Ok(data)
    }

    /// Make every accepted write durable here (in the journal, replayed into
    /// the real volume after a crash) and — in a Sync group — on the disk of
    /// every member of the in-sync set. Returns the durable sequence number.
    #[instrument(skip_all, fields(volume = %self.inner.id))]
    pub async fn flush(&self) -> Result<u64> {
        self.flush_at_epoch(None).await
    }

    pub async fn flush_at_epoch(&self, epoch: Option<u64>) -> Result<u64> {
        let inner = &self.inner;
        let started = std::time::Instant::now();
        let (seq, held_epoch, waits) = {
            let st = inner.lock();
            if epoch.is_some() {
                crate::fence::primary(&inner.id, &st, epoch)?;
            }
            (
                st.last_seq,
                st.meta.epoch,
                crate::replication::flush_waits(&st),
            )
        };
        // The journal is what makes a write durable here: every accepted
        // write since the last checkpoint is in it, and a checkpoint syncs
        // the real volume before emptying it. So a flush waits for the
        // journal's group commit only, not for an fdatasync of the real
        // volume too (that second sync per flush halved small-write IOPS).
        inner.journal.wait_durable(seq).await?;
        crate::replication::wait_acks(inner, held_epoch, seq, Holds::Durable, waits).await?;
        crate::fence::lease(&inner.id, &inner.lock())?;
        inner.io.flushed(started.elapsed());
        Ok(seq)
    }

    /// Grow the real volume; never shrinks.
    #[instrument(skip_all, fields(volume = %self.inner.id, size))]
    pub async fn expand(&self, size: u64) -> Result<()> {
        let _g = self.inner.role_lock.lock().await;
        let current = self.size();
        if size < current {
            return Err(EngineError::ShrinkRefused {
                volume: self.inner.id.clone(),
                size: current,
                requested: size,
            });
        }
        if size > current {
            let data = self.inner.data.clone();
            let id = self.inner.id.clone();
            tokio::task::spawn_blocking(move || data.resize(size))
                .await
                .map_err(|e| {
                    EngineError::backend(&id, "resize", std::io::Error::other(e.to_string()))
                })?
                .map_err(|e| EngineError::backend(&id, "resize", e))?;
            self.inner.lock().meta.size_bytes = size;
            self.inner.persist().await?;
        }
        Ok(())
    }

    pub fn status(&self) -> VolumeStatus {
        let st = self.inner.lock();
        VolumeStatus {
            volume_id: self.inner.id.clone(),
            size_bytes: st.meta.size_bytes,
            role: st.meta.role,
            epoch: st.meta.epoch,
            written_seq: st.last_seq,
            durable_seq: self
                .inner
                .journal
                .durable_seq()
                .max(st.meta.checkpoint_seq)
                .min(st.last_seq),
            group: st.meta.group.clone(),
            members: crate::replication::member_statuses(&st),
            fenced: st.fenced,
            last_transfer_millis: st.meta.last_transfer_millis,
        }
    }

    /// Stop the senders and the journal. Accepted writes stay durable; the
    /// replica can be opened again once this returns (no metadata write or
    /// checkpoint of this instance still runs).
    pub async fn close(&self) {
        let members = {
            let mut st = self.inner.lock();
            st.closed = true;
            std::mem::take(&mut st.members)
        };
        for m in members.into_values() {
            m.stop();
        }
        if let Some((_, t)) = self
            .inner
            .lease_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            t.abort();
        }
        // Wait for a metadata write or checkpoint in progress; later ones see `closed`.
        let _meta = self.inner.meta_lock.lock().await;
        let last = self.inner.lock().last_seq;
        let _ = self.inner.journal.wait_durable(last).await;
        self.inner.journal.shutdown();
    }
}
