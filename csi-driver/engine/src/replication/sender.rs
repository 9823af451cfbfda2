//! The write-data sender (claims 17, 21): one task per secondary on the
//! primary. It connects, asks where the secondary stands, and then either
//! streams writes from the cache in order or first copies the regions the
//! secondary lacks (see [`crate::resync`]).
//!
//! Expected flow of a session: open a link -> `Hello` (the secondary adopts
//! the epoch and answers its position) -> decide (stream from its position,
//! copy dirty regions, or copy everything when its history diverged) ->
//! stream: up to `window` batches in flight, each acknowledgement advances the
//! member's acked position and frees the cache.
//!
//! A failed session is retried with exponential backoff (capped by
//! `max_backoff`). The task is aborted when this replica stops being primary
//! or the member leaves the group; aborting loses nothing because the
//! member's state is rebuilt by the next hand-shake.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::{Mode, policy, to_tracking, trim_cache};
use crate::error::{EngineError, RefusalCode, Result, TransportError};
use crate::receive::history_ok;
use crate::resync::DirtyMap;
use crate::transport::{PeerLink, PeerMessage, PeerReply, PeerRequest, Region};
use crate::types::{FailurePolicy, Position, REGION_SIZE, Role};
use crate::volume::Inner;

enum Flow {
    /// No longer primary at this epoch, or the member left: end the task.
    Stop,
    /// Start a new session at once (the member's mode changed under us).
    Restart,
}

pub(crate) async fn run(inner: Arc<Inner>, dc: String, epoch: u64) {
    let span = tracing::info_span!("sender", volume = %inner.id, member = %dc, epoch);
    async move {
        const FIRST_BACKOFF: Duration = Duration::from_millis(20);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = std::time::Instant::now();
            match session(&inner, &dc, epoch).await {
                Ok(Flow::Stop) => return,
                Ok(Flow::Restart) => continue,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "replication session ended");
                    on_session_error(&inner, &dc, &e);
                }
            }
            if started.elapsed() > Duration::from_secs(5) {
                // A session that lasted was healthy: retry soon.
                backoff = FIRST_BACKOFF;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(inner.config.max_backoff);
        }
    }
    .instrument(span)
    .await
}

fn on_session_error(inner: &Inner, dc: &str, e: &EngineError) {
    let mut st = inner.lock();
    let refused = match e {
        EngineError::Transport {
            source: TransportError::Refused { code, message, .. },
            ..
        } => Some((*code, message.clone())),
        _ => None,
    };
    if let Some((RefusalCode::StaleEpoch, _)) = &refused {
        // A peer holds a newer epoch: another primary exists. Stop taking writes.
        tracing::warn!(volume = %inner.id, member = dc, "peer holds a newer epoch; fencing this primary");
        st.fenced = true;
        st.superseded = true;
    }
    let degrade_it = policy(&st).1 == FailurePolicy::Degrade;
    let Some(m) = st.members.get_mut(dc) else {
        return;
    };
    m.connected = false;
    m.message = e.to_string();
    if let Some((code, message)) = refused {
        m.progress
            .send_modify(|p| p.refused = Some(super::Refusal { code, message }));
    }
    if degrade_it {
        to_tracking(&mut st, dc, &e.to_string());
    }
}

fn transport_err(inner: &Inner, endpoint: &str, source: TransportError) -> EngineError {
    EngineError::Transport {
        volume: inner.id.clone(),
        peer: endpoint.to_string(),
        source,
    }
}

/// The link closed under us.
fn stream_closed(inner: &Inner, endpoint: &str) -> EngineError {
    transport_err(
        inner,
        endpoint,
        TransportError::StreamClosed {
            endpoint: endpoint.into(),
        },
    )
}

