//! Receive: the secondary side of replication (claim 19, "write data receive").
//!
//! Every peer message is checked before anything changes: the volume id, the
//! size limit, the epoch (older: `StaleEpoch`; newer than a data message
//! expects: `EpochMismatch`), the role, and for writes the sequence rules —
//! the batch must start right after the last applied write (`SeqGap`,
//! `DuplicateSeq`), be contiguous, pass its checksums and fit the volume. A
//! rejected message changes nothing. An accepted batch is journaled and
//! written to the real volume in order, so every write is applied exactly
//! once, in order.
//!
//! The acknowledgement of a batch goes back as soon as the journal file holds
//! it (where it survives a crash of this process), without waiting for the
//! disk: DRBD's protocol C. The journal's commit thread syncs in the
//! background, and each time it raises the durable position, the stream
//! pushes it to the primary unasked ([`PeerReply::Durable`]). A write on the
//! primary waits for the acknowledgement, a flush for the pushed durable
//! position, so a flush costs at most what is still unsynced plus half a
//! round trip, and no write waits for an fdatasync on the secondary.
//!
//! [`Volume::begin_peer`] has two phases so a stream can pipeline: the checks
//! and the apply happen when it is awaited (in message order); the returned
//! future yields the reply. [`ReplyQueue`] puts the replies of one stream in
//! order and the durable pushes between them, for every transport.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::watch;
use tracing::instrument;

use crate::cache::journal::Durable;

use crate::error::{EngineError, Result};
use crate::transport::{PeerMessage, PeerReply, PeerRequest, Region};
use crate::types::{Position, Role, Run, Term, WriteRecord};
use crate::volume::{Inner, Volume};

pub type ReplyFuture = Pin<Box<dyn Future<Output = Result<PeerReply>> + Send>>;

/// Record that `term` wrote from `seq` on, when it is a newer term. A later
/// term that starts at or below the last run's start replaces the runs it
/// overwrites (a primary reopened with a shorter log).
pub(crate) fn note_history(history: &mut Vec<Run>, term: Term, seq: u64) {
    if history.last().is_some_and(|r| r.term() >= term) {
        return;
    }
    while history.last().is_some_and(|r| r.first_seq >= seq) {
        history.pop();
    }
    history.push(Run {
        epoch: term.epoch,
        incarnation: term.incarnation,
        first_seq: seq,
    });
}

/// The term that wrote `seq` according to `history` (0, 0 when none).
pub(crate) fn term_at(history: &[Run], seq: u64) -> Term {
    history
        .iter()
        .rev()
        .find(|r| r.first_seq <= seq)
        .map(Run::term)
        .unwrap_or_default()
}

/// True when a member at `pos` holds a prefix of this replica's writes: the
/// same term wrote its last write here. Sequence numbers alone prove nothing:
/// a primary reopened after a power cut hands out lost ones again.
pub(crate) fn history_ok(history: &[Run], pos: &Position, last: u64, last_term: Term) -> bool {
    if pos.applied_seq == 0 {
        return true;
    }
    if pos.applied_seq > last {
        return false;
    }
    let theirs = Term {
        epoch: pos.applied_epoch,
        incarnation: pos.applied_incarnation,
    };
    if pos.applied_seq == last {
        return theirs == last_term;
    }
    term_at(history, pos.applied_seq) == theirs
}

fn ready(reply: PeerReply) -> ReplyFuture {
    Box::pin(async move { Ok(reply) })
}

/// The replies of one replication stream on the receiving side: the reply to
/// each request, in request order, and between them this replica's durable
/// position each time it rises. A transport feeds it every request of the
/// stream ([`ReplyQueue::begin`]) and sends whatever [`ReplyQueue::next`]
/// yields, until an error, which ends the stream.
#[derive(Default)]
pub struct ReplyQueue {
    pending: FuturesOrdered<ReplyFuture>,
    durable: Option<DurablePush>,
}

/// The durable position of the stream's replica, as last pushed.
struct DurablePush {
    inner: Arc<Inner>,
    rx: watch::Receiver<Durable>,
    pushed: u64,
}

impl DurablePush {
    /// The next durable position to push: it rises with the journal's
    /// commits and falls only when a region copy sets the position anew.
    /// Cancellation safe.
    async fn next(&mut self) -> Result<PeerReply> {
        loop {
            if let Some(e) = self.inner.journal.failure() {
                return Err(e);
            }
            let seq = self.rx.borrow_and_update().seq;
            if seq != self.pushed {
                self.pushed = seq;
                return Ok(PeerReply::Durable { seq });
            }
            self.rx.changed().await.map_err(|_| EngineError::Closed {
                volume: self.inner.id.clone(),
            })?;
        }
    }
}

