//! The VirtualVolume decisions (pure): from the spec, where the volume is
//! wanted, the data centers and what every storage system reports, decide the
//! next actions and the status. No I/O; `apply.rs` carries the actions out.
//!
//! Expected flow over successive reconciles (each one takes the next step):
//! 1. no group: place it (one member per data center) and create the
//!    CopyVolumeGroup with the first primary at epoch 1;
//! 2. create missing real volumes, grow small ones;
//! 3. configure the group on every member (primary, epoch, members);
//! 4. steady: keep members configured at the primary's epoch; when the volume
//!    is wanted elsewhere, write the intent (desired primary, epoch + 1) into
//!    the group spec;
//! 5. intent pending: ask the current primary to transfer to the desired one
//!    (`TransferPrimary`, flush/drain first, on the storage side);
//! 6. primary unreachable past the grace period: write a failover intent for
//!    the most up-to-date reachable member of the recorded in-sync set,
//!    fence the old primary in the directory, wait out its lease
//!    (`roam_crds::directory`), then `Promote` the candidate.
//!
//! Guarantees: the intent is always written before the storage systems are
//! asked to change roles, so a restarted operator finds it and finishes; at
//! most one change of primary per group is in flight (a new one is only
//! planned in the steady state); epochs only rise.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use roam_crds::{
    CopyVolumeGroup, CopyVolumeGroupSpec, CopyVolumeGroupStatus, DataCenter, FailoverMode,
    FailoverRecord, MemberRole, MemberState, MemberStatus, RelocationRecord, TransferType,
    VirtualVolumeSpec, VirtualVolumeStatus, VolumePhase, conditions, directory, proximity,
};

use super::placement;

/// How often a Ready volume is looked at again (lag, reachability) when
/// nothing changes. Every change of the volume, its group, a pod or an
/// attachment triggers a reconcile at once; this is only the resync, and at
/// thousands of volumes a shorter one starves the reconciles that matter.
pub const READY_RESYNC: Duration = Duration::from_secs(30);

/// What one storage system reported about its replica of the volume.
#[derive(Clone, Debug, PartialEq)]
pub enum ReplicaObs {
    /// The storage system answered: no such replica.
    Missing,
    /// The storage system did not answer.
    Unreachable(String),
    /// The replica.
    Present(Replica),
}

/// A replica as its storage system reports it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Replica {
    pub role: MemberRole,
    pub epoch: u64,
    pub size_bytes: u64,
    pub durable_seq: u64,
    /// On the primary: its secondaries.
    pub secondaries: Vec<SecondaryReport>,
}

/// The primary's view of one secondary.
#[derive(Clone, Debug, PartialEq)]
pub struct SecondaryReport {
    pub data_center: String,
    pub state: MemberState,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
}

/// Everything the plan looks at.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a VirtualVolumeSpec,
    /// `spec.size` in bytes.
    pub size_bytes: u64,
    /// Data center where the volume is wanted (attached node, or a pod's node).
    pub wanted_dc: Option<String>,
    /// Published to a node (the CSI log-in's attached-node annotation): a
    /// frontend runs against the current primary at its epoch.
    pub attached: bool,
    pub data_centers: &'a [DataCenter],
    pub group: Option<&'a CopyVolumeGroup>,
    /// When the pending intent in the group spec was written.
    pub intent_at: Option<Timestamp>,
    /// Per member data center.
    pub replicas: BTreeMap<String, ReplicaObs>,
    pub previous: Option<&'a VirtualVolumeStatus>,
    /// Broken frontends the node plugins report, by node.
    pub frontend_faults: Vec<(String, roam_crds::frontend::FrontendFault)>,
    pub now: Timestamp,
}

/// Why an intent is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntentReason {
    /// The volume is wanted in another data center (planned change).
    Relocate,
    /// The primary is gone (forced promotion follows).
    Failover,
    /// The storage systems are ahead of the directory; record what they say.
    Adopt,
}

