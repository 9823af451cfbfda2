//! `relocate` and `promote`: decide (pure) whether a change of primary may be
//! asked for, then ask for it the way the operator itself records one.
//!
//! The operator's durable intent is the CopyVolumeGroup spec:
//! `desiredPrimary` and an `epoch` one above every epoch seen, with the
//! `roam.dev/intent-at` annotation, written as a compare-and-swap on the
//! resourceVersion. The operator turns a pending intent into
//! `TransferPrimary` when the current primary answers (a planned move:
//! flush or drain first, nothing lost) or into `Promote` when it does not
//! (a failover), so these commands add no second way of moving a primary.
//! A promotion asked for while the primary does not answer also carries
//! `roam.dev/promote-epoch` (the intent's epoch): the sign that a person
//! chose it, which a volume in `Manual` failover mode waits for.
//!
//! Caveats: the operator moves the primary back to where the volume is
//! wanted (its pod's data center), so `relocate` refuses to fight a running
//! pod; the admission policy of the chart lets only the operator and cluster
//! admins write CopyVolumeGroups.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use roam_crds::{CopyVolumeGroup, DataCenter, MemberState, TransferType, VirtualVolume, proximity};
use serde_json::json;

use crate::{error::Error, units};

/// Annotation the operator reads for when the pending intent was written (the
/// relocation's duration is measured from it).
pub const INTENT_AT_ANNOTATION: &str = "roam.dev/intent-at";
/// Field manager of the writes made by this plugin.
pub const FIELD_MANAGER: &str = "kubectl-roam";

/// A change of primary to write into the group spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    pub primary: String,
    pub epoch: u64,
    /// A failover a person asked for (the primary does not answer): marked
    /// with [`roam_crds::PROMOTE_EPOCH_ANNOTATION`].
    pub failover: bool,
}

/// What a promotion may lose.
#[derive(Clone, Debug, PartialEq)]
pub enum Loss {
    /// Nothing: the primary answers (a planned move), or the member holds
    /// every acknowledged write.
    Nothing,
    /// At most this much, as last reported.
    AtMost { bytes: u64, seconds: f64 },
    /// Not known: the member was not being kept in sync when last seen.
    Unknown(String),
}

impl Loss {
    pub fn is_zero(&self) -> bool {
        match self {
            Self::Nothing => true,
            Self::AtMost { bytes, seconds } => *bytes == 0 && *seconds <= 0.0,
            Self::Unknown(_) => false,
        }
    }
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Nothing => f.write_str("nothing"),
            Self::AtMost { bytes, seconds } => {
                write!(f, "up to {}", units::lag(*bytes, *seconds))
            }
            Self::Unknown(why) => write!(f, "an unknown amount ({why})"),
        }
    }
}

/// The decision of `relocate` or `promote`.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// `to` is primary already and nothing is pending.
    AlreadyPrimary,
    /// An intent for `to` is pending already: only wait.
    Pending { epoch: u64 },
    /// Write this intent.
    Write(Intent),
}

fn volume_name(vv: &VirtualVolume) -> String {
    format!("{}/{}", vv.namespace().unwrap_or_default(), vv.name_any())
}

fn group_of<'a>(
    vv: &VirtualVolume,
    g: Option<&'a CopyVolumeGroup>,
) -> Result<&'a CopyVolumeGroup, Error> {
    g.ok_or_else(|| Error::NoGroup {
        volume: volume_name(vv),
        phase: vv
            .status
            .as_ref()
            .map_or("Pending", |s| s.phase.as_str())
            .to_string(),
    })
}