/// Send a request on the link. When the peer has ended the stream, the
/// error is the one its last reply gave (a refusal, a failed disk), not a
/// bare "closed": durable positions are pushed between replies, so a peer
/// can end the stream while requests are still on their way.
async fn send(inner: &Inner, endpoint: &str, link: &mut PeerLink, req: PeerRequest) -> Result<()> {
    if link.tx.send(req).await.is_ok() {
        return Ok(());
    }
    while let Ok(reply) = link.rx.try_recv() {
        if let Err(e) = reply {
            return Err(transport_err(inner, endpoint, e));
        }
    }
    Err(stream_closed(inner, endpoint))
}

/// How long a sent request may wait for its reply before the link counts as dead.
fn reply_timeout(inner: &Inner) -> Duration {
    (inner.config.ack_timeout * 3).max(Duration::from_secs(5))
}

/// The next reply to a request on the link, passing over the durable
/// positions pushed meanwhile: outside [`stream`], a member's position is
/// what its replies (Hello, ResyncDone) confirm.
async fn next_answer(
    inner: &Inner,
    endpoint: &str,
    link: &mut PeerLink,
) -> Option<Result<PeerReply, TransportError>> {
    loop {
        match next_reply(inner, endpoint, link).await {
            Some(Ok(PeerReply::Durable { .. })) => continue,
            other => return other,
        }
    }
}

/// The next reply on the link; a peer that stays silent too long counts as gone.
async fn next_reply(
    inner: &Inner,
    endpoint: &str,
    link: &mut PeerLink,
) -> Option<Result<PeerReply, TransportError>> {
    match tokio::time::timeout(reply_timeout(inner), link.rx.recv()).await {
        Ok(r) => r,
        Err(_) => Some(Err(TransportError::Connect {
            endpoint: endpoint.into(),
            reason: "no reply in time".into(),
        })),
    }
}

/// One request and its reply on the link (nothing else in flight).
async fn request(
    inner: &Inner,
    endpoint: &str,
    link: &mut PeerLink,
    epoch: u64,
    msg: PeerMessage,
) -> Result<PeerReply> {
    let req = PeerRequest {
        volume_id: inner.id.clone(),
        epoch,
        msg,
    };
    send(inner, endpoint, link, req).await?;
    match next_answer(inner, endpoint, link).await {
        None => Err(stream_closed(inner, endpoint)),
        Some(r) => r.map_err(|e| transport_err(inner, endpoint, e)),
    }
}

enum Plan {
    Stream(u64),
    Resync { full: bool },
}

async fn session(inner: &Arc<Inner>, dc: &str, epoch: u64) -> Result<Flow> {
    let (endpoint, from) = {
        let st = inner.lock();
        if st.meta.role != Role::Primary || st.meta.epoch != epoch || st.closed {
            return Ok(Flow::Stop);
        }
        let Some(m) = st.members.get(dc) else {
            return Ok(Flow::Stop);
        };
        (m.spec.endpoint.clone(), st.meta.data_center.clone())
    };
    let mut link = inner
        .transport
        .open(&endpoint)
        .await
        .map_err(|e| transport_err(inner, &endpoint, e))?;
    let reply = request(
        inner,
        &endpoint,
        &mut link,
        epoch,
        PeerMessage::Hello { primary: from },
    )
    .await?;
    let PeerReply::Position(pos) = reply else {
        return Err(unexpected(inner, "Hello", &reply));
    };
    let plan = {
        let mut st = inner.lock();
        if st.meta.role != Role::Primary || st.meta.epoch != epoch {
            return Ok(Flow::Stop);
        }
        decide(&mut st, dc, &pos)
    };
    let Some(plan) = plan else {
        return Ok(Flow::Stop);
    };
    if matches!(plan, Plan::Stream(_)) {
        // It may have rejoined the in-sync set: record that too.
        inner.persist().await?;
    }
    let acked = match plan {
        Plan::Stream(acked) => acked,
        Plan::Resync { full } => {
            match resync_copy(inner, dc, epoch, &endpoint, &mut link, full).await? {
                Some(seq) => seq,
                None => return Ok(Flow::Restart),
            }
        }
    };
    stream(inner, dc, epoch, &endpoint, link, acked).await
}