impl ReplyQueue {
    /// Check and apply `req` on `vol` ([`Volume::begin_peer`]); its reply
    /// comes out of [`ReplyQueue::next`] in request order. A refusal changes
    /// nothing and is returned here.
    pub async fn begin(&mut self, vol: &Volume, req: PeerRequest) -> Result<()> {
        let reply = vol.begin_peer(req).await?;
        self.pending.push_back(reply);
        if self.durable.is_none() {
            let rx = vol.inner.journal.watch_durable();
            let pushed = rx.borrow().seq;
            self.durable = Some(DurablePush {
                inner: vol.inner.clone(),
                rx,
                pushed,
            });
        }
        Ok(())
    }

    /// The next reply to send: the next request's reply once it is ready, or
    /// a durable position that rose meanwhile. Waits while there is neither.
    /// Cancellation safe.
    pub async fn next(&mut self) -> Result<PeerReply> {
        let Self { pending, durable } = self;
        let push = async {
            match durable {
                Some(d) => d.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(reply) = pending.next(), if !pending.is_empty() => reply,
            push = push => push,
        }
    }

    /// The replies still due to the requests begun so far, in order: what a
    /// transport sends before the refusal that ends the stream.
    pub async fn next_due(&mut self) -> Option<Result<PeerReply>> {
        self.pending.next().await
    }
}

impl Volume {
    /// Check and apply one peer message; the returned future yields the reply
    /// once the effect is durable. Call in message order for one stream.
    #[instrument(skip_all, fields(volume = %self.inner.id, epoch = req.epoch))]
    pub async fn begin_peer(&self, req: PeerRequest) -> Result<ReplyFuture> {
        let inner = &self.inner;
        if req.volume_id != inner.id {
            return Err(EngineError::InvalidField {
                volume: inner.id.clone(),
                field: "volume_id",
                reason: format!("message for {} reached {}", req.volume_id, inner.id),
            });
        }
        let len = req.msg.payload_len();
        if len > inner.config.max_message_bytes {
            return Err(EngineError::MessageTooLarge {
                volume: inner.id.clone(),
                len,
                max: inner.config.max_message_bytes,
            });
        }
        match req.msg {
            PeerMessage::Hello { primary } => {
                let pos = self.hello(req.epoch, &primary).await?;
                Ok(ready(PeerReply::Position(pos)))
            }
            PeerMessage::Append { records } => {
                let last = apply_append(inner, req.epoch, &records)?;
                inner.maybe_checkpoint();
                // In the journal file: acknowledged now, durable once pushed.
                Ok(ready(PeerReply::Ack { seq: last }))
            }
            PeerMessage::ResyncBegin { full } => {
                self.resync_begin(req.epoch, full).await?;
                Ok(ready(PeerReply::Done))
            }
            PeerMessage::Regions { regions } => {
                apply_regions(inner, req.epoch, &regions)?;
                Ok(ready(PeerReply::Done))
            }
            PeerMessage::ResyncDone {
                seq,
                applied_epoch,
                history,
            } => {
                self.resync_done(req.epoch, seq, applied_epoch, history)
                    .await?;
                Ok(ready(PeerReply::Done))
            }
            PeerMessage::TakePrimary { group, last_seq } => {
                self.take_primary(req.epoch, group, last_seq).await?;
                Ok(ready(PeerReply::Done))
            }
            PeerMessage::TakeSnapshot { meta } => {
                self.take_snapshot_at(req.epoch, meta).await?;
                Ok(ready(PeerReply::Done))
            }
        }
    }

    async fn hello(&self, epoch: u64, primary: &str) -> Result<Position> {
        let inner = &self.inner;
        let _g = inner.role_lock.lock().await;
        let changed = {
            let mut st = inner.lock();
            crate::fence::hello(&inner.id, &st, epoch, primary)?;
            let changed = epoch != st.meta.epoch || st.meta.role != Role::Secondary;
            crate::role::step_down(&mut st, epoch, primary);
            changed
        };
        if changed {
            tracing::info!(primary, "following a new primary");
            inner.persist().await?;
        }
        let last = inner.lock().last_seq;
        inner.journal.wait_durable(last).await?;
        let st = inner.lock();
        Ok(Position {
            epoch: st.meta.epoch,
            role: st.meta.role,
            applied_seq: st.last_seq,
            applied_epoch: st.last_epoch,
            applied_incarnation: st.last_incarnation,
            resyncing: st.meta.resyncing,
        })
    }

    async fn resync_begin(&self, epoch: u64, full: bool) -> Result<()> {
        let inner = self.inner.clone();
        let _g = inner.role_lock.lock().await;
        {
            let mut st = inner.lock();
            crate::fence::data_message(&inner.id, &st, epoch)?;
            st.meta.resyncing = true;
        }
        tracing::info!(full, "region copy into this replica starts");
        let last = inner.lock().last_seq;
        inner.journal.wait_durable(last).await?;
        let this = inner.clone();
        tokio::task::spawn_blocking(move || this.checkpoint_blocking())
            .await
            .map_err(|e| {
                EngineError::backend(
                    &inner.id,
                    "checkpoint",
                    std::io::Error::other(e.to_string()),
                )
            })?
    }

