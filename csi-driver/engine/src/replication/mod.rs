//! Replication on the primary: which secondaries hold what, and what a write
//! waits for.
//!
//! Each secondary is a [`MemberTrack`]: either `Streaming` (it gets every
//! write in order from the in-memory cache through its [`sender`] task and
//! acknowledges up to a sequence number) or `Tracking` (unreachable, refused,
//! new, or resyncing: writes mark its dirty-region map instead, see
//! [`crate::resync`]).
//!
//! A write in a Sync group (or with FUA) waits until every member that was
//! streaming when it was accepted (the in-sync members) acknowledges it. When
//! one does not in time, or refuses it (no space), the group's failure policy
//! decides: `Block` fails the write, `Degrade` turns the member to `Tracking`
//! and lets the write complete. Under `Block` a member that stops streaming
//! while the write waits is still required: the write completes only once the
//! member holds it again (its region copy covers it) or fails on the timeout.
//!
//! Whatever the policy, a write is never acknowledged by default when this
//! replica was superseded while it waited: a member refusing at a newer epoch
//! fences this primary and fails the write, and a member that disappears
//! because this replica stepped down (or changed epoch) fails it too. Both
//! mean another primary exists that may not hold the write. Before a write is
//! accepted, [`wait_for_room`] applies back-pressure while a member's lag
//! passes the Async bound or the cache passes its memory limit.

pub mod sender;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::backend::{PersistedDirtyMap, VolumeMeta};
use crate::error::{EngineError, RefusalCode, Result};
use crate::resync::DirtyMap;
use crate::types::{
    FailurePolicy, MemberSpec, MemberState, MemberStatus, REGION_SIZE, Role, TransferType,
    WriteRecord,
};
use crate::volume::{Inner, State};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Streaming { acked: u64 },
    Tracking,
}

/// What writers watch about one member.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    pub acked: u64,
    pub streaming: bool,
    /// Set when the member refused a write or hand-shake; cleared by its next ack.
    pub refused: Option<Refusal>,
}

/// Why a member refused, as its peer reported it.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub code: RefusalCode,
    pub message: String,
}

pub(crate) struct MemberTrack {
    pub spec: MemberSpec,
    pub mode: Mode,
    pub dirty: DirtyMap,
    /// Regions sent in an unfinished region copy.
    pub inflight: DirtyMap,
    pub progress: watch::Sender<Progress>,
    pub task: Option<AbortHandle>,
    pub connected: bool,
    /// Last position the member reported.
    pub reported_seq: u64,
    pub message: String,
    /// Bytes of region data copied to this member (resyncs and full copies)
    /// since this replica became its primary.
    pub resync_bytes: u64,
}

impl MemberTrack {
    pub fn tracking(spec: MemberSpec, dirty: DirtyMap) -> Self {
        let (progress, _) = watch::channel(Progress::default());
        Self {
            spec,
            mode: Mode::Tracking,
            dirty,
            inflight: DirtyMap::default(),
            progress,
            task: None,
            connected: false,
            reported_seq: 0,
            message: String::new(),
            resync_bytes: 0,
        }
    }

    pub fn stop(self) {
        if let Some(t) = self.task {
            t.abort();
        }
    }

    pub fn set_streaming(&mut self, acked: u64) {
        self.mode = Mode::Streaming { acked };
        self.progress.send_modify(|p| {
            p.acked = acked;
            p.streaming = true;
        });
    }
}

pub(crate) fn policy(st: &State) -> (TransferType, FailurePolicy) {
    st.meta
        .group
        .as_ref()
        .map(|g| (g.transfer_type, g.failure_policy))
        .unwrap_or_default()
}