/// Choose how to bring the member up to date, given its reported position.
fn decide(st: &mut crate::volume::State, dc: &str, pos: &Position) -> Option<Plan> {
    let last = st.last_seq;
    let size = st.meta.size_bytes;
    let consistent = !pos.resyncing
        && pos.applied_seq <= last
        && history_ok(
            &st.meta.history,
            pos,
            last,
            crate::types::Term {
                epoch: st.last_epoch,
                incarnation: st.last_incarnation,
            },
        );
    let covered = pos.applied_seq == last
        || st
            .cache
            .first_seq()
            .is_some_and(|f| f <= pos.applied_seq + 1);
    let m = st.members.get_mut(dc)?;
    m.connected = true;
    m.message.clear();
    m.reported_seq = pos.applied_seq;
    m.progress.send_modify(|p| p.refused = None);
    if let Mode::Streaming { durable, .. } = m.mode {
        // Back with at least what it had on its disk (after a crash of its
        // process, with all it acknowledged): stream on from there.
        if consistent && covered && pos.applied_seq >= durable {
            m.set_streaming(pos.applied_seq);
            return Some(Plan::Stream(pos.applied_seq));
        }
        to_tracking(st, dc, "position not covered by the cache");
    }
    let m = st.members.get_mut(dc)?;
    // Regions sent in an unfinished copy were never confirmed: copy them again.
    let unconfirmed = m.inflight.take();
    if !unconfirmed.is_empty() {
        m.dirty.merge(&unconfirmed);
    }
    let since = m.dirty.since_seq.min(if m.inflight.is_empty() {
        u64::MAX
    } else {
        m.inflight.since_seq
    });
    let valid = consistent && pos.applied_seq >= since;
    if !valid {
        m.dirty = DirtyMap::full(size);
        m.inflight = DirtyMap::default();
        return Some(Plan::Resync { full: true });
    }
    if m.dirty.is_empty() && m.inflight.is_empty() && pos.applied_seq == last {
        // Nothing changed since its durable position: the resync is
        // complete without a copy.
        m.set_streaming(last);
        return Some(Plan::Stream(last));
    }
    Some(Plan::Resync { full: false })
}

/// Copy the regions the member lacks, repeating until none is left, then
/// switch it to streaming at the current sequence number. Returns that
/// number, or `None` when the member's mode changed under us.
async fn resync_copy(
    inner: &Arc<Inner>,
    dc: &str,
    epoch: u64,
    endpoint: &str,
    link: &mut PeerLink,
    full: bool,
) -> Result<Option<u64>> {
    tracing::info!(full, "region copy starts");
    let reply = request(
        inner,
        endpoint,
        link,
        epoch,
        PeerMessage::ResyncBegin { full },
    )
    .await?;
    if reply != PeerReply::Done {
        return Err(unexpected(inner, "ResyncBegin", &reply));
    }
    let mut copied = 0u64;
    loop {
        let (regions, size, done) = {
            let mut st = inner.lock();
            let size = st.meta.size_bytes;
            let last = st.last_seq;
            let last_epoch = st.last_epoch;
            let history = st.meta.history.clone();
            let Some(m) = st.members.get_mut(dc) else {
                return Ok(None);
            };
            if m.mode != Mode::Tracking {
                return Ok(None);
            }
            let taken = m.dirty.take();
            // Nothing in flight claims nothing: the copy's map brings its
            // own `since`. Merged into the empty default instead, it took
            // since 0, and a member re-created after an interrupted copy
            // then passed for one that needs only these regions.
            if m.inflight.is_empty() {
                m.inflight = taken.clone();
            } else {
                m.inflight.merge(&taken);
            }
            if taken.is_empty() {
                // New writes stream to it from here on; it counts as
                // holding `last` (writes waiting on it complete, it rejoins
                // the in-sync set) only once it confirms the copy durable.
                m.mode = Mode::Streaming {
                    acked: last,
                    durable: last,
                };
                m.dirty = DirtyMap::new(last);
                (DirtyMap::default(), size, Some((last, last_epoch, history)))
            } else {
                (taken, size, None)
            }
        };
        if let Some((seq, applied_epoch, history)) = done {
            let reply = request(
                inner,
                endpoint,
                link,
                epoch,
                PeerMessage::ResyncDone {
                    seq,
                    applied_epoch,
                    history,
                },
            )
            .await?;
            if reply != PeerReply::Done {
                return Err(unexpected(inner, "ResyncDone", &reply));
            }
            let rejoined = {
                let mut st = inner.lock();
                let Some(m) = st.members.get_mut(dc) else {
                    return Ok(None);
                };
                m.inflight = DirtyMap::default();
                if !matches!(m.mode, Mode::Streaming { .. }) {
                    return Ok(None);
                }
                let rejoined = !m.in_sync;
                m.set_streaming(seq);
                rejoined
            };
            if rejoined {
                inner.persist().await?;
                super::note_rejoined(inner, dc).await;
                tracing::info!("member rejoined the in-sync set");
            }
            tracing::info!(regions = copied, seq, "region copy complete");
            return Ok(Some(seq));
        }
        copied += regions.regions();
        let sent = send_regions(inner, endpoint, link, epoch, &regions, size).await?;
        if let Some(m) = inner.lock().members.get_mut(dc) {
            m.resync_bytes += sent;
        }
    }
}

