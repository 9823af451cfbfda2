//! Replication on the primary: which secondaries hold what, and what a write
//! waits for.
//!
//! Each secondary is a [`MemberTrack`]: either `Streaming` (it gets every
//! write in order from the in-memory cache through its [`sender`] task,
//! acknowledges each batch once its journal file holds it, and pushes its
//! durable position as its disk catches up) or `Tracking` (unreachable,
//! refused, new, or resyncing: writes mark its dirty-region map instead, see
//! [`crate::resync`]).
//!
//! A write in a Sync group waits until every member of the in-sync set holds
//! it ([`Holds::Received`]); a flush, and a write with FUA, until it is on
//! every such member's disk ([`Holds::Durable`]). So no write waits for a
//! secondary's fdatasync, and a flush waits at most for what is still
//! unsynced there: DRBD's protocol C. The cache keeps a write until every
//! streaming member has it on its disk, so a member that comes back from a
//! power cut with less than it acknowledged gets the rest from the cache. When
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
use crate::cache::memory::WriteCache;
use crate::directory::DirectoryError;
use crate::error::{EngineError, RefusalCode, Result};
use crate::resync::DirtyMap;
use crate::types::{
    FailurePolicy, MemberSpec, MemberState, MemberStatus, REGION_SIZE, Role, SyncLevel,
    TransferType, WriteRecord,
};
use crate::volume::{Inner, State};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The member holds every write up to `acked` (in its journal file) and
    /// has every write up to `durable` on its disk.
    Streaming {
        acked: u64,
        durable: u64,
    },
    Tracking,
}

/// How far a member must hold a write before the writer goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holds {
    /// In the member's replica: it survives a crash of the member's process.
    Received,
    /// On the member's disk: it survives the member's power loss too.
    Durable,
}