/// Under the state lock, after a write is accepted: cache it for streaming
/// members, mark it for the others, and return what the writer must wait for.
pub(crate) fn enqueue(
    st: &mut State,
    rec: WriteRecord,
    fua: bool,
) -> Vec<(String, watch::Receiver<Progress>)> {
    let (transfer, _) = policy(st);
    let mut any_streaming = false;
    let mut waits = Vec::new();
    for (dc, m) in st.members.iter_mut() {
        match m.mode {
            Mode::Streaming { .. } => {
                any_streaming = true;
                if transfer == TransferType::Sync || fua {
                    waits.push((dc.clone(), m.progress.subscribe()));
                }
            }
            Mode::Tracking => m.dirty.mark(rec.offset, rec.data.len() as u64),
        }
    }
    if any_streaming {
        st.cache.push(rec);
    }
    waits
}

/// What a flush waits for: every streaming member of a Sync group.
pub(crate) fn flush_waits(st: &State) -> Vec<(String, watch::Receiver<Progress>)> {
    if policy(st).0 != TransferType::Sync {
        return Vec::new();
    }
    st.members
        .iter()
        .filter(|(_, m)| matches!(m.mode, Mode::Streaming { .. }))
        .map(|(dc, m)| (dc.clone(), m.progress.subscribe()))
        .collect()
}

/// Wait until every member in `waits` holds `seq` (accepted at `epoch`),
/// applying the failure policy. Cancellation safe.
pub(crate) async fn wait_acks(
    inner: &Arc<Inner>,
    epoch: u64,
    seq: u64,
    waits: Vec<(String, watch::Receiver<Progress>)>,
) -> Result<()> {
    let block = policy(&inner.lock()).1 == FailurePolicy::Block;
    for (dc, mut rx) in waits {
        // Under Block a member that stopped streaming is still owed the write:
        // keep waiting for its region copy to cover it (or the timeout).
        let outcome = tokio::time::timeout(
            inner.config.ack_timeout,
            rx.wait_for(|p| p.acked >= seq || p.refused.is_some() || (!block && !p.streaming)),
        )
        .await
        .map(|r| r.map(|p| p.clone()));
        let failure = match outcome {
            Ok(Ok(p)) if p.acked >= seq => continue,
            Ok(Ok(Progress {
                refused: Some(r), ..
            })) if r.code == RefusalCode::StaleEpoch => {
                return Err(supersede(inner, &dc, epoch, seq, &r.message));
            }
            Ok(Ok(Progress {
                refused: Some(r), ..
            })) => EngineError::SecondaryRefused {
                volume: inner.id.clone(),
                member: dc.clone(),
                seq,
                reason: r.message,
            },
            // Degrade: the member was marked out of sync while the write waited.
            Ok(Ok(_)) => {
                check_current(inner, epoch)?;
                continue;
            }
            // The member is gone: fine when it left the group at this epoch,
            // not when this replica stepped down or changed epoch meanwhile.
            Ok(Err(_)) => {
                check_current(inner, epoch)?;
                continue;
            }
            Err(_) => EngineError::ReplicateTimeout {
                volume: inner.id.clone(),
                member: dc.clone(),
                seq,
            },
        };
        {
            let mut st = inner.lock();
            check_current_locked(inner, &st, epoch)?;
            if policy(&st).1 != FailurePolicy::Degrade {
                return Err(failure);
            }
            degrade(&mut st, &dc, &failure.to_string());
        }
        tracing::warn!(volume = %inner.id, member = %dc, error = %failure, "secondary marked out of sync");
    }
    Ok(())
}

/// A member refused at a newer epoch: another primary exists. Fence this
/// one (no new writes) and fail the write whatever the policy.
fn supersede(inner: &Inner, dc: &str, epoch: u64, seq: u64, message: &str) -> EngineError {
    let mut st = inner.lock();
    st.fenced = true;
    st.superseded = true;
    tracing::warn!(volume = %inner.id, member = dc, seq, "write refused at a newer epoch; fenced");
    EngineError::Fenced {
        volume: inner.id.clone(),
        reason: format!(
            "member {dc} holds an epoch newer than {epoch} ({message}); write {seq} is not acknowledged"
        ),
    }
}

