//! Role: who is primary, at which epoch (claims 3, 4, 13, 14).
//!
//! Rules: every role change carries an epoch; an older epoch is refused with
//! `StaleEpoch` and changes nothing; a repeat at the held epoch with the same
//! content succeeds without doing anything again. A planned change of primary
//! ([`Volume::transfer_primary`]) fences the old primary (no new writes),
//! waits until the target holds every accepted write (the cache written out,
//! the async backlog drained), asks the target to take the primary role at
//! epoch + 1, and becomes its secondary. Since every replica refuses data and
//! hand-shakes from an older epoch, and a primary that meets a newer epoch
//! fences itself, two primaries never both complete writes in a Sync group.
//!
//! Caveat: when the hand-over call fails without an answer, the old primary
//! stays fenced (the target may have taken over); a later configure, transfer
//! or promote lifts it.

use std::time::Instant;

use tracing::instrument;

use crate::error::{EngineError, RefusalCode, Result, TransportError};
use crate::replication::{MemberTrack, Progress, start_senders};
use crate::resync::DirtyMap;
use crate::transport::{PeerMessage, PeerReply, PeerRequest};
use crate::types::{GroupSpec, Role};
use crate::volume::{State, Volume};

/// Become a secondary of `primary` at `epoch` (no checks).
pub(crate) fn step_down(st: &mut State, epoch: u64, primary: &str) {
    for m in std::mem::take(&mut st.members).into_values() {
        m.stop();
    }
    st.cache.clear();
    st.meta.role = Role::Secondary;
    st.meta.epoch = epoch;
    st.lease_until = None;
    st.fenced = false;
    st.superseded = false;
    st.meta.dirty.clear();
    if let Some(g) = st.meta.group.as_mut() {
        g.primary = primary.to_string();
        g.epoch = epoch;
    }
}

/// Become primary at `group.epoch` (no checks). Members that hold exactly
/// what this replica holds stream at once; the others get region copies.
fn become_primary(st: &mut State, group: GroupSpec) {
    for m in std::mem::take(&mut st.members).into_values() {
        m.stop();
    }
    st.cache.clear();
    let me = st.meta.data_center.clone();
    let last = st.last_seq;
    st.meta.incarnation += 1;
    let term = crate::types::Term {
        epoch: group.epoch,
        incarnation: st.meta.incarnation,
    };
    crate::receive::note_history(&mut st.meta.history, term, last + 1);
    st.meta.role = Role::Primary;
    st.meta.epoch = group.epoch;
    // A lease is per epoch: the new one starts with the next renewal.
    st.lease_until = None;
    st.fenced = false;
    st.superseded = false;
    for spec in group.members.iter().filter(|m| m.data_center != me) {
        // In the in-sync set until recorded out of sync: writes wait for it
        // (or its resync) rather than go on without it unrecorded.
        let mut m = MemberTrack::tracking(spec.clone(), DirtyMap::new(last), true);
        if last == 0 {
            // Nothing written yet: every write from the first on stays in
            // the cache for it, so no copy races the first writes.
            m.set_streaming(0);
        }
        st.members.insert(spec.data_center.clone(), m);
    }
    st.meta.group = Some(group);
}