/// Send the regions of `map`, batched and pipelined, and wait for every ack.
/// Returns the bytes of region data sent.
async fn send_regions(
    inner: &Arc<Inner>,
    endpoint: &str,
    link: &mut PeerLink,
    epoch: u64,
    map: &DirtyMap,
    size: u64,
) -> Result<u64> {
    let mut sent = 0u64;
    let per_batch = (inner.config.batch_bytes / REGION_SIZE).max(1) as usize;
    let regions: Vec<u64> = map.iter().collect();
    let mut in_flight = 0usize;
    for chunk in regions.chunks(per_batch) {
        let mut batch = Vec::with_capacity(chunk.len());
        for &r in chunk {
            let offset = r * REGION_SIZE;
            if offset >= size {
                continue;
            }
            let len = REGION_SIZE.min(size - offset) as usize;
            let mut buf = vec![0u8; len];
            let data = inner.data.clone();
            buf = tokio::task::spawn_blocking(move || data.read_at(offset, &mut buf).map(|()| buf))
                .await
                .map_err(|e| {
                    EngineError::backend(&inner.id, "read", std::io::Error::other(e.to_string()))
                })?
                .map_err(|e| EngineError::backend(&inner.id, "read", e))?;
            let crc = crc32c::crc32c(&buf);
            sent += buf.len() as u64;
            batch.push(Region {
                offset,
                data: buf.into(),
                crc,
            });
        }
        let req = PeerRequest {
            volume_id: inner.id.clone(),
            epoch,
            msg: PeerMessage::Regions { regions: batch },
        };
        send(inner, endpoint, link, req).await?;
        in_flight += 1;
        while in_flight >= inner.config.window {
            recv_done(inner, endpoint, link).await?;
            in_flight -= 1;
        }
    }
    while in_flight > 0 {
        recv_done(inner, endpoint, link).await?;
        in_flight -= 1;
    }
    Ok(sent)
}

async fn recv_done(inner: &Inner, endpoint: &str, link: &mut PeerLink) -> Result<()> {
    match next_answer(inner, endpoint, link).await {
        None => Err(transport_err(
            inner,
            endpoint,
            TransportError::StreamClosed {
                endpoint: endpoint.into(),
            },
        )),
        Some(Err(e)) => Err(transport_err(inner, endpoint, e)),
        Some(Ok(PeerReply::Done)) => Ok(()),
        Some(Ok(other)) => Err(unexpected(inner, "Regions", &other)),
    }
}

