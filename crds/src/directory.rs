//! The directory's rules for a group's primary lease and in-sync set, read
//! from its CopyVolumeGroup: what the storage systems (through the
//! Kubernetes API, `roam-csi storage --directory kubernetes`) and the
//! operator's failover both hold to, written once.
//!
//! The record:
//! - **Held epoch and its primary.** The epoch the storage systems were last
//!   seen at (`status.epoch`, `status.primary`), unless a failover has fenced
//!   the group at a newer one (the [`FENCE_EPOCH_ANNOTATION`], naming
//!   `spec.desiredPrimary`). A planned transfer does not fence: the old
//!   primary keeps its lease until it hands over, which fences it on the
//!   storage side.
//! - **Out of sync** (`status.outOfSync`): members the primary goes on
//!   without. Written only through the directory, with a resourceVersion
//!   precondition, never by the operator's status writes.
//!
//! The rules:
//! - a call at an epoch older than the held one is refused: another primary
//!   exists, and the caller fences itself;
//! - at the held epoch, only its primary holds a lease (above it, a hand-over
//!   is under way and the new primary renews at the new epoch);
//! - a lease holds [`PRIMARY_LEASE`] from the moment the holder asked, so it
//!   has run out [`PRIMARY_LEASE`] after the fence was recorded: a renewal
//!   that began later read the fence and was refused. The operator promotes
//!   only after that.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::CopyVolumeGroup;

/// How long a primary's lease holds from the moment it asked. A primary cut
/// off from the API server stops acknowledging this long after its last
/// renewal; a failover waits this long after the fence.
pub const PRIMARY_LEASE: Duration = Duration::from_secs(15);

/// On a CopyVolumeGroup: the epoch a failover fenced the group at. From it
/// on, no lease is granted below it, nor at it to anyone but
/// `spec.desiredPrimary`.
pub const FENCE_EPOCH_ANNOTATION: &str = "roam.dev/fence-epoch";

/// On a CopyVolumeGroup: when the fence was seen recorded (RFC 3339,
/// written after the fence itself was); the promotion waits until
/// [`PRIMARY_LEASE`] after it.
pub const FENCED_AT_ANNOTATION: &str = "roam.dev/fenced-at";

/// What the directory holds for one group.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Record {
    pub epoch: u64,
    /// Primary at `epoch`; `None` before the group was first seen configured.
    pub primary: Option<String>,
    pub out_of_sync: BTreeSet<String>,
}

/// A call the directory refuses because it holds a newer epoch, or the
/// caller is not the primary it holds at this one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the directory holds epoch {held} with primary {primary:?}; refused at epoch {asked}")]
pub struct Superseded {
    pub held: u64,
    pub primary: Option<String>,
    pub asked: u64,
}

impl Record {
    pub fn of(g: &CopyVolumeGroup) -> Record {
        let status = g.status.clone().unwrap_or_default();
        let fence = fence_epoch(g).filter(|f| *f > status.epoch);
        let (epoch, primary) = match fence {
            Some(f) => (f, Some(g.spec.desired_primary.clone())),
            None => (status.epoch, status.primary.clone()),
        };
        Record {
            epoch,
            primary,
            out_of_sync: status.out_of_sync.iter().cloned().collect(),
        }
    }

    fn superseded(&self, asked: u64) -> Superseded {
        Superseded {
            held: self.epoch,
            primary: self.primary.clone(),
            asked,
        }
    }

    /// A record call (in or out of sync) at `epoch`.
    pub fn check_record(&self, epoch: u64) -> Result<(), Superseded> {
        if epoch < self.epoch {
            return Err(self.superseded(epoch));
        }
        Ok(())
    }

    /// A lease for `holder`, primary at `epoch`.
    pub fn check_lease(&self, epoch: u64, holder: &str) -> Result<(), Superseded> {
        self.check_record(epoch)?;
        if epoch == self.epoch
            && let Some(p) = &self.primary
            && p != holder
        {
            return Err(self.superseded(epoch));
        }
        Ok(())
    }

    /// Whether `member` may be promoted: it is not recorded out of sync.
    pub fn in_sync(&self, member: &str) -> bool {
        !self.out_of_sync.contains(member)
    }
}

/// The epoch a failover fenced `g` at, if any.
pub fn fence_epoch(g: &CopyVolumeGroup) -> Option<u64> {
    annotation(g, FENCE_EPOCH_ANNOTATION).and_then(|v| v.parse().ok())
}

/// When the fence at `spec.epoch` was seen recorded, if it was.
pub fn fenced_at(g: &CopyVolumeGroup) -> Option<k8s_openapi::jiff::Timestamp> {
    if fence_epoch(g) != Some(g.spec.epoch) {
        return None;
    }
    annotation(g, FENCED_AT_ANNOTATION).and_then(|v| v.parse().ok())
}