fn validate_group(volume: &str, me: &str, g: &GroupSpec) -> Result<()> {
    let invalid = |field, reason: String| EngineError::InvalidField {
        volume: volume.to_string(),
        field,
        reason,
    };
    if g.epoch == 0 {
        return Err(invalid("group.epoch", "must be at least 1".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for m in &g.members {
        if m.data_center.is_empty() {
            return Err(invalid("group.members.data_center", "empty".into()));
        }
        if m.endpoint.is_empty() {
            return Err(invalid(
                "group.members.endpoint",
                format!("empty for {}", m.data_center),
            ));
        }
        if !seen.insert(m.data_center.as_str()) {
            return Err(invalid(
                "group.members",
                format!("{} appears twice", m.data_center),
            ));
        }
    }
    if g.member(me).is_none() {
        return Err(EngineError::UnknownMember {
            volume: volume.to_string(),
            member: me.to_string(),
        });
    }
    if g.member(&g.primary).is_none() {
        return Err(EngineError::UnknownMember {
            volume: volume.to_string(),
            member: g.primary.clone(),
        });
    }
    Ok(())
}

impl Volume {
    /// Apply a group definition from the operator (idempotent per epoch).
    #[instrument(skip_all, fields(volume = %self.inner.id, epoch = group.epoch, primary = %group.primary))]
    pub async fn configure(&self, group: GroupSpec) -> Result<()> {
        let inner = &self.inner;
        let _g = inner.role_lock.lock().await;
        {
            let mut st = inner.lock();
            let me = st.meta.data_center.clone();
            validate_group(&inner.id, &me, &group)?;
            crate::fence::configure(&inner.id, &st, group.epoch)?;
            if group.epoch == st.meta.epoch {
                if st.meta.group.as_ref() == Some(&group) {
                    return Ok(());
                }
                if let Some(held) = &st.meta.group
                    && held.primary != group.primary
                {
                    return Err(EngineError::EpochConflict {
                        volume: inner.id.clone(),
                        epoch: group.epoch,
                        held_primary: held.primary.clone(),
                        asked_primary: group.primary.clone(),
                    });
                }
            }
            if group.primary == me {
                if st.meta.role == Role::Primary && st.meta.epoch == group.epoch {
                    update_members(&mut st, group);
                } else {
                    if st.meta.resyncing {
                        return Err(EngineError::ResyncUnfinished {
                            volume: inner.id.clone(),
                        });
                    }
                    become_primary(&mut st, group);
                }
            } else {
                let primary = group.primary.clone();
                let epoch = group.epoch;
                st.meta.group = Some(group);
                step_down(&mut st, epoch, &primary);
            }
        }
        inner.persist().await?;
        start_senders(inner);
        Ok(())
    }

    /// Planned change of primary to `target` at `new_epoch` (= held + 1).
    #[instrument(skip_all, fields(volume = %self.inner.id, target, new_epoch))]
    pub async fn transfer_primary(&self, target: &str, new_epoch: u64) -> Result<()> {
        let inner = &self.inner;
        let _g = inner.role_lock.lock().await;
        let started = Instant::now();
        let (last, endpoint, watched, group) = {
            let mut st = inner.lock();
            let held = st.meta.epoch;
            let current_primary = st
                .meta
                .group
                .as_ref()
                .map(|g| g.primary.clone())
                .unwrap_or_default();
            if st.meta.role != Role::Primary {
                if held == new_epoch && current_primary == target {
                    return Ok(());
                }
                return Err(EngineError::NotPrimary {
                    volume: inner.id.clone(),
                    role: st.meta.role,
                });
            }
            if new_epoch <= held {
                return Err(EngineError::StaleEpoch {
                    volume: inner.id.clone(),
                    held,
                    got: new_epoch,
                });
            }
            if new_epoch != held + 1 {
                return Err(EngineError::InvalidField {
                    volume: inner.id.clone(),
                    field: "new_epoch",
                    reason: format!("must be {} (held epoch + 1), got {new_epoch}", held + 1),
                });
            }
            if target == st.meta.data_center {
                return Err(EngineError::InvalidField {
                    volume: inner.id.clone(),
                    field: "target",
                    reason: format!("{target} is already primary"),
                });
            }
            let Some(m) = st.members.get(target) else {
                return Err(EngineError::UnknownMember {
                    volume: inner.id.clone(),
                    member: target.to_string(),
                });
            };
            crate::fence::writable(&inner.id, &st, Some(held))?;
            if !m.in_sync {
                return Err(EngineError::TargetNotInSync {
                    volume: inner.id.clone(),
                    member: target.to_string(),
                });
            }
            let endpoint = m.spec.endpoint.clone();
            // Every member of the in-sync set must hold every write before
            // the hand-over (DESIGN section 4, step 2), not only the target:
            // a failover after it may promote any of them.
            let watched: Vec<(String, tokio::sync::watch::Receiver<Progress>)> = st
                .members
                .iter()
                .filter(|(_, m)| m.in_sync)
                .map(|(dc, m)| (dc.clone(), m.progress.subscribe()))
                .collect();
            let mut group = st.meta.group.clone().unwrap_or_default();
            group.primary = target.to_string();
            group.epoch = new_epoch;
            st.fenced = true;
            (st.last_seq, endpoint, watched, group)
        };
        let unfence = |reason: String| {
            let mut st = inner.lock();
            // A newer epoch seen meanwhile keeps this primary fenced.
            st.fenced = st.superseded;
            EngineError::TransferFailed {
                volume: inner.id.clone(),
                target: target.to_string(),
                reason,
            }
        };
        if let Err(e) = inner.journal.wait_durable(last).await {
            return Err(unfence(e.to_string()));
        }
        tracing::info!(
            last,
            "fenced; waiting for every in-sync member to hold every write"
        );
        let deadline = tokio::time::Instant::now() + inner.config.transfer_timeout;
        for (dc, mut rx) in watched {
            let is_target = dc == target;
            // The target must stream and hold it all; any other member may
            // instead be recorded out of sync meanwhile (Degrade).
            let caught_up = tokio::time::timeout_at(
                deadline,
                rx.wait_for(|p| {
                    (p.durable >= last && (p.streaming || !is_target)) || (!is_target && !p.in_sync)
                }),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            if !caught_up {
                return Err(unfence(format!(
                    "member {dc} did not reach write {last} in time"
                )));
            }
        }
        let req = PeerRequest {
            volume_id: inner.id.clone(),
            epoch: new_epoch,
            msg: PeerMessage::TakePrimary {
                group: group.clone(),
                last_seq: last,
            },
        };
        match inner.transport.call(&endpoint, req).await {
            Ok(PeerReply::Done) => {}
            Ok(other) => return Err(unfence(format!("unexpected reply {other:?}"))),
            Err(TransportError::Refused {
                code: RefusalCode::StaleEpoch,
                message,
                ..
            }) => {
                // The target holds a newer epoch: another primary may exist.
                let mut st = inner.lock();
                st.superseded = true;
                return Err(EngineError::TransferFailed {
                    volume: inner.id.clone(),
                    target: target.to_string(),
                    reason: format!("target holds a newer epoch, staying fenced: {message}"),
                });
            }
            // The target refused before changing anything: this primary
            // takes writes again.
            Err(TransportError::Refused {
                code:
                    RefusalCode::NotReady
                    | RefusalCode::Invalid
                    | RefusalCode::NoSpace
                    | RefusalCode::OutOfOrder
                    | RefusalCode::NotFound
                    | RefusalCode::Unavailable,
                message,
                ..
            }) => return Err(unfence(message)),
            Err(
                e @ (TransportError::Refused {
                    code: RefusalCode::Internal,
                    ..
                }
                | TransportError::Connect { .. }
                | TransportError::StreamClosed { .. }),
            ) => {
                return Err(EngineError::TransferFailed {
                    volume: inner.id.clone(),
                    target: target.to_string(),
                    reason: format!("outcome unknown, staying fenced: {e}"),
                });
            }
        }
        {
            let mut st = inner.lock();
            st.meta.group = Some(group);
            step_down(&mut st, new_epoch, target);
            st.meta.last_transfer_millis = started.elapsed().as_millis() as u64;
        }
        inner.persist().await?;
        tracing::info!(
            millis = started.elapsed().as_millis() as u64,
            "primary handed over"
        );
        Ok(())
    }

    /// Forced promotion of this secondary at `new_epoch` (> held), when the
    /// primary is gone.
    #[instrument(skip_all, fields(volume = %self.inner.id, new_epoch))]
    pub async fn promote(&self, new_epoch: u64) -> Result<()> {
        let inner = &self.inner;
        let _g = inner.role_lock.lock().await;
        {
            let mut st = inner.lock();
            if st.meta.role == Role::Primary && st.meta.epoch == new_epoch {
                return Ok(());
            }
            crate::fence::role_change(&inner.id, &st, new_epoch)?;
            if st.meta.resyncing {
                return Err(EngineError::ResyncUnfinished {
                    volume: inner.id.clone(),
                });
            }
            let Some(mut group) = st.meta.group.clone() else {
                return Err(EngineError::NoGroup {
                    volume: inner.id.clone(),
                });
            };
            group.primary = st.meta.data_center.clone();
            group.epoch = new_epoch;
            become_primary(&mut st, group);
        }
        inner.persist().await?;
        start_senders(inner);
        tracing::info!("promoted");
        Ok(())
    }

    /// The target side of a planned change of primary.
    pub(crate) async fn take_primary(
        &self,
        epoch: u64,
        group: GroupSpec,
        last_seq: u64,
    ) -> Result<()> {
        let inner = &self.inner;
        let _g = inner.role_lock.lock().await;
        {
            let mut st = inner.lock();
            if st.meta.role == Role::Primary && st.meta.epoch == epoch {
                return Ok(());
            }
            crate::fence::role_change(&inner.id, &st, epoch)?;
            validate_group(&inner.id, &st.meta.data_center, &group)?;
            if group.primary != st.meta.data_center || group.epoch != epoch {
                return Err(EngineError::InvalidField {
                    volume: inner.id.clone(),
                    field: "group.primary",
                    reason: format!("hand-over names {} at epoch {}", group.primary, group.epoch),
                });
            }
            if st.meta.resyncing {
                return Err(EngineError::ResyncUnfinished {
                    volume: inner.id.clone(),
                });
            }
            if st.last_seq < last_seq {
                return Err(EngineError::TargetBehind {
                    volume: inner.id.clone(),
                    have: st.last_seq,
                    need: last_seq,
                });
            }
            become_primary(&mut st, group);
        }
        inner.persist().await?;
        start_senders(inner);
        tracing::info!("took the primary role");
        Ok(())
    }
}

/// Same epoch, same primary: members may come and go, policies may change.
fn update_members(st: &mut State, group: GroupSpec) {
    let me = st.meta.data_center.clone();
    let keep: std::collections::HashSet<String> = group
        .members
        .iter()
        .map(|m| m.data_center.clone())
        .collect();
    let gone: Vec<String> = st
        .members
        .keys()
        .filter(|dc| !keep.contains(*dc))
        .cloned()
        .collect();
    for dc in gone {
        if let Some(m) = st.members.remove(&dc) {
            m.stop();
        }
    }
    let (last, size) = (st.last_seq, st.meta.size_bytes);
    for spec in group.members.iter().filter(|m| m.data_center != me) {
        match st.members.get_mut(&spec.data_center) {
            Some(m) => m.spec = spec.clone(),
            None => {
                // A member added before the first write lacks nothing; any
                // later one joins the in-sync set after its full copy.
                let (map, in_sync) = if last == 0 {
                    (DirtyMap::new(0), true)
                } else {
                    (DirtyMap::full(size), false)
                };
                st.members.insert(
                    spec.data_center.clone(),
                    MemberTrack::tracking(spec.clone(), map, in_sync),
                );
            }
        }
    }
    crate::replication::trim_cache(st);
    st.meta.group = Some(group);
}