/// Fails unless this replica is still the unsuperseded primary at `epoch`.
fn check_current(inner: &Inner, epoch: u64) -> Result<()> {
    check_current_locked(inner, &inner.lock(), epoch)
}

fn check_current_locked(inner: &Inner, st: &State, epoch: u64) -> Result<()> {
    if st.closed {
        return Err(EngineError::Closed {
            volume: inner.id.clone(),
        });
    }
    if st.meta.epoch != epoch {
        return Err(EngineError::StaleEpoch {
            volume: inner.id.clone(),
            held: st.meta.epoch,
            got: epoch,
        });
    }
    if st.meta.role != Role::Primary {
        return Err(EngineError::NotPrimary {
            volume: inner.id.clone(),
            role: st.meta.role,
        });
    }
    if st.superseded {
        return Err(EngineError::Fenced {
            volume: inner.id.clone(),
            reason: "a member holds a newer epoch".into(),
        });
    }
    Ok(())
}

/// Turn a streaming member to tracking: what it lacks goes to its dirty map.
pub(crate) fn degrade(st: &mut State, dc: &str, reason: &str) {
    let State { members, cache, .. } = st;
    let Some(m) = members.get_mut(dc) else { return };
    if let Mode::Streaming { acked } = m.mode {
        let mut map = DirtyMap::new(acked);
        for r in cache.after(acked) {
            map.mark(r.offset, r.data.len() as u64);
        }
        m.dirty.merge(&map);
        m.dirty.since_seq = m.dirty.since_seq.min(acked);
        m.mode = Mode::Tracking;
        m.message = reason.to_string();
        m.progress.send_modify(|p| p.streaming = false);
    }
    trim_cache(st);
}

/// Drop cached writes every streaming member holds.
pub(crate) fn trim_cache(st: &mut State) {
    let min = st
        .members
        .values()
        .filter_map(|m| match m.mode {
            Mode::Streaming { acked } => Some(acked),
            Mode::Tracking => None,
        })
        .min();
    match min {
        Some(acked) => st.cache.pop_through(acked),
        None => st.cache.clear(),
    }
}

/// Back-pressure before a write is accepted: wait while a streaming member's
/// lag passes the group's bound or the cache its memory limit, and — in a
/// Sync group with the Block policy — while a member believed in sync is not
/// streaming yet.
pub(crate) async fn wait_for_room(inner: &Arc<Inner>, epoch: Option<u64>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + inner.config.ack_timeout;
    loop {
        let over = {
            let st = inner.lock();
            crate::volume::check_primary_epoch(inner, &st, epoch)?;
            over_bound(inner, &st)
        };
        let Some((dc, mut rx)) = over else {
            return Ok(());
        };
        let changed = tokio::time::timeout_at(deadline, rx.changed()).await;
        if changed.is_err() {
            let mut st = inner.lock();
            if policy(&st).1 == FailurePolicy::Degrade {
                degrade(&mut st, &dc, "lag bound exceeded");
                continue;
            }
            let seq = st.last_seq + 1;
            return Err(EngineError::ReplicateTimeout {
                volume: inner.id.clone(),
                member: dc,
                seq,
            });
        }
    }
}