/// One step for `apply.rs`.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    CreateGroup(CopyVolumeGroupSpec),
    /// Set `spec.sizeBytes` of the group.
    GrowGroup {
        size_bytes: u64,
    },
    CreateReplica {
        dc: String,
    },
    ExpandReplica {
        dc: String,
        size_bytes: u64,
    },
    Configure {
        dc: String,
        primary: String,
        epoch: u64,
    },
    WriteIntent {
        primary: String,
        epoch: u64,
        reason: IntentReason,
    },
    Transfer {
        from: String,
        to: String,
        epoch: u64,
    },
    /// Fence the group at `epoch` in the directory (no lease below it, nor
    /// at it for anyone but the desired primary), then note when the fence
    /// was seen recorded; the promotion waits out the lease from then.
    Fence {
        epoch: u64,
    },
    Promote {
        dc: String,
        epoch: u64,
    },
}

/// Whether the result of these actions can be observed at once, so the same
/// reconcile may plan again: they create or grow the group and its real
/// volumes, or configure members. A change of primary (intent, transfer,
/// promotion) ends the reconcile, so each of its steps is recorded in the
/// directory before the next one starts.
pub fn continues_in_place(actions: &[Action]) -> bool {
    !actions.is_empty()
        && actions.iter().all(|a| {
            matches!(
                a,
                Action::CreateGroup(_)
                    | Action::GrowGroup { .. }
                    | Action::CreateReplica { .. }
                    | Action::ExpandReplica { .. }
                    | Action::Configure { .. }
            )
        })
}

/// An Event to record.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub volume_status: VirtualVolumeStatus,
    pub group_status: Option<CopyVolumeGroupStatus>,
    pub notes: Vec<Note>,
    pub requeue: Duration,
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

/// Decide.
pub fn plan(i: &Input) -> Plan {
    match i.group {
        None => plan_placement(i),
        Some(g) => plan_group(i, g),
    }
}

fn base_status(i: &Input) -> VirtualVolumeStatus {
    let mut s = i.previous.cloned().unwrap_or_default();
    s.observed_generation = i.generation;
    s.size_bytes = i.size_bytes;
    s.wanted_data_center = i.wanted_dc.clone();
    s
}

fn plan_placement(i: &Input) -> Plan {
    let mut status = base_status(i);
    let volume_id = roam_crds::real_volume_id(i.namespace, i.name);
    let placed = placement::data_centers(i.spec, i.wanted_dc.as_deref(), i.data_centers)
        .and_then(|names| placement::members(&names, &volume_id, i.data_centers));
    let now = time(i.now);
    match placed {
        Err(e) => {
            let msg = e.to_string();
            let already = conditions::get(&status.conditions, conditions::PLACEMENT_FAILED)
                .is_some_and(|c| c.status == "True" && c.message == msg);
            conditions::set(
                &mut status.conditions,
                conditions::PLACEMENT_FAILED,
                true,
                "NoStorage",
                &msg,
                i.generation,
                now.clone(),
            );
            conditions::set(
                &mut status.conditions,
                conditions::READY,
                false,
                "PlacementFailed",
                &msg,
                i.generation,
                now,
            );
            status.phase = VolumePhase::Pending;
            let notes = if already {
                vec![]
            } else {
                vec![Note {
                    warning: true,
                    reason: "PlacementFailed",
                    message: msg,
                }]
            };
            Plan {
                actions: vec![],
                volume_status: status,
                group_status: None,
                notes,
                requeue: Duration::from_secs(5),
            }
        }
        Ok(members) => {
            let dcs: Vec<String> = members.iter().map(|m| m.data_center.clone()).collect();
            let primary = placement::initial_primary(i.wanted_dc.as_deref(), &dcs, i.data_centers)
                .unwrap_or_default();
            let async_ = i.spec.transfer_type == TransferType::Async;
            let spec = CopyVolumeGroupSpec {
                members,
                desired_primary: primary.clone(),
                epoch: 1,
                transfer_type: i.spec.transfer_type,
                sync_level: i.spec.sync_level,
                failure_policy: i.spec.failure_policy,
                max_lag_bytes: if async_ {
                    i.spec.max_lag_bytes.unwrap_or(0)
                } else {
                    0
                },
                max_lag_seconds: if async_ {
                    i.spec.max_lag_seconds.unwrap_or(0)
                } else {
                    0
                },
                size_bytes: i.size_bytes,
            };
            conditions::set(
                &mut status.conditions,
                conditions::PLACEMENT_FAILED,
                false,
                "Placed",
                format!("members in {}", dcs.join(", ")),
                i.generation,
                now.clone(),
            );
            conditions::set(
                &mut status.conditions,
                conditions::READY,
                false,
                "Creating",
                "creating the real volumes",
                i.generation,
                now,
            );
            status.phase = VolumePhase::Creating;
            status.group = Some(i.name.to_string());
            Plan {
                actions: vec![Action::CreateGroup(spec)],
                volume_status: status,
                group_status: None,
                notes: vec![Note {
                    warning: false,
                    reason: "Placed",
                    message: format!(
                        "copy volume group {} with members in {}, primary {primary}",
                        i.name,
                        dcs.join(", ")
                    ),
                }],
                requeue: Duration::from_secs(1),
            }
        }
    }
}