/// The checks both commands share: `to` is a member; nothing else pending.
/// A promotion while the primary does not answer may replace a pending
/// intent (`replace_pending`): a relocation the loss cut short never
/// finishes, and the new intent's higher epoch fences whatever the old one
/// started.
fn common(
    vv: &VirtualVolume,
    g: &CopyVolumeGroup,
    to: &str,
    replace_pending: bool,
) -> Result<Option<Decision>, Error> {
    let volume = volume_name(vv);
    if g.member(to).is_none() {
        return Err(Error::NotAMember {
            volume,
            to: to.into(),
            members: g.member_dcs().join(", "),
        });
    }
    let status = g.status.clone().unwrap_or_default();
    let pending = g.spec.epoch > status.epoch
        || status.primary.as_deref() != Some(g.spec.desired_primary.as_str());
    if pending && status.primary.is_some() && !replace_pending {
        if g.spec.desired_primary == to {
            return Ok(Some(Decision::Pending {
                epoch: g.spec.epoch,
            }));
        }
        return Err(Error::Refused {
            volume,
            why: format!(
                "the primary is already moving to {} at epoch {}; wait for it to finish",
                g.spec.desired_primary, g.spec.epoch
            ),
        });
    }
    if status.primary.is_none() {
        return Err(Error::Refused {
            volume,
            why: "no primary has been confirmed yet (the group is still being set up)".into(),
        });
    }
    if status.primary.as_deref() == Some(to) && status.primary_unreachable_since.is_none() {
        return Ok(Some(Decision::AlreadyPrimary));
    }
    Ok(None)
}

fn next_epoch(g: &CopyVolumeGroup) -> u64 {
    let status = g.status.clone().unwrap_or_default();
    let held = status.members.iter().map(|m| m.epoch).max().unwrap_or(0);
    g.spec.epoch.max(status.epoch).max(held) + 1
}

/// `relocate VV --to DC`: a planned move, only while the primary answers.
pub fn plan_relocate(
    vv: &VirtualVolume,
    g: Option<&CopyVolumeGroup>,
    to: &str,
    data_centers: &[DataCenter],
) -> Result<Decision, Error> {
    let g = group_of(vv, g)?;
    if let Some(d) = common(vv, g, to, false)? {
        return Ok(d);
    }
    let volume = volume_name(vv);
    let status = g.status.clone().unwrap_or_default();
    if status.primary_unreachable_since.is_some() {
        return Err(Error::Refused {
            volume,
            why: format!(
                "the primary in {} does not answer, so it cannot hand over; \
                 use `kubectl roam promote` for a failover",
                status.primary.unwrap_or_default()
            ),
        });
    }
    let target = status.members.iter().find(|m| m.data_center == to);
    if target.is_none_or(|m| m.state == MemberState::Unreachable) {
        return Err(Error::Refused {
            volume,
            why: format!("the storage system of {to} does not answer"),
        });
    }
    let wanted = vv
        .status
        .as_ref()
        .and_then(|s| s.wanted_data_center.clone());
    if let Some(w) = wanted
        && let Some(follow) = proximity::choose_primary(&w, &g.member_dcs(), data_centers)
        && follow != to
    {
        return Err(Error::Refused {
            volume,
            why: format!(
                "it is in use in {w}, and the primary follows its pod back to {follow}; \
                 move the pod to {to} instead"
            ),
        });
    }
    Ok(Decision::Write(Intent {
        primary: to.into(),
        epoch: next_epoch(g),
        failover: false,
    }))
}

/// What promoting `to` may lose (DESIGN section 4): nothing while the
/// primary answers (the move is planned and drains first); else the member's
/// last reported lag.
pub fn possible_loss(g: &CopyVolumeGroup, to: &str) -> Loss {
    let status = g.status.clone().unwrap_or_default();
    if status.primary_unreachable_since.is_none() {
        return Loss::Nothing;
    }
    let Some(m) = status.members.iter().find(|m| m.data_center == to) else {
        return Loss::Unknown(format!("{to} has not reported"));
    };
    match (m.state, g.spec.transfer_type) {
        (MemberState::InSync, TransferType::Sync) => Loss::Nothing,
        (MemberState::InSync | MemberState::Lagging, _) => Loss::AtMost {
            bytes: m.lag_bytes,
            seconds: m.lag_seconds,
        },
        (state, _) => Loss::Unknown(format!("{to} was {state:?} when last seen")),
    }
}