fn over_bound(inner: &Inner, st: &State) -> Option<(String, watch::Receiver<Progress>)> {
    let group = st.meta.group.as_ref()?;
    let cache_full = st.cache.bytes() > inner.config.cache_limit_bytes;
    let strict =
        group.transfer_type == TransferType::Sync && group.failure_policy == FailurePolicy::Block;
    for (dc, m) in &st.members {
        let Mode::Streaming { acked } = m.mode else {
            // Sync + Block: a member believed in sync (nothing to copy) but
            // not yet streaming (hand-shake pending, or unreachable since a
            // restart or a change of primary) holds writes back.
            if strict && m.dirty.is_empty() && m.inflight.is_empty() {
                return Some((dc.clone(), m.progress.subscribe()));
            }
            continue;
        };
        let (bytes, secs) = st.cache.lag_after(acked);
        let over_bytes = group.transfer_type == TransferType::Async
            && group.max_lag_bytes > 0
            && bytes > group.max_lag_bytes;
        let over_secs = group.transfer_type == TransferType::Async
            && group.max_lag_seconds > 0
            && secs > group.max_lag_seconds as f64;
        if over_bytes || over_secs || (cache_full && bytes > 0) {
            return Some((dc.clone(), m.progress.subscribe()));
        }
    }
    None
}

pub(crate) fn member_statuses(st: &State) -> Vec<MemberStatus> {
    st.members
        .iter()
        .map(|(dc, m)| {
            let (state, lag_bytes, lag_seconds, applied) = match m.mode {
                Mode::Streaming { acked } => {
                    let (b, s) = st.cache.lag_after(acked);
                    let state = if !m.connected && b > 0 {
                        MemberState::Unreachable
                    } else if b == 0 {
                        MemberState::InSync
                    } else {
                        MemberState::Lagging
                    };
                    (state, b, s, acked)
                }
                Mode::Tracking => {
                    let regions = m.dirty.regions() + m.inflight.regions();
                    let state = if m.connected {
                        MemberState::Resyncing
                    } else {
                        MemberState::Unreachable
                    };
                    (state, regions * REGION_SIZE, 0.0, m.reported_seq)
                }
            };
            MemberStatus {
                data_center: dc.clone(),
                state,
                lag_bytes,
                lag_seconds,
                applied_seq: applied,
                message: m.message.clone(),
                resync_bytes: m.resync_bytes,
            }
        })
        .collect()
}

/// The dirty maps to persist: for each member, every region it may lack.
pub(crate) fn persisted_maps(st: &State) -> Vec<(String, PersistedDirtyMap)> {
    if st.meta.role != Role::Primary {
        return Vec::new();
    }
    st.members
        .iter()
        .map(|(dc, m)| {
            let mut map = m.dirty.clone();
            map.merge(&m.inflight);
            if let Mode::Streaming { acked } = m.mode {
                map = DirtyMap::new(acked);
                for r in st.cache.after(acked) {
                    map.mark(r.offset, r.data.len() as u64);
                }
            }
            (dc.clone(), map.to_persisted())
        })
        .collect()
}

/// After a restart of the primary: every member starts tracking, with the
/// persisted map plus whatever the journal replayed.
pub(crate) fn restore_members(
    meta: &VolumeMeta,
    replayed: &[WriteRecord],
    size: u64,
) -> BTreeMap<String, MemberTrack> {
    let Some(group) = &meta.group else {
        return BTreeMap::new();
    };
    group
        .members
        .iter()
        .filter(|m| m.data_center != meta.data_center)
        .map(|spec| {
            let mut map = match meta.dirty.iter().find(|(dc, _)| *dc == spec.data_center) {
                Some((_, p)) => DirtyMap::from_persisted(p, size),
                None => DirtyMap::full(size),
            };
            for r in replayed {
                map.mark(r.offset, r.data.len() as u64);
            }
            (
                spec.data_center.clone(),
                MemberTrack::tracking(spec.clone(), map),
            )
        })
        .collect()
}

/// Start a sender for every member that has none (primary only).
pub(crate) fn start_senders(inner: &Arc<Inner>) {
    let mut st = inner.lock();
    if st.meta.role != Role::Primary || st.closed {
        return;
    }
    let epoch = st.meta.epoch;
    for (dc, m) in st.members.iter_mut() {
        if m.task.is_none() {
            let handle = tokio::spawn(sender::run(inner.clone(), dc.clone(), epoch));
            m.task = Some(handle.abort_handle());
        }
    }
}