fn unexpected(inner: &Inner, to: &'static str, reply: &PeerReply) -> EngineError {
    EngineError::InvalidField {
        volume: inner.id.clone(),
        field: "reply",
        reason: format!("unexpected reply to {to}: {reply:?}"),
    }
}

/// Stream writes from the cache in order, `window` batches in flight.
async fn stream(
    inner: &Arc<Inner>,
    dc: &str,
    epoch: u64,
    endpoint: &str,
    mut link: PeerLink,
    acked: u64,
) -> Result<Flow> {
    let mut next = acked + 1;
    let mut in_flight: VecDeque<u64> = VecDeque::new();
    let mut last_rx = inner.last_seq_tx.subscribe();
    loop {
        while in_flight.len() < inner.config.window {
            let batch = {
                let st = inner.lock();
                if st.meta.role != Role::Primary || st.meta.epoch != epoch {
                    return Ok(Flow::Stop);
                }
                match st.members.get(dc).map(|m| m.mode) {
                    None => return Ok(Flow::Stop),
                    Some(Mode::Tracking) => return Ok(Flow::Restart),
                    Some(Mode::Streaming { .. }) => {}
                }
                if next > st.last_seq {
                    break;
                }
                st.cache.batch_from(next, inner.config.batch_bytes, 1024)
            };
            let Some(last) = batch.last().map(|r| r.seq) else {
                // The cache no longer holds what this member needs.
                let mut st = inner.lock();
                to_tracking(
                    &mut st,
                    dc,
                    "writes left the cache before the member held them",
                );
                return Ok(Flow::Restart);
            };
            let req = PeerRequest {
                volume_id: inner.id.clone(),
                epoch,
                msg: PeerMessage::Append { records: batch },
            };
            send(inner, endpoint, &mut link, req).await?;
            in_flight.push_back(last);
            next = last + 1;
        }
        let idle = in_flight.is_empty();
        tokio::select! {
            // Pushed durable positions come whether or not a batch is in
            // flight (a flush waits for the one after the last batch); only
            // a batch in flight bounds how long the link may stay silent.
            reply = async {
                if idle { link.rx.recv().await } else { next_reply(inner, endpoint, &mut link).await }
            } => {
                let reply = match reply {
                    None => return Err(stream_closed(inner, endpoint)),
                    Some(Err(e)) => return Err(transport_err(inner, endpoint, e)),
                    Some(Ok(r @ (PeerReply::Ack { .. } | PeerReply::Durable { .. }))) => r,
                    Some(Ok(other)) => return Err(unexpected(inner, "Append", &other)),
                };
                if matches!(reply, PeerReply::Ack { .. }) {
                    in_flight.pop_front();
                }
                let mut st = inner.lock();
                if let Some(m) = st.members.get_mut(dc) {
                    note_reply(m, &reply);
                }
                trim_cache(&mut st);
            }
            changed = last_rx.changed(), if in_flight.len() < inner.config.window => {
                if changed.is_err() {
                    return Ok(Flow::Stop);
                }
            }
        }
    }
}

/// What a streaming member's reply says it holds: an Ack, every write up to
/// its sequence number in the member's replica; a pushed Durable, every
/// write up to it on the member's disk.
fn note_reply(m: &mut super::MemberTrack, reply: &PeerReply) {
    let Mode::Streaming { acked, durable } = m.mode else {
        return;
    };
    let (acked, durable) = match *reply {
        PeerReply::Ack { seq } => (acked.max(seq), durable),
        PeerReply::Durable { seq } => (acked, durable.max(seq)),
        _ => return,
    };
    m.mode = Mode::Streaming { acked, durable };
    m.reported_seq = durable;
    m.progress.send_modify(|p| {
        p.acked = p.acked.max(acked);
        p.durable = p.durable.max(durable);
        p.refused = None;
    });
}