/// `promote VV --to DC`: a manual failover. Refused when the promotion may
/// lose writes, unless `accept_loss`.
pub fn plan_promote(
    vv: &VirtualVolume,
    g: Option<&CopyVolumeGroup>,
    to: &str,
    accept_loss: bool,
) -> Result<(Decision, Loss), Error> {
    let g = group_of(vv, g)?;
    let loss = possible_loss(g, to);
    let status = g.status.clone().unwrap_or_default();
    let lost = status.primary_unreachable_since.is_some();
    let asked = |epoch: u64| {
        g.annotations()
            .get(roam_crds::PROMOTE_EPOCH_ANNOTATION)
            .is_some_and(|e| *e == epoch.to_string())
    };
    if let Some(d) = common(vv, g, to, lost)? {
        return Ok((d, loss));
    }
    // This very promotion was asked for already: only wait for it.
    if lost && g.spec.desired_primary == to && g.spec.epoch > status.epoch && asked(g.spec.epoch) {
        return Ok((
            Decision::Pending {
                epoch: g.spec.epoch,
            },
            loss,
        ));
    }
    let volume = volume_name(vv);
    if status.primary.as_deref() == Some(to) {
        return Err(Error::Refused {
            volume,
            why: format!("{to} is the primary that does not answer; promote another member"),
        });
    }
    if status
        .members
        .iter()
        .find(|m| m.data_center == to)
        .is_some_and(|m| m.state == MemberState::Unreachable)
    {
        return Err(Error::Refused {
            volume,
            why: format!("the storage system of {to} does not answer; promote a member that does"),
        });
    }
    if !loss.is_zero() && !accept_loss {
        return Err(Error::LossNotAccepted {
            volume,
            to: to.into(),
            loss: loss.to_string(),
        });
    }
    Ok((
        Decision::Write(Intent {
            primary: to.into(),
            epoch: next_epoch(g),
            failover: lost,
        }),
        loss,
    ))
}

/// Write the intent, as a compare-and-swap on the group `g` that was read.
pub async fn write_intent(
    api: &Api<CopyVolumeGroup>,
    g: &CopyVolumeGroup,
    intent: &Intent,
) -> Result<(), Error> {
    let name = g.name_any();
    let volume = format!("{}/{name}", g.namespace().unwrap_or_default());
    let mut annotations = json!({INTENT_AT_ANNOTATION: Timestamp::now().to_string()});
    if intent.failover {
        annotations[roam_crds::PROMOTE_EPOCH_ANNOTATION] = json!(intent.epoch.to_string());
    }
    let patch = json!({
        "metadata": {
            "resourceVersion": g.resource_version(),
            "annotations": annotations,
        },
        "spec": {"desiredPrimary": intent.primary, "epoch": intent.epoch},
    });
    match api
        .patch(
            &name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Conflict { volume }),
        Err(source) => Err(Error::Api {
            verb: "patch",
            kind: "CopyVolumeGroup",
            name: volume,
            source,
        }),
    }
}

/// Wait (on a watch, not a poll) until the group's status confirms `to` as
/// primary at `epoch` or later; returns the time waited.
pub async fn wait_primary(
    api: &Api<CopyVolumeGroup>,
    name: &str,
    to: &str,
    epoch: u64,
    timeout: Duration,
) -> Result<(Duration, CopyVolumeGroup), Error> {
    let start = Instant::now();
    let mut last = String::from("no status yet");
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api.clone(), cfg).applied_objects().boxed();
    let confirmed = |g: &CopyVolumeGroup| {
        g.status
            .as_ref()
            .is_some_and(|s| s.primary.as_deref() == Some(to) && s.epoch >= epoch)
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) | Ok(None) => {
                return Err(Error::Timeout {
                    volume: format!("{}/{name}", api_namespace(api)),
                    to: to.into(),
                    waited: start.elapsed(),
                    state: last,
                });
            }
            Ok(Some(Err(_))) => continue, // the watcher re-lists on its own after an error
            Ok(Some(Ok(g))) => {
                if confirmed(&g) {
                    return Ok((start.elapsed(), g));
                }
                if let Some(s) = &g.status {
                    last = format!(
                        "primary {} at epoch {}, phase {}",
                        s.primary.as_deref().unwrap_or("<none>"),
                        s.epoch,
                        s.phase.as_deref().unwrap_or("?")
                    );
                }
            }
        }
    }
}