/// What writers watch about one member.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    pub acked: u64,
    /// Every write up to here is on the member's disk.
    pub durable: u64,
    pub streaming: bool,
    /// False once the member is durably recorded out of sync: writes stop
    /// waiting for it from then on.
    pub in_sync: bool,
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
    /// In the group's in-sync set: Sync writes, flushes and the Async lag
    /// bound wait for this member whether it streams or not. Leaves the set
    /// only once recorded out of sync ([`record_out_of_sync`]); rejoins only
    /// after a resync proven complete.
    pub in_sync: bool,
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
    pub fn tracking(spec: MemberSpec, dirty: DirtyMap, in_sync: bool) -> Self {
        let (progress, _) = watch::channel(Progress {
            in_sync,
            ..Default::default()
        });
        Self {
            spec,
            mode: Mode::Tracking,
            dirty,
            inflight: DirtyMap::default(),
            progress,
            in_sync,
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

    /// The member holds every write up to `acked` on its disk (its reported
    /// position, or a region copy it confirmed) and streams from there: it
    /// is (again) in the in-sync set, and what it lacks from now on is
    /// counted from `acked`.
    pub fn set_streaming(&mut self, acked: u64) {
        self.mode = Mode::Streaming {
            acked,
            durable: acked,
        };
        self.dirty = DirtyMap::new(acked);
        self.in_sync = true;
        self.progress.send_modify(|p| {
            p.acked = p.acked.max(acked);
            p.durable = p.durable.max(acked);
            p.streaming = true;
            p.in_sync = true;
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

/// Whether a write (not FUA) waits for the in-sync set: in a Sync group at
/// [`SyncLevel::Write`]. At [`SyncLevel::Flush`] it is queued to every
/// member (the cache, or a dirty map) and only a flush waits.
fn writes_wait(st: &State) -> bool {
    st.meta
        .group
        .as_ref()
        .is_some_and(|g| g.transfer_type == TransferType::Sync && g.sync_level == SyncLevel::Write)
}

/// Under the state lock, after a write is accepted: cache it for streaming
/// members, mark it for the others, and return what the writer must wait
/// for: every member of the in-sync set, streaming or not, when writes wait
/// ([`writes_wait`]) or the write is FUA. A FUA write waits for
/// [`Holds::Durable`], any other for [`Holds::Received`].
pub(crate) fn enqueue(
    st: &mut State,
    rec: WriteRecord,
    fua: bool,
) -> Vec<(String, watch::Receiver<Progress>)> {
    let wait = fua || writes_wait(st);
    let mut any_streaming = false;
    let mut waits = Vec::new();
    for (dc, m) in st.members.iter_mut() {
        match m.mode {
            Mode::Streaming { .. } => any_streaming = true,
            Mode::Tracking => m.dirty.mark(rec.offset, rec.data.len() as u64),
        }
        if m.in_sync && wait {
            waits.push((dc.clone(), m.progress.subscribe()));
        }
    }
    if any_streaming {
        st.cache.push(rec);
    }
    waits
}

/// What a flush waits for: every member of a Sync group's in-sync set.
pub(crate) fn flush_waits(st: &State) -> Vec<(String, watch::Receiver<Progress>)> {
    if policy(st).0 != TransferType::Sync {
        return Vec::new();
    }
    st.members
        .iter()
        .filter(|(_, m)| m.in_sync)
        .map(|(dc, m)| (dc.clone(), m.progress.subscribe()))
        .collect()
}

/// Every member with its endpoint, and the progress of those streaming
/// (None: tracking, so it lacks writes and cannot take a snapshot now).
pub(crate) fn streaming_members(
    st: &State,
) -> Vec<(String, String, Option<watch::Receiver<Progress>>)> {
    st.members
        .iter()
        .map(|(dc, m)| {
            let progress = matches!(m.mode, Mode::Streaming { .. }).then(|| m.progress.subscribe());
            (dc.clone(), m.spec.endpoint.clone(), progress)
        })
        .collect()
}

impl Progress {
    pub fn holds(&self, seq: u64, holds: Holds) -> bool {
        match holds {
            Holds::Received => self.acked >= seq,
            Holds::Durable => self.durable >= seq,
        }
    }
}

/// Wait until every member in `waits` holds `seq` (accepted at `epoch`) as
/// far as `holds` asks, applying the failure policy: `Block` fails the write
/// when a member does not hold it in time; `Degrade` records the member out
/// of sync (durably, before going on) and completes. Cancellation safe.
pub(crate) async fn wait_acks(
    inner: &Arc<Inner>,
    epoch: u64,
    seq: u64,
    holds: Holds,
    waits: Vec<(String, watch::Receiver<Progress>)>,
) -> Result<()> {
    for (dc, mut rx) in waits {
        let outcome = tokio::time::timeout(
            inner.config.ack_timeout,
            rx.wait_for(|p| {
                p.holds(seq, holds) || p.refused.as_ref().is_some_and(ends_wait) || !p.in_sync
            }),
        )
        .await
        .map(|r| r.map(|p| p.clone()));
        let failure = match outcome {
            Ok(Ok(p)) if p.holds(seq, holds) => continue,
            Ok(Ok(Progress {
                refused: Some(r), ..
            })) if r.code == RefusalCode::StaleEpoch => {
                return Err(supersede(inner, &dc, epoch, seq, &r.message));
            }
            Ok(Ok(Progress {
                refused: Some(r), ..
            })) if ends_wait(&r) => EngineError::SecondaryRefused {
                volume: inner.id.clone(),
                member: dc.clone(),
                seq,
                reason: r.message,
            },
            // Recorded out of sync while the write waited (Degrade).
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
            let st = inner.lock();
            check_current_locked(inner, &st, epoch)?;
            if policy(&st).1 != FailurePolicy::Degrade {
                return Err(failure);
            }
        }
        record_out_of_sync(inner, &dc, epoch, &failure.to_string()).await?;
        tracing::warn!(volume = %inner.id, member = %dc, error = %failure, "secondary recorded out of sync");
    }
    Ok(())
}

/// A refusal that fails a waiting write at once. A member whose replica is
/// not there yet (`NotFound`: being created) or that is restarting
/// (`Unavailable`) may still hold the write in time: keep waiting.
fn ends_wait(r: &Refusal) -> bool {
    !matches!(r.code, RefusalCode::NotFound | RefusalCode::Unavailable)
}

/// Take `dc` out of the in-sync set: it stops streaming, and writes stop
/// waiting for it only once the record is durable: in the directory first
/// (when one is attached; unreachable, the write fails), then in the
/// replica's metadata. Two writers giving up on one member wait for the
/// same record.
pub(crate) async fn record_out_of_sync(
    inner: &Arc<Inner>,
    dc: &str,
    epoch: u64,
    reason: &str,
) -> Result<()> {
    let _g = inner.in_sync_lock.lock().await;
    {
        let mut st = inner.lock();
        check_current_locked(inner, &st, epoch)?;
        to_tracking(&mut st, dc, reason);
        match st.members.get_mut(dc) {
            Some(m) if m.in_sync => m.in_sync = false,
            // Recorded already (under this lock), or gone.
            _ => return Ok(()),
        }
    }
    let revert = |e: EngineError| {
        if let Some(m) = inner.lock().members.get_mut(dc) {
            m.in_sync = true;
        }
        e
    };
    let directory = inner
        .directory
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(d) = directory {
        match d.record_out_of_sync(&inner.id, epoch, dc).await {
            Ok(()) => {}
            Err(source @ DirectoryError::Superseded { .. }) => {
                let mut st = inner.lock();
                st.fenced = true;
                st.superseded = true;
                drop(st);
                return Err(revert(EngineError::Directory {
                    volume: inner.id.clone(),
                    source,
                }));
            }
            Err(source) => {
                return Err(revert(EngineError::Directory {
                    volume: inner.id.clone(),
                    source,
                }));
            }
        }
    }
    if let Err(e) = inner.persist().await {
        return Err(revert(e));
    }
    if let Some(m) = inner.lock().members.get(dc) {
        m.progress.send_modify(|p| p.in_sync = false);
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
    crate::fence::still_primary(&inner.id, st, epoch)
}

/// Turn a streaming member to tracking: what it lacks goes to its dirty
/// map. It stays in the in-sync set (see [`record_out_of_sync`]).
pub(crate) fn to_tracking(st: &mut State, dc: &str, reason: &str) {
    let State { members, cache, .. } = st;
    let Some(m) = members.get_mut(dc) else { return };
    if let Mode::Streaming { durable, .. } = m.mode {
        // It has every write up to `durable` on its disk and may lack what
        // the cache holds past it (its dirty map is empty while it streams):
        // what it acknowledged beyond is lost if it loses power meanwhile.
        let map = streaming_lacks(cache, durable);
        if m.dirty.is_empty() {
            // `since` rises to what it holds: a member that comes back with
            // less (emptied, re-created) is then told apart and copied in full.
            m.dirty = map;
        } else {
            m.dirty.merge(&map);
        }
        m.mode = Mode::Tracking;
        m.message = reason.to_string();
        m.progress.send_modify(|p| p.streaming = false);
    }
    trim_cache(st);
}

/// What a streaming member with every write up to `durable` on its disk
/// may lack: the regions of the cached writes past it.
fn streaming_lacks(cache: &WriteCache, durable: u64) -> DirtyMap {
    let mut map = DirtyMap::new(durable);
    for r in cache.after(durable) {
        map.mark(r.offset, r.data.len() as u64);
    }
    map
}

/// Drop cached writes every streaming member has on its disk.
pub(crate) fn trim_cache(st: &mut State) {
    let min = st
        .members
        .values()
        .filter_map(|m| match m.mode {
            Mode::Streaming { durable, .. } => Some(durable),
            Mode::Tracking => None,
        })
        .min();
    match min {
        Some(durable) => st.cache.pop_through(durable),
        None => st.cache.clear(),
    }
}

/// Back-pressure before a write is accepted: wait while a member of the
/// in-sync set lags past the group's Async bound (a streaming member by
/// what the cache holds past its position, any other by its dirty regions)
/// or the cache passes its memory limit. When the wait runs out, `Degrade`
/// records the member out of sync and goes on; `Block` fails the write.
pub(crate) async fn wait_for_room(inner: &Arc<Inner>, epoch: Option<u64>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + inner.config.ack_timeout;
    loop {
        let over = {
            let st = inner.lock();
            crate::fence::primary(&inner.id, &st, epoch)?;
            over_bound(inner, &st).map(|(dc, rx)| (dc, rx, st.meta.epoch))
        };
        let Some((dc, mut rx, held_epoch)) = over else {
            return Ok(());
        };
        let changed = tokio::time::timeout_at(deadline, rx.changed()).await;
        if changed.is_err() {
            if policy(&inner.lock()).1 == FailurePolicy::Degrade {
                record_out_of_sync(inner, &dc, held_epoch, "lag bound exceeded").await?;
                continue;
            }
            let st = inner.lock();
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
    let bounded = group.transfer_type == TransferType::Async && group.max_lag_bytes > 0;
    for (dc, m) in &st.members {
        let Mode::Streaming { durable, .. } = m.mode else {
            let lacks = (m.dirty.regions() + m.inflight.regions()) * REGION_SIZE;
            if m.in_sync && bounded && lacks > group.max_lag_bytes {
                return Some((dc.clone(), m.progress.subscribe()));
            }
            continue;
        };
        // Lag counts to the member's disk: what a power cut there could take.
        let (bytes, secs) = st.cache.lag_after(durable);
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
                // Counted to its disk: what it holds for sure.
                Mode::Streaming { durable, .. } => {
                    let (b, s) = st.cache.lag_after(durable);
                    let state = if !m.in_sync || !m.inflight.is_empty() {
                        // Streaming, but its copy is not confirmed yet.
                        MemberState::Resyncing
                    } else if !m.connected && b > 0 {
                        MemberState::Unreachable
                    } else if b == 0 {
                        MemberState::InSync
                    } else {
                        MemberState::Lagging
                    };
                    (state, b, s, durable)
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
                in_sync: m.in_sync,
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
            if let Mode::Streaming { durable, .. } = m.mode {
                map = streaming_lacks(&st.cache, durable);
            }
            let mut p = map.to_persisted();
            p.out_of_sync = !m.in_sync;
            (dc.clone(), p)
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
            let (mut map, in_sync) = match meta.dirty.iter().find(|(dc, _)| *dc == spec.data_center)
            {
                Some((_, p)) => (DirtyMap::from_persisted(p, size), !p.out_of_sync),
                None => (DirtyMap::full(size), false),
            };
            for r in replayed {
                map.mark(r.offset, r.data.len() as u64);
            }
            (
                spec.data_center.clone(),
                MemberTrack::tracking(spec.clone(), map, in_sync),
            )
        })
        .collect()
}

/// Start a sender for every member that has none, and the lease renewal
/// when a directory is attached (primary only).
pub(crate) fn start_senders(inner: &Arc<Inner>) {
    start_lease(inner);
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

/// Renew the primary's lease through the directory while this replica is
/// primary: every third of the lease, or soon after a failure. The lease is
/// counted from the moment of the request.
fn start_lease(inner: &Arc<Inner>) {
    let Some(directory) = inner
        .directory
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
    else {
        return;
    };
    let mut task = inner.lease_task.lock().unwrap_or_else(|e| e.into_inner());
    let (epoch, me) = {
        let st = inner.lock();
        if st.meta.role != Role::Primary || st.closed {
            return;
        }
        (st.meta.epoch, st.meta.data_center.clone())
    };
    if let Some((renewing, t)) = task.as_ref() {
        if *renewing == epoch && !t.is_finished() {
            return;
        }
        t.abort();
    }
    let this = inner.clone();
    let handle = tokio::spawn(async move {
        const RETRY: std::time::Duration = std::time::Duration::from_millis(100);
        loop {
            {
                let st = this.lock();
                if st.meta.role != Role::Primary || st.meta.epoch != epoch || st.closed {
                    return;
                }
            }
            let asked = std::time::Instant::now();
            let wait = match directory.renew_lease(&this.id, epoch, &me).await {
                Ok(granted) => {
                    let mut st = this.lock();
                    if st.meta.epoch == epoch {
                        st.lease_until = Some(asked + granted);
                    }
                    (granted / 3).max(RETRY)
                }
                Err(DirectoryError::Superseded { held, .. }) => {
                    let mut st = this.lock();
                    st.fenced = true;
                    st.superseded = true;
                    tracing::warn!(volume = %this.id, held, "the directory holds a newer epoch; fenced");
                    return;
                }
                Err(e) => {
                    tracing::warn!(volume = %this.id, error = %e, "lease renewal failed");
                    RETRY
                }
            };
            tokio::time::sleep(wait).await;
        }
    });
    *task = Some((epoch, handle.abort_handle()));
}

/// A member rejoined the in-sync set: tell the directory too. Best effort:
/// until the directory knows, failover does not pick the member, which
/// only errs on the side of safety; writes wait for it either way.
pub(crate) async fn note_rejoined(inner: &Arc<Inner>, dc: &str) {
    let directory = inner
        .directory
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let epoch = inner.lock().meta.epoch;
    if let Some(d) = directory
        && let Err(e) = d.record_in_sync(&inner.id, epoch, dc).await
    {
        tracing::warn!(volume = %inner.id, member = dc, error = %e, "directory did not record the member in sync");
    }
}