fn annotation<'a>(g: &'a CopyVolumeGroup, key: &str) -> Option<&'a str> {
    g.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The namespace and name of the CopyVolumeGroup of a real volume id
/// (`<namespace>.<name>`, see [`crate::real_volume_id`]; namespaces hold no
/// dots).
pub fn group_of_volume(volume_id: &str) -> Option<(&str, &str)> {
    volume_id
        .split_once('.')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CopyVolumeGroupSpec, CopyVolumeGroupStatus};
    use std::collections::BTreeMap;

    fn group(status_epoch: u64, primary: &str, desired: &str, spec_epoch: u64) -> CopyVolumeGroup {
        let mut g = CopyVolumeGroup::new(
            "v",
            CopyVolumeGroupSpec {
                members: vec![],
                desired_primary: desired.into(),
                epoch: spec_epoch,
                transfer_type: Default::default(),
                sync_level: Default::default(),
                failure_policy: Default::default(),
                max_lag_bytes: 0,
                max_lag_seconds: 0,
                size_bytes: 0,
            },
        );
        g.status = Some(CopyVolumeGroupStatus {
            primary: Some(primary.into()),
            epoch: status_epoch,
            ..Default::default()
        });
        g
    }

    fn fence(g: &mut CopyVolumeGroup, epoch: u64) {
        g.metadata.annotations = Some(BTreeMap::from([(
            FENCE_EPOCH_ANNOTATION.to_string(),
            epoch.to_string(),
        )]));
    }

    #[test]
    fn the_primary_seen_keeps_its_lease_through_a_planned_transfer() {
        // Intent to move to dc-b at 4; dc-a still primary at 3.
        let g = group(3, "dc-a", "dc-b", 4);
        let r = Record::of(&g);
        assert_eq!(r.check_lease(3, "dc-a"), Ok(()));
        // The target, once handed over, renews at the new epoch.
        assert_eq!(r.check_lease(4, "dc-b"), Ok(()));
        // Nobody else at the held epoch, nobody below it.
        assert!(r.check_lease(3, "dc-b").is_err());
        assert_eq!(r.check_lease(2, "dc-a").unwrap_err().held, 3);
    }

    #[test]
    fn a_fence_refuses_the_old_primary_its_lease_and_its_records() {
        let mut g = group(3, "dc-a", "dc-b", 4);
        fence(&mut g, 4);
        let r = Record::of(&g);
        let refused = r.check_lease(3, "dc-a").unwrap_err();
        assert_eq!((refused.held, refused.asked), (4, 3));
        assert!(r.check_record(3).is_err());
        // The candidate promoted at the fence's epoch holds it.
        assert_eq!(r.check_lease(4, "dc-b"), Ok(()));
        assert!(r.check_lease(4, "dc-a").is_err());
    }

    #[test]
    fn a_fence_older_than_what_was_seen_changes_nothing() {
        let mut g = group(5, "dc-a", "dc-a", 5);
        fence(&mut g, 4);
        let r = Record::of(&g);
        assert_eq!((r.epoch, r.primary.as_deref()), (5, Some("dc-a")));
        assert_eq!(r.check_lease(5, "dc-a"), Ok(()));
    }

    #[test]
    fn a_group_never_seen_configured_grants_its_first_primary() {
        let mut g = group(0, "dc-a", "dc-a", 1);
        g.status = None;
        assert_eq!(Record::of(&g).check_lease(1, "dc-a"), Ok(()));
    }

    #[test]
    fn the_fence_time_counts_only_for_the_current_epoch() {
        let mut g = group(3, "dc-a", "dc-b", 4);
        g.metadata.annotations = Some(BTreeMap::from([
            (FENCE_EPOCH_ANNOTATION.to_string(), "3".to_string()),
            (
                FENCED_AT_ANNOTATION.to_string(),
                "2026-12-01T00:00:00Z".to_string(),
            ),
        ]));
        assert_eq!(fenced_at(&g), None);
        fence(&mut g, 4);
        g.metadata.annotations.as_mut().unwrap().insert(
            FENCED_AT_ANNOTATION.to_string(),
            "2026-12-01T00:00:00Z".to_string(),
        );
        assert!(fenced_at(&g).is_some());
    }

    #[test]
    fn volume_ids_name_their_group() {
        assert_eq!(
            group_of_volume("team-a.pg.data"),
            Some(("team-a", "pg.data"))
        );
        assert_eq!(group_of_volume("nodot"), None);
        assert_eq!(group_of_volume(".x"), None);
    }
}