fn present<'a>(i: &'a Input, dc: &str) -> Option<&'a Replica> {
    match i.replicas.get(dc) {
        Some(ReplicaObs::Present(r)) => Some(r),
        _ => None,
    }
}

/// The reachable replica claiming the primary role at the highest epoch.
fn claimed_primary(i: &Input, g: &CopyVolumeGroup) -> Option<(String, u64)> {
    g.spec
        .members
        .iter()
        .filter_map(|m| present(i, &m.data_center).map(|r| (m, r)))
        .filter(|(_, r)| r.role == MemberRole::Primary)
        .map(|(m, r)| (r.epoch, m.data_center.clone()))
        .max()
        .map(|(e, dc)| (dc, e))
}

fn member_statuses(i: &Input, g: &CopyVolumeGroup, primary: Option<&str>) -> Vec<MemberStatus> {
    let reports: Vec<SecondaryReport> = primary
        .and_then(|p| present(i, p))
        .map(|r| r.secondaries.clone())
        .unwrap_or_default();
    g.spec
        .members
        .iter()
        .map(|m| {
            let dc = m.data_center.clone();
            match i.replicas.get(&dc) {
                Some(ReplicaObs::Present(r)) => {
                    let report = reports.iter().find(|s| s.data_center == dc);
                    let is_primary = Some(dc.as_str()) == primary;
                    let (state, lag_bytes, lag_seconds) = if is_primary {
                        (MemberState::InSync, 0, 0.0)
                    } else if let Some(s) = report {
                        (s.state, s.lag_bytes, s.lag_seconds)
                    } else {
                        (MemberState::Resyncing, 0, 0.0)
                    };
                    MemberStatus {
                        data_center: dc,
                        role: r.role,
                        state,
                        lag_bytes,
                        lag_seconds,
                        epoch: r.epoch,
                        durable_seq: r.durable_seq,
                    }
                }
                Some(ReplicaObs::Missing) => MemberStatus {
                    data_center: dc,
                    role: MemberRole::None,
                    state: MemberState::Resyncing,
                    ..Default::default()
                },
                _ => MemberStatus {
                    data_center: dc,
                    role: MemberRole::None,
                    state: MemberState::Unreachable,
                    ..Default::default()
                },
            }
        })
        .collect()
}

