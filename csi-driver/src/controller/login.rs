//! The log-in decision (claim 13), as a pure function: given the volume, its
//! group, the data center the volume is wanted in and the DataCenters, is the
//! primary where it should be, and if so what does the host get?
//!
//! The operator moves the primary; ControllerPublishVolume polls this until
//! it answers [`Login::Done`].

use roam_crds::{CopyVolumeGroup, DataCenter, VirtualVolume, proximity};

use crate::node::params::PublishContext;

#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    /// The primary is in `context.data_center`, at the group's epoch.
    Done(PublishContext),
    /// Not yet; why, for the log and the timeout message.
    Waiting(String),
}

/// See the module doc. `wanted_dc` is the data center of the node the
/// volume is published to.
pub fn login_state(
    volume: &VirtualVolume,
    group: Option<&CopyVolumeGroup>,
    wanted_dc: &str,
    data_centers: &[DataCenter],
) -> Login {
    let Some(group) = group else {
        return Login::Waiting("its CopyVolumeGroup does not exist yet".into());
    };
    let Some(vstatus) = volume.status.as_ref() else {
        return Login::Waiting("the VirtualVolume has no status yet".into());
    };
    let Some(gstatus) = group.status.as_ref() else {
        return Login::Waiting("the CopyVolumeGroup has no status yet".into());
    };
    let current = gstatus
        .primary
        .clone()
        .or_else(|| vstatus.primary_data_center.clone());
    let wanted_primary =
        match proximity::choose_primary(wanted_dc, &group.member_dcs(), data_centers) {
            Some(dc) => dc,
            // No member has a known distance to the wanted DC: keep the primary.
            None => match current {
                Some(dc) => dc,
                None => return Login::Waiting("the group has no primary yet".into()),
            },
        };
    let relocated = vstatus.primary_data_center.as_deref() == Some(&wanted_primary)
        && gstatus.primary.as_deref() == Some(&wanted_primary)
        && gstatus.epoch == vstatus.epoch
        && group.spec.epoch == gstatus.epoch
        && group.spec.desired_primary == wanted_primary;
    if !relocated {
        return Login::Waiting(format!(
            "primary is {} at epoch {} (group spec: {} at epoch {}), wanted {wanted_primary}",
            gstatus.primary.as_deref().unwrap_or("none"),
            gstatus.epoch,
            group.spec.desired_primary,
            group.spec.epoch,
        ));
    }
    let Some(member) = group.member(&wanted_primary) else {
        return Login::Waiting(format!("the group has no member in {wanted_primary}"));
    };
    Login::Done(PublishContext {
        storage_endpoint: member.endpoint.clone(),
        volume_id: member.volume_id.clone(),
        epoch: gstatus.epoch,
        data_center: wanted_primary,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use roam_crds::*;

    use super::*;

    fn dc(name: &str, prox: &[(&str, u32)]) -> DataCenter {
        DataCenter::new(
            name,
            DataCenterSpec {
                cordoned: false,
                zone: None,
                node_selector: None,
                proximity: prox
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect::<BTreeMap<_, _>>(),
            },
        )
    }

    fn volume(primary: &str, epoch: u64) -> VirtualVolume {
        let mut v = VirtualVolume::new(
            "data",
            VirtualVolumeSpec {
                size: Quantity("1Gi".into()),
                data_centers: Some(vec!["a".into(), "b".into()]),
                replicas: None,
                transfer_type: TransferType::Sync,
                sync_level: SyncLevel::Write,
                max_lag_bytes: None,
                max_lag_seconds: None,
                failure_policy: FailurePolicy::Block,
                failover: FailoverPolicy::default(),
                fs_type: None,
            },
        );
        v.status = Some(VirtualVolumeStatus {
            primary_data_center: Some(primary.into()),
            epoch,
            ..Default::default()
        });
        v
    }

    fn group(desired: &str, spec_epoch: u64, primary: &str, epoch: u64) -> CopyVolumeGroup {
        let member = |dc: &str, port: u16| GroupMember {
            data_center: dc.into(),
            node: format!("node-{dc}"),
            endpoint: format!("http://127.0.0.1:{port}"),
            volume_id: "apps.data".into(),
        };
        let mut g = CopyVolumeGroup::new(
            "data",
            CopyVolumeGroupSpec {
                members: vec![member("a", 7101), member("b", 7102)],
                desired_primary: desired.into(),
                epoch: spec_epoch,
                transfer_type: TransferType::Sync,
                sync_level: SyncLevel::Write,
                failure_policy: FailurePolicy::Block,
                max_lag_bytes: 0,
                max_lag_seconds: 0,
                size_bytes: 1 << 30,
            },
        );
        g.status = Some(CopyVolumeGroupStatus {
            primary: Some(primary.into()),
            epoch,
            ..Default::default()
        });
        g
    }

    #[test]
    fn primary_already_in_the_wanted_dc_logs_in_at_once() {
        let dcs = [dc("a", &[]), dc("b", &[])];
        let login = login_state(&volume("a", 1), Some(&group("a", 1, "a", 1)), "a", &dcs);
        assert_eq!(
            login,
            Login::Done(PublishContext {
                storage_endpoint: "http://127.0.0.1:7101".into(),
                volume_id: "apps.data".into(),
                epoch: 1,
                data_center: "a".into(),
            })
        );
    }

    #[test]
    fn waits_until_the_primary_moved_and_the_epoch_settled() {
        let dcs = [dc("a", &[]), dc("b", &[])];
        // Operator has not started.
        assert!(matches!(
            login_state(&volume("a", 1), Some(&group("a", 1, "a", 1)), "b", &dcs),
            Login::Waiting(_)
        ));
        // Intent written, storage systems not done.
        assert!(matches!(
            login_state(&volume("a", 1), Some(&group("b", 2, "a", 1)), "b", &dcs),
            Login::Waiting(_)
        ));
        // Group moved, VirtualVolume status not yet.
        assert!(matches!(
            login_state(&volume("a", 1), Some(&group("b", 2, "b", 2)), "b", &dcs),
            Login::Waiting(_)
        ));
        match login_state(&volume("b", 2), Some(&group("b", 2, "b", 2)), "b", &dcs) {
            Login::Done(ctx) => {
                assert_eq!(ctx.data_center, "b");
                assert_eq!(ctx.epoch, 2);
                assert_eq!(ctx.storage_endpoint, "http://127.0.0.1:7102");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_dc_without_replica_gets_the_nearest_member() {
        let dcs = [dc("a", &[]), dc("b", &[]), dc("c", &[("a", 50), ("b", 5)])];
        let g = group("b", 2, "b", 2);
        match login_state(&volume("b", 2), Some(&g), "c", &dcs) {
            Login::Done(ctx) => assert_eq!(ctx.data_center, "b"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            login_state(&volume("a", 1), Some(&group("a", 1, "a", 1)), "c", &dcs),
            Login::Waiting(_)
        ));
    }

    #[test]
    fn no_group_or_status_waits() {
        let dcs = [dc("a", &[])];
        assert!(matches!(
            login_state(&volume("a", 1), None, "a", &dcs),
            Login::Waiting(_)
        ));
        let mut g = group("a", 1, "a", 1);
        g.status = None;
        assert!(matches!(
            login_state(&volume("a", 1), Some(&g), "a", &dcs),
            Login::Waiting(_)
        ));
    }
}