fn api_namespace(api: &Api<CopyVolumeGroup>) -> String {
    api.namespace().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use roam_crds::{
        CopyVolumeGroupSpec, CopyVolumeGroupStatus, GroupMember, MemberRole, MemberStatus,
        VirtualVolumeStatus,
    };

    fn vv(wanted: Option<&str>) -> VirtualVolume {
        let spec = serde_json::from_value(serde_json::json!({
            "size": "1Gi", "dataCenters": ["a", "b", "c"], "transferType": "Async"
        }))
        .unwrap();
        let mut v = VirtualVolume::new("db", spec);
        v.metadata.namespace = Some("apps".into());
        v.status = Some(VirtualVolumeStatus {
            wanted_data_center: wanted.map(Into::into),
            ..Default::default()
        });
        v
    }

    fn member(dc: &str, role: MemberRole, state: MemberState, lag: u64) -> MemberStatus {
        MemberStatus {
            data_center: dc.into(),
            role,
            state,
            lag_bytes: lag,
            lag_seconds: if lag > 0 { 2.0 } else { 0.0 },
            epoch: 3,
            durable_seq: 10,
        }
    }

    fn group(transfer: TransferType, lost: bool, b: (MemberState, u64)) -> CopyVolumeGroup {
        let gm = |dc: &str| GroupMember {
            data_center: dc.into(),
            node: format!("{dc}-n1"),
            endpoint: String::new(),
            volume_id: "apps.db".into(),
        };
        let mut g = CopyVolumeGroup::new(
            "db",
            CopyVolumeGroupSpec {
                members: vec![gm("a"), gm("b"), gm("c")],
                desired_primary: "a".into(),
                epoch: 3,
                transfer_type: transfer,
                sync_level: roam_crds::SyncLevel::Write,
                failure_policy: roam_crds::FailurePolicy::Block,
                max_lag_bytes: 0,
                max_lag_seconds: 0,
                size_bytes: 1 << 30,
            },
        );
        g.metadata.namespace = Some("apps".into());
        g.status = Some(CopyVolumeGroupStatus {
            primary: Some("a".into()),
            epoch: 3,
            primary_unreachable_since: lost.then(|| Time(Timestamp::now())),
            members: vec![
                member("a", MemberRole::Primary, MemberState::InSync, 0),
                member("b", MemberRole::Secondary, b.0, b.1),
                member("c", MemberRole::Secondary, MemberState::Unreachable, 0),
            ],
            ..Default::default()
        });
        g
    }

    #[test]
    fn relocate_writes_the_next_epoch() {
        let g = group(TransferType::Sync, false, (MemberState::InSync, 0));
        let d = plan_relocate(&vv(None), Some(&g), "b", &[]).unwrap();
        assert_eq!(
            d,
            Decision::Write(Intent {
                primary: "b".into(),
                epoch: 4,
                failover: false,
            })
        );
        assert_eq!(
            plan_relocate(&vv(None), Some(&g), "a", &[]).unwrap(),
            Decision::AlreadyPrimary
        );
    }

    #[test]
    fn relocate_refuses_what_cannot_work() {
        let g = group(TransferType::Sync, false, (MemberState::InSync, 0));
        assert!(matches!(
            plan_relocate(&vv(None), Some(&g), "x", &[]),
            Err(Error::NotAMember { .. })
        ));
        assert!(matches!(
            plan_relocate(&vv(None), Some(&g), "c", &[]),
            Err(Error::Refused { .. })
        ));
        assert!(matches!(
            plan_relocate(&vv(Some("a")), Some(&g), "b", &[]),
            Err(Error::Refused { .. })
        ));
        assert!(matches!(
            plan_relocate(&vv(None), None, "b", &[]),
            Err(Error::NoGroup { .. })
        ));
        let lost = group(TransferType::Sync, true, (MemberState::InSync, 0));
        assert!(matches!(
            plan_relocate(&vv(None), Some(&lost), "b", &[]),
            Err(Error::Refused { .. })
        ));
        let mut moving = g.clone();
        moving.spec.desired_primary = "b".into();
        moving.spec.epoch = 4;
        assert_eq!(
            plan_relocate(&vv(None), Some(&moving), "b", &[]).unwrap(),
            Decision::Pending { epoch: 4 }
        );
        assert!(matches!(
            plan_relocate(&vv(None), Some(&moving), "c", &[]),
            Err(Error::Refused { .. })
        ));
    }

    #[test]
    fn promote_needs_accept_loss_when_writes_may_be_lost() {
        let g = group(TransferType::Async, true, (MemberState::Lagging, 4096));
        let err = plan_promote(&vv(None), Some(&g), "b", false).unwrap_err();
        assert!(err.to_string().contains("4.0 KiB"), "{err}");
        assert!(matches!(err, Error::LossNotAccepted { .. }));
        let (d, loss) = plan_promote(&vv(None), Some(&g), "b", true).unwrap();
        assert_eq!(
            d,
            Decision::Write(Intent {
                primary: "b".into(),
                epoch: 4,
                failover: true,
            })
        );
        assert_eq!(
            loss,
            Loss::AtMost {
                bytes: 4096,
                seconds: 2.0
            }
        );
    }

    #[test]
    fn promote_without_loss_needs_no_flag() {
        let sync = group(TransferType::Sync, true, (MemberState::InSync, 0));
        assert!(plan_promote(&vv(None), Some(&sync), "b", false).is_ok());
        let healthy = group(TransferType::Async, false, (MemberState::Lagging, 4096));
        let (_, loss) = plan_promote(&vv(None), Some(&healthy), "b", false).unwrap();
        assert_eq!(loss, Loss::Nothing);
    }

    #[test]
    fn promote_of_a_lost_primary_replaces_a_pending_intent_once() {
        // A relocation to c was pending when the primary was lost.
        let mut g = group(TransferType::Sync, true, (MemberState::InSync, 0));
        g.spec.desired_primary = "c".into();
        g.spec.epoch = 4;
        g.status.as_mut().unwrap().members[2].state = MemberState::InSync;
        let (d, _) = plan_promote(&vv(None), Some(&g), "b", false).unwrap();
        assert_eq!(
            d,
            Decision::Write(Intent {
                primary: "b".into(),
                epoch: 5,
                failover: true,
            })
        );
        // Promoting the pending target itself marks it as asked for ...
        let (d, _) = plan_promote(&vv(None), Some(&g), "c", false).unwrap();
        assert_eq!(
            d,
            Decision::Write(Intent {
                primary: "c".into(),
                epoch: 5,
                failover: true,
            })
        );
        // ... and once marked, asking again only waits.
        g.metadata.annotations = Some(
            [(
                roam_crds::PROMOTE_EPOCH_ANNOTATION.to_string(),
                "4".to_string(),
            )]
            .into(),
        );
        let (d, _) = plan_promote(&vv(None), Some(&g), "c", false).unwrap();
        assert_eq!(d, Decision::Pending { epoch: 4 });
        // While the primary answers, a pending move is not replaced.
        let mut healthy = group(TransferType::Sync, false, (MemberState::InSync, 0));
        healthy.spec.desired_primary = "c".into();
        healthy.spec.epoch = 4;
        assert!(matches!(
            plan_promote(&vv(None), Some(&healthy), "b", false),
            Err(Error::Refused { .. })
        ));
    }

    #[test]
    fn promote_of_an_unknown_position_is_a_possible_loss() {
        let g = group(TransferType::Sync, true, (MemberState::Resyncing, 0));
        assert!(matches!(
            plan_promote(&vv(None), Some(&g), "b", false),
            Err(Error::LossNotAccepted { .. })
        ));
        assert!(matches!(
            plan_promote(&vv(None), Some(&g), "c", true),
            Err(Error::Refused { .. })
        ));
    }
}