fn plan_group(i: &Input, g: &CopyVolumeGroup) -> Plan {
    let spec = &g.spec;
    let prev = g.status.clone().unwrap_or_default();
    let now = time(i.now);
    let mut actions = Vec::new();
    let mut notes = Vec::new();
    let mut vstatus = base_status(i);
    vstatus.group = Some(
        g.metadata
            .name
            .clone()
            .unwrap_or_else(|| i.name.to_string()),
    );
    let mut gstatus = prev.clone();
    let member_dcs = g.member_dcs();

    // Size: the group follows the volume; replicas follow the group.
    if i.size_bytes > spec.size_bytes {
        actions.push(Action::GrowGroup {
            size_bytes: i.size_bytes,
        });
    }
    for m in &spec.members {
        match i.replicas.get(&m.data_center) {
            Some(ReplicaObs::Missing) => actions.push(Action::CreateReplica {
                dc: m.data_center.clone(),
            }),
            Some(ReplicaObs::Present(r)) if r.size_bytes < spec.size_bytes => {
                actions.push(Action::ExpandReplica {
                    dc: m.data_center.clone(),
                    size_bytes: spec.size_bytes,
                })
            }
            _ => {}
        }
    }

    let claimed = claimed_primary(i, g);
    // A primary the directory fenced is gone, even when it answers: it can
    // no longer renew its lease, and the failover that fenced it goes on.
    let fence = directory::fence_epoch(g).unwrap_or(0);
    let current = claimed
        .clone()
        .filter(|(_, e)| *e >= prev.epoch && *e >= fence);
    let never_configured = prev.epoch == 0
        && prev.primary.is_none()
        && spec
            .members
            .iter()
            .all(|m| present(i, &m.data_center).is_none_or(|r| r.epoch == 0));

    let phase;
    let requeue;
    match current {
        None if never_configured => {
            let all_present = spec
                .members
                .iter()
                .all(|m| present(i, &m.data_center).is_some());
            if all_present {
                // The primary first, so secondaries find it configured.
                let mut order: Vec<&str> = vec![spec.desired_primary.as_str()];
                order.extend(
                    member_dcs
                        .iter()
                        .map(String::as_str)
                        .filter(|d| *d != spec.desired_primary),
                );
                for dc in order {
                    actions.push(Action::Configure {
                        dc: dc.to_string(),
                        primary: spec.desired_primary.clone(),
                        epoch: spec.epoch,
                    });
                }
            }
            phase = VolumePhase::Creating;
            requeue = Duration::from_secs(1);
            conditions::set(
                &mut vstatus.conditions,
                conditions::READY,
                false,
                "Creating",
                waiting_message(i, g),
                i.generation,
                now.clone(),
            );
        }
        None => {
            // The primary is gone: not reachable, or every reachable claim is stale.
            let lost = prev
                .primary
                .clone()
                .unwrap_or_else(|| spec.desired_primary.clone());
            let since = prev
                .primary_unreachable_since
                .clone()
                .unwrap_or_else(|| now.clone());
            let why = match i.replicas.get(&lost) {
                Some(ReplicaObs::Unreachable(e)) => e.clone(),
                Some(ReplicaObs::Missing) => "its real volume is missing".to_string(),
                Some(ReplicaObs::Present(r)) => format!(
                    "it reports role {:?} at epoch {}, the group is at epoch {}",
                    r.role, r.epoch, prev.epoch
                ),
                None => "not observed".to_string(),
            };
            if prev.primary_unreachable_since.is_none() {
                notes.push(Note {
                    warning: true,
                    reason: "PrimaryUnreachable",
                    message: format!("primary in {lost} is unreachable: {why}"),
                });
            }
            gstatus.primary_unreachable_since = Some(since.clone());
            let grace = Duration::from_secs(u64::from(i.spec.failover.grace_period_seconds));
            let elapsed = i.now.duration_since(since.0).unsigned_abs();
            let msg;
            // A pending intent for a reachable member other than the lost one.
            let intended = spec.epoch > prev.epoch
                && spec.desired_primary != lost
                && present(i, &spec.desired_primary).is_some();
            // Manual mode promotes only what a person asked for; the grace
            // period still applies, so the lost primary has stopped before
            // anyone else takes writes.
            if i.spec.failover.mode == FailoverMode::Manual && !(intended && promote_asked(g)) {
                msg = format!("primary in {lost} is unreachable; failover is manual");
                requeue = Duration::from_secs(5);
            } else if elapsed < grace {
                let left = grace - elapsed;
                msg = format!(
                    "primary in {lost} is unreachable; failover in {}s",
                    left.as_secs()
                );
                requeue = left
                    .min(Duration::from_secs(5))
                    .max(Duration::from_millis(500));
            } else if intended {
                let d = &spec.desired_primary;
                let lease_left = directory::fenced_at(g).map(|at| {
                    let since = i.now.duration_since(at).unsigned_abs();
                    directory::PRIMARY_LEASE.saturating_sub(since)
                });
                if !directory::Record::of(g).in_sync(d) {
                    msg = format!(
                        "{d} is recorded out of sync: promoting it would lose acknowledged writes"
                    );
                    requeue = Duration::from_secs(5);
                } else if lease_left.is_none() {
                    actions.push(Action::Fence { epoch: spec.epoch });
                    msg = format!("fencing {lost} at epoch {}", spec.epoch);
                    requeue = Duration::from_secs(1);
                } else if let Some(left) = lease_left.filter(|l| !l.is_zero()) {
                    msg = format!(
                        "waiting {}s for the lease of {lost} to run out before promoting {d}",
                        left.as_secs_f64().ceil()
                    );
                    requeue = left
                        .min(Duration::from_secs(5))
                        .max(Duration::from_millis(200));
                } else {
                    actions.push(Action::Promote {
                        dc: d.clone(),
                        epoch: spec.epoch,
                    });
                    msg = format!("promoting {d} at epoch {}", spec.epoch);
                    requeue = Duration::from_secs(1);
                }
            } else if let Some(candidate) = failover_candidate(i, g, &lost) {
                let held = spec
                    .members
                    .iter()
                    .filter_map(|m| present(i, &m.data_center))
                    .map(|r| r.epoch)
                    .max()
                    .unwrap_or(0);
                let epoch = spec.epoch.max(prev.epoch).max(held) + 1;
                notes.push(Note { warning: true, reason: "FailoverStarted", message: format!("primary in {lost} unreachable for {}s; promoting {candidate} at epoch {epoch}", elapsed.as_secs()) });
                actions.push(Action::WriteIntent {
                    primary: candidate.clone(),
                    epoch,
                    reason: IntentReason::Failover,
                });
                msg = format!("failing over from {lost} to {candidate}");
                requeue = Duration::from_secs(1);
            } else {
                msg = format!(
                    "primary in {lost} is unreachable and no member of the in-sync set is reachable"
                );
                requeue = Duration::from_secs(3);
            }
            conditions::set(
                &mut gstatus.conditions,
                conditions::PRIMARY_UNREACHABLE,
                true,
                "PrimaryUnreachable",
                &msg,
                None,
                now.clone(),
            );
            conditions::set(
                &mut vstatus.conditions,
                conditions::PRIMARY_UNREACHABLE,
                true,
                "PrimaryUnreachable",
                &msg,
                i.generation,
                now.clone(),
            );
            conditions::set(
                &mut vstatus.conditions,
                conditions::READY,
                false,
                "PrimaryUnreachable",
                &msg,
                i.generation,
                now.clone(),
            );
            phase = VolumePhase::Degraded;
        }
        Some((p, ep)) => {
            gstatus.primary_unreachable_since = None;
            if conditions::get(&gstatus.conditions, conditions::PRIMARY_UNREACHABLE)
                .is_some_and(|c| c.status == "True")
            {
                conditions::set(
                    &mut gstatus.conditions,
                    conditions::PRIMARY_UNREACHABLE,
                    false,
                    "PrimaryReachable",
                    format!("primary in {p} answers"),
                    None,
                    now.clone(),
                );
            }
            conditions::set(
                &mut vstatus.conditions,
                conditions::PRIMARY_UNREACHABLE,
                false,
                "PrimaryReachable",
                format!("primary in {p} answers"),
                i.generation,
                now.clone(),
            );
            record_change(i, &prev, &mut gstatus, &mut notes, &p, ep);
            let (ph, rq) = plan_with_primary(
                i,
                g,
                &p,
                ep,
                &mut actions,
                &mut notes,
                &mut vstatus,
                &member_dcs,
            );
            phase = ph;
            requeue = rq;
        }
    }

    let primary_now = gstatus
        .primary_unreachable_since
        .is_none()
        .then(|| current_primary(i, g, &prev))
        .flatten();
    gstatus.members = member_statuses(i, g, primary_now.as_ref().map(|(p, _)| p.as_str()));
    if let Some((p, e)) = &primary_now {
        gstatus.primary = Some(p.clone());
        gstatus.epoch = *e;
    }
    gstatus.lag_bytes = gstatus
        .members
        .iter()
        .map(|m| m.lag_bytes)
        .max()
        .unwrap_or(0);
    let lag_seconds = gstatus
        .members
        .iter()
        .map(|m| m.lag_seconds)
        .fold(0.0, f64::max);
    gstatus.phase = Some(phase.as_str().to_string());
    let in_sync = gstatus
        .members
        .iter()
        .all(|m| m.state == MemberState::InSync);
    conditions::set(
        &mut gstatus.conditions,
        conditions::IN_SYNC,
        in_sync,
        if in_sync { "AllInSync" } else { "MemberBehind" },
        describe_members(&gstatus.members),
        None,
        now.clone(),
    );
    conditions::set(
        &mut vstatus.conditions,
        conditions::IN_SYNC,
        in_sync,
        if in_sync { "AllInSync" } else { "MemberBehind" },
        describe_members(&gstatus.members),
        i.generation,
        now.clone(),
    );
    let ready = phase == VolumePhase::Ready;
    conditions::set(
        &mut gstatus.conditions,
        conditions::READY,
        ready,
        phase.as_str(),
        format!("phase {}", phase.as_str()),
        None,
        now.clone(),
    );
    // The group is about its replicas; the volume also about its frontends.
    let phase = super::frontend::fold(
        &i.frontend_faults,
        phase,
        i.previous,
        &mut vstatus,
        &mut notes,
        i.generation,
        &now,
    );

    vstatus.phase = phase;
    vstatus.primary_data_center = gstatus.primary.clone();
    vstatus.epoch = gstatus.epoch;
    vstatus.lag_bytes = gstatus.lag_bytes;
    vstatus.lag_seconds = lag_seconds;
    if i.previous.map(|p| p.phase) != Some(phase) {
        notes.push(Note {
            warning: matches!(phase, VolumePhase::Degraded | VolumePhase::Failed),
            reason: "PhaseChanged",
            message: format!("phase {}", phase.as_str()),
        });
    }
    Plan {
        actions,
        volume_status: vstatus,
        group_status: Some(gstatus),
        notes,
        requeue,
    }
}