    async fn resync_done(
        &self,
        epoch: u64,
        seq: u64,
        applied_epoch: u64,
        history: Vec<Run>,
    ) -> Result<()> {
        let inner = self.inner.clone();
        let _g = inner.role_lock.lock().await;
        {
            let st = inner.lock();
            crate::fence::data_message(&inner.id, &st, epoch)?;
            if !st.meta.resyncing {
                return Err(EngineError::NotResyncing {
                    volume: inner.id.clone(),
                });
            }
        }
        let data = inner.data.clone();
        let synced = tokio::task::spawn_blocking(move || data.sync())
            .await
            .map_err(|e| {
                EngineError::backend(&inner.id, "sync", std::io::Error::other(e.to_string()))
            })?;
        if let Err(e) = synced {
            return Err(inner.fail(&mut inner.lock(), "resync sync", e));
        }
        {
            let mut st = inner.lock();
            st.last_seq = seq;
            let incarnation = term_at(&history, seq).incarnation;
            st.last_epoch = applied_epoch;
            st.last_incarnation = incarnation;
            st.meta.history = history;
            st.meta.checkpoint_seq = seq;
            st.meta.checkpoint_epoch = applied_epoch;
            st.meta.checkpoint_incarnation = incarnation;
            st.meta.resyncing = false;
        }
        // The copy may have lowered the position (a diverged replica): the
        // durable watermark follows it down, so later writes wait for a sync.
        inner.journal.rebase(seq);
        inner.last_seq_tx.send_replace(seq);
        inner.persist().await?;
        tracing::info!(seq, "region copy into this replica complete");
        Ok(())
    }
}

/// Check a batch of writes against every rule, then apply it; nothing changes
/// when a check fails. Returns the last sequence number of the batch.
pub(crate) fn apply_append(inner: &Arc<Inner>, epoch: u64, records: &[WriteRecord]) -> Result<u64> {
    let mut st = inner.lock();
    crate::fence::data_message(&inner.id, &st, epoch)?;
    if st.meta.resyncing {
        return Err(EngineError::ResyncUnfinished {
            volume: inner.id.clone(),
        });
    }
    let Some(first) = records.first() else {
        return Err(EngineError::InvalidField {
            volume: inner.id.clone(),
            field: "records",
            reason: "empty batch".into(),
        });
    };
    if first.seq <= st.last_seq {
        return Err(EngineError::DuplicateSeq {
            volume: inner.id.clone(),
            applied: st.last_seq,
            got: first.seq,
        });
    }
    for (expected, r) in (st.last_seq + 1..).zip(records.iter()) {
        if r.seq != expected {
            return Err(EngineError::SeqGap {
                volume: inner.id.clone(),
                expected,
                got: r.seq,
            });
        }
        if r.epoch > epoch || r.epoch < st.last_epoch.min(epoch) {
            return Err(EngineError::InvalidField {
                volume: inner.id.clone(),
                field: "records.epoch",
                reason: format!(
                    "write {} carries epoch {} outside [{}, {epoch}]",
                    r.seq, r.epoch, st.last_epoch
                ),
            });
        }
        if r.data.is_empty() {
            return Err(EngineError::InvalidField {
                volume: inner.id.clone(),
                field: "records.data",
                reason: format!("write {} is empty", r.seq),
            });
        }
        inner.check_range(r.offset, r.data.len() as u64, st.meta.size_bytes)?;
        if !r.crc_ok() {
            return Err(EngineError::ChecksumMismatch {
                volume: inner.id.clone(),
                seq: r.seq,
            });
        }
    }
    for r in records {
        // The journal first, as on the primary (see `Volume::write`).
        inner.journal.append(r)?;
        if let Err(e) = inner.data.write_at(r.offset, &r.data) {
            return Err(inner.fail(&mut st, "write", e));
        }
        st.last_seq = r.seq;
        st.last_epoch = r.epoch;
        st.last_incarnation = r.incarnation;
        note_history(&mut st.meta.history, r.term(), r.seq);
    }
    let last = st.last_seq;
    drop(st);
    inner.last_seq_tx.send_replace(last);
    Ok(last)
}

fn apply_regions(inner: &Arc<Inner>, epoch: u64, regions: &[Region]) -> Result<()> {
    let mut st = inner.lock();
    crate::fence::data_message(&inner.id, &st, epoch)?;
    if !st.meta.resyncing {
        return Err(EngineError::NotResyncing {
            volume: inner.id.clone(),
        });
    }
    for r in regions {
        inner.check_range(r.offset, r.data.len() as u64, st.meta.size_bytes)?;
        if crc32c::crc32c(&r.data) != r.crc {
            return Err(EngineError::RegionChecksum {
                volume: inner.id.clone(),
                offset: r.offset,
            });
        }
    }
    for r in regions {
        if let Err(e) = inner.data.write_at(r.offset, &r.data) {
            return Err(inner.fail(&mut st, "resync write", e));
        }
    }
    Ok(())
}