fn current_primary(
    i: &Input,
    g: &CopyVolumeGroup,
    prev: &CopyVolumeGroupStatus,
) -> Option<(String, u64)> {
    claimed_primary(i, g).filter(|(_, e)| *e >= prev.epoch)
}

/// Steady state and planned relocation, with the primary `p` at epoch `ep` answering.
#[allow(clippy::too_many_arguments)]
fn plan_with_primary(
    i: &Input,
    g: &CopyVolumeGroup,
    p: &str,
    ep: u64,
    actions: &mut Vec<Action>,
    notes: &mut Vec<Note>,
    vstatus: &mut VirtualVolumeStatus,
    member_dcs: &[String],
) -> (VolumePhase, Duration) {
    let spec = &g.spec;
    let now = time(i.now);
    if ep > spec.epoch || (ep == spec.epoch && spec.desired_primary != p) {
        actions.push(Action::WriteIntent {
            primary: p.to_string(),
            epoch: ep,
            reason: IntentReason::Adopt,
        });
        notes.push(Note {
            warning: false,
            reason: "PrimaryAdopted",
            message: format!("storage systems report {p} primary at epoch {ep}; recorded"),
        });
        return (VolumePhase::Relocating, Duration::from_secs(1));
    }
    if spec.epoch > ep {
        let d = &spec.desired_primary;
        let msg;
        if d == p {
            actions.push(Action::Promote {
                dc: p.to_string(),
                epoch: spec.epoch,
            });
            msg = format!("raising {p} to epoch {}", spec.epoch);
        } else if present(i, d).is_some() {
            actions.push(Action::Transfer {
                from: p.to_string(),
                to: d.clone(),
                epoch: spec.epoch,
            });
            msg = format!("moving the primary from {p} to {d} at epoch {}", spec.epoch);
        } else {
            msg = format!("moving the primary from {p} to {d}: {d} is not reachable yet");
        }
        conditions::set(
            &mut vstatus.conditions,
            conditions::RELOCATING,
            true,
            "RelocationInProgress",
            &msg,
            i.generation,
            now.clone(),
        );
        conditions::set(
            &mut vstatus.conditions,
            conditions::READY,
            false,
            "Relocating",
            &msg,
            i.generation,
            now,
        );
        return (VolumePhase::Relocating, Duration::from_secs(1));
    }

    // Steady: every reachable member configured at the primary's epoch.
    for m in &spec.members {
        if let Some(r) = present(i, &m.data_center) {
            let stale = r.epoch < ep
                || r.role == MemberRole::None
                || (r.role == MemberRole::Primary && m.data_center != p);
            if stale {
                actions.push(Action::Configure {
                    dc: m.data_center.clone(),
                    primary: p.to_string(),
                    epoch: ep,
                });
            }
        }
    }
    conditions::set(
        &mut vstatus.conditions,
        conditions::RELOCATING,
        false,
        "PrimaryInPlace",
        format!("primary in {p}"),
        i.generation,
        now.clone(),
    );

    // Where the primary belongs: nearest to where the volume is wanted or,
    // when it is wanted nowhere, where it is, unless that data center is
    // cordoned (choose_primary never picks a cordoned member).
    let here = i.wanted_dc.as_deref().unwrap_or(p);
    let cordoned = proximity::is_cordoned(p, i.data_centers);
    let mut target = proximity::choose_primary(here, member_dcs, i.data_centers).or_else(|| {
        // A cordon moves the primary even where no distance is known: to
        // the first uncordoned member by name, as ties go.
        cordoned
            .then(|| {
                member_dcs
                    .iter()
                    .filter(|m| !proximity::is_cordoned(m, i.data_centers))
                    .min()
                    .cloned()
            })
            .flatten()
    });
    if i.attached && cordoned && target.as_deref().is_some_and(|t| t != p) {
        // Moving it would fence the running frontend out from under its
        // pod: the cordon waits for the volume to be detached.
        target = None;
        conditions::set(
            &mut vstatus.conditions,
            conditions::RELOCATING,
            false,
            "CordonWaitsForDetach",
            format!(
                "primary in cordoned {p} stays while the volume is attached to a node; it \
                 moves once the pod stops"
            ),
            i.generation,
            now.clone(),
        );
    }
    if let Some(t) = target.filter(|t| t != p) {
        if present(i, &t).is_some() {
            let epoch = ep + 1;
            actions.push(Action::WriteIntent {
                primary: t.clone(),
                epoch,
                reason: IntentReason::Relocate,
            });
            let msg = format!(
                "wanted in {}: moving the primary from {p} to {t} at epoch {epoch}",
                i.wanted_dc.as_deref().unwrap_or(&t)
            );
            notes.push(Note {
                warning: false,
                reason: "RelocationStarted",
                message: msg.clone(),
            });
            conditions::set(
                &mut vstatus.conditions,
                conditions::RELOCATING,
                true,
                "RelocationStarted",
                &msg,
                i.generation,
                now.clone(),
            );
            conditions::set(
                &mut vstatus.conditions,
                conditions::READY,
                false,
                "Relocating",
                &msg,
                i.generation,
                now,
            );
            return (VolumePhase::Relocating, Duration::from_millis(200));
        }
        notes.push(Note {
            warning: true,
            reason: "RelocationWaiting",
            message: format!(
                "wanted in {t} but its replica is not reachable; primary stays in {p}"
            ),
        });
    }

    let unhealthy: Vec<&str> = spec
        .members
        .iter()
        .filter(|m| !matches!(i.replicas.get(&m.data_center), Some(ReplicaObs::Present(_))))
        .map(|m| m.data_center.as_str())
        .collect();
    let configuring = actions
        .iter()
        .any(|a| matches!(a, Action::Configure { .. } | Action::CreateReplica { .. }));
    if !unhealthy.is_empty() {
        let msg = format!(
            "primary in {p}; members not reachable or not created: {}",
            unhealthy.join(", ")
        );
        conditions::set(
            &mut vstatus.conditions,
            conditions::READY,
            false,
            "MemberUnreachable",
            msg,
            i.generation,
            now,
        );
        (VolumePhase::Degraded, Duration::from_secs(3))
    } else if configuring {
        conditions::set(
            &mut vstatus.conditions,
            conditions::READY,
            false,
            "Configuring",
            format!("primary in {p}; configuring members"),
            i.generation,
            now,
        );
        (VolumePhase::Creating, Duration::from_secs(1))
    } else {
        conditions::set(
            &mut vstatus.conditions,
            conditions::READY,
            true,
            "Ready",
            format!("primary in {p} at epoch {ep}"),
            i.generation,
            now,
        );
        (VolumePhase::Ready, READY_RESYNC)
    }
}

/// Whether the group's pending intent is a failover a person asked for
/// (`kubectl roam promote`): the annotation names the intent's epoch.
fn promote_asked(g: &CopyVolumeGroup) -> bool {
    g.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(roam_crds::PROMOTE_EPOCH_ANNOTATION))
        .and_then(|e| e.parse::<u64>().ok())
        == Some(g.spec.epoch)
}

/// Record a finished change of primary (seen as the primary or epoch moving).
fn record_change(
    i: &Input,
    prev: &CopyVolumeGroupStatus,
    gstatus: &mut CopyVolumeGroupStatus,
    notes: &mut Vec<Note>,
    p: &str,
    ep: u64,
) {
    let Some(old) = prev.primary.as_deref() else {
        return;
    };
    if old == p || ep <= prev.epoch {
        return;
    }
    let at = time(i.now);
    if prev.primary_unreachable_since.is_some() {
        let lost_report = prev.members.iter().find(|m| m.data_center == p);
        let (loss_b, loss_s) = match i.spec.transfer_type {
            TransferType::Sync => (0, 0.0),
            TransferType::Async => lost_report
                .map(|m| (m.lag_bytes, m.lag_seconds))
                .unwrap_or((0, 0.0)),
        };
        gstatus.last_failover = Some(FailoverRecord {
            from: old.into(),
            to: p.into(),
            epoch: ep,
            possible_loss_bytes: loss_b,
            possible_loss_seconds: loss_s,
            at,
        });
        notes.push(Note {
            warning: true,
            reason: "FailedOver",
            message: format!("{p} promoted at epoch {ep} after {old} was lost; writes possibly lost: {loss_b} bytes ({loss_s:.1}s)"),
        });
    } else {
        let duration_millis = i
            .intent_at
            .map(|t| i.now.duration_since(t).unsigned_abs().as_millis() as u64)
            .unwrap_or(0);
        gstatus.last_relocation = Some(RelocationRecord {
            from: old.into(),
            to: p.into(),
            epoch: ep,
            duration_millis,
            at,
        });
        notes.push(Note {
            warning: false,
            reason: "Relocated",
            message: format!(
                "primary moved from {old} to {p} at epoch {ep} in {duration_millis} ms"
            ),
        });
    }
}

/// The most up-to-date reachable member of the recorded in-sync set other
/// than `lost`: highest durable sequence, then the one nearest to where the
/// volume is wanted, then name.
pub fn failover_candidate(i: &Input, g: &CopyVolumeGroup, lost: &str) -> Option<String> {
    let record = directory::Record::of(g);
    let preferred = i.wanted_dc.as_deref().and_then(|w| {
        let others: Vec<String> = g.member_dcs().into_iter().filter(|d| d != lost).collect();
        proximity::choose_primary(w, &others, i.data_centers)
    });
    g.spec
        .members
        .iter()
        .filter(|m| m.data_center != lost && record.in_sync(&m.data_center))
        .filter_map(|m| present(i, &m.data_center).map(|r| (m.data_center.clone(), r.durable_seq)))
        .max_by(|(a, sa), (b, sb)| {
            sa.cmp(sb)
                .then((Some(a) == preferred.as_ref()).cmp(&(Some(b) == preferred.as_ref())))
                .then(b.cmp(a))
        })
        .map(|(dc, _)| dc)
}

fn waiting_message(i: &Input, g: &CopyVolumeGroup) -> String {
    let waiting: Vec<String> = g
        .spec
        .members
        .iter()
        .filter_map(|m| match i.replicas.get(&m.data_center) {
            Some(ReplicaObs::Present(_)) => None,
            Some(ReplicaObs::Missing) => Some(format!("{} (creating)", m.data_center)),
            Some(ReplicaObs::Unreachable(_)) | None => {
                Some(format!("{} (unreachable)", m.data_center))
            }
        })
        .collect();
    if waiting.is_empty() {
        "configuring the group".into()
    } else {
        format!("waiting for {}", waiting.join(", "))
    }
}

fn describe_members(members: &[MemberStatus]) -> String {
    members
        .iter()
        .map(|m| format!("{}={:?}/{:?}", m.data_center, m.role, m.state))
        .collect::<Vec<_>>()
        .join(", ")
}
