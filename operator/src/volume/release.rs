//! Releasing a volume from the nodes of a lost data center, so that its pod
//! runs again elsewhere without waiting for Kubernetes' six-minute
//! force-detach (piraeus-ha-controller is the model).
//!
//! After a failover the new primary holds a higher epoch, and every write
//! logged in at the old one is refused (the fence). What still keeps the
//! application down is Kubernetes: the pod on the dead node stays
//! Terminating forever, its StatefulSet does not replace it, and the
//! VolumeAttachment to the dead node blocks the attach elsewhere. So, once
//! the group failed over away from a data center, for each node of that data
//! center that is not Ready, this deletes (with no grace period) the pods
//! there that use the volume, and the volume's VolumeAttachments to it. Their
//! controllers recreate the pods, and the scheduler places them in a data
//! center that serves the volume.
//!
//! Guarantees: nothing is released unless the failover is recorded
//! (`lastFailover`) and the primary is now reachable elsewhere at that epoch
//! or later, and the node is not Ready; only pods and attachments of this
//! volume are touched. This is only as safe as the fence is complete, and
//! it is for every policy: the failover fenced the old primary in the
//! directory and waited out its lease before promoting, so an old primary
//! cut off from everyone acknowledges nothing from then on, under Block,
//! Degrade and Async alike (`roam_crds::directory`). A volume can turn it
//! off (`spec.failover.releaseLostNodes: false`).

use std::sync::Arc;

use k8s_openapi::api::{
    core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod},
    storage::v1::VolumeAttachment,
};
use kube::ResourceExt;
use roam_crds::{CopyVolumeGroupStatus, DRIVER_NAME, DataCenter, VirtualVolume};

use crate::locality;

/// What to delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Release {
    /// The lost data center.
    pub data_center: String,
    /// (namespace, name) of each pod to delete.
    pub pods: Vec<(String, String)>,
    /// Names of the VolumeAttachments to delete.
    pub attachments: Vec<String>,
}

impl Release {
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty() && self.attachments.is_empty()
    }
}

/// The caches the decision reads.
pub struct World<'a> {
    pub nodes: &'a [Arc<Node>],
    pub pods: &'a [Arc<Pod>],
    pub pvcs: &'a [Arc<PersistentVolumeClaim>],
    pub pvs: &'a [Arc<PersistentVolume>],
    pub attachments: &'a [Arc<VolumeAttachment>],
    pub data_centers: &'a [DataCenter],
}

/// Whether the volume is released from lost nodes: its own setting, else on
/// (the lease makes the fence complete under every policy).
pub fn enabled(vv: &VirtualVolume) -> bool {
    vv.spec.failover.release_lost_nodes.unwrap_or(true)
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// The pods and attachments to delete now (empty when nothing is lost).
pub fn decide(vv: &VirtualVolume, group: Option<&CopyVolumeGroupStatus>, w: &World) -> Release {
    let Some(status) = group else {
        return Release::default();
    };
    let Some(failover) = &status.last_failover else {
        return Release::default();
    };
    let moved_away = status.primary_unreachable_since.is_none()
        && status.epoch >= failover.epoch
        && status.primary.as_ref().is_some_and(|p| *p != failover.from);
    if !enabled(vv) || !moved_away {
        return Release::default();
    }
    let lost: Vec<String> = w
        .nodes
        .iter()
        .filter(|n| !is_ready(n))
        .map(|n| n.name_any())
        .filter(|n| {
            locality::data_center_of(n, w.nodes, w.data_centers).as_deref()
                == Some(failover.from.as_str())
        })
        .collect();
    if lost.is_empty() {
        return Release::default();
    }
    let claims: Vec<(String, String)> = locality::claims_of(vv, w.pvcs, w.pvs)
        .iter()
        .map(|c| (c.namespace().unwrap_or_default(), c.name_any()))
        .collect();
    let pods = w
        .pods
        .iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some_and(|n| lost.contains(n))
        })
        .filter(|p| locality::uses_a_claim(p, &claims))
        .map(|p| (p.namespace().unwrap_or_default(), p.name_any()))
        .collect();
    let pv_names = locality::pv_names(&vv.namespace().unwrap_or_default(), &vv.name_any(), w.pvs);
    let attachments = w
        .attachments
        .iter()
        .filter(|va| {
            va.spec.attacher == DRIVER_NAME
                && lost.contains(&va.spec.node_name)
                && va
                    .spec
                    .source
                    .persistent_volume_name
                    .as_ref()
                    .is_some_and(|n| pv_names.contains(n))
        })
        .map(|va| va.name_any())
        .collect();
    Release {
        data_center: failover.from.clone(),
        pods,
        attachments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use roam_crds::FailoverRecord;
    use serde_json::json;

    fn node(name: &str, zone: &str, ready: bool) -> Arc<Node> {
        let mut n: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}}
        }))
        .unwrap();
        n.status = Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "Unknown" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        Arc::new(n)
    }

    fn dc(name: &str) -> DataCenter {
        serde_json::from_value(json!({
            "apiVersion": "roam.dev/v1alpha1", "kind": "DataCenter",
            "metadata": {"name": name}, "spec": {"zone": name}
        }))
        .unwrap()
    }

    fn volume(transfer: &str, policy: &str, release: Option<bool>) -> VirtualVolume {
        let mut failover = json!({});
        if let Some(r) = release {
            failover["releaseLostNodes"] = json!(r);
        }
        serde_json::from_value(json!({
            "apiVersion": "roam.dev/v1alpha1", "kind": "VirtualVolume",
            "metadata": {"name": "v", "namespace": "roam"},
            "spec": {"size": "1Gi", "dataCenters": ["dc-a", "dc-b"], "transferType": transfer,
                     "failurePolicy": policy, "failover": failover}
        }))
        .unwrap()
    }

    fn failed_over(primary: &str) -> CopyVolumeGroupStatus {
        CopyVolumeGroupStatus {
            primary: Some(primary.into()),
            epoch: 3,
            last_failover: Some(FailoverRecord {
                from: "dc-a".into(),
                to: "dc-b".into(),
                epoch: 3,
                possible_loss_bytes: 0,
                possible_loss_seconds: 0.0,
                at: Time(Timestamp::now()),
            }),
            ..Default::default()
        }
    }

    struct Objects {
        nodes: Vec<Arc<Node>>,
        pods: Vec<Arc<Pod>>,
        pvcs: Vec<Arc<PersistentVolumeClaim>>,
        pvs: Vec<Arc<PersistentVolume>>,
        attachments: Vec<Arc<VolumeAttachment>>,
        dcs: Vec<DataCenter>,
    }

    impl Objects {
        /// A pod of claim app/data on node-a (dc-a), attached there, and an
        /// unrelated pod there too.
        fn new(node_a_ready: bool) -> Self {
            let pv: PersistentVolume = serde_json::from_value(json!({
                "metadata": {"name": "pv-1"},
                "spec": {"csi": {"driver": DRIVER_NAME, "volumeHandle": "roam/v"}}
            }))
            .unwrap();
            let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
                "metadata": {"name": "data", "namespace": "app"},
                "spec": {"volumeName": "pv-1"}
            }))
            .unwrap();
            let pod = |name: &str, claim: &str| -> Arc<Pod> {
                Arc::new(
                    serde_json::from_value(json!({
                        "metadata": {"name": name, "namespace": "app"},
                        "spec": {"nodeName": "node-a", "containers": [],
                                 "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}
                    }))
                    .unwrap(),
                )
            };
            let va: VolumeAttachment = serde_json::from_value(json!({
                "metadata": {"name": "csi-1"},
                "spec": {"attacher": DRIVER_NAME, "nodeName": "node-a",
                         "source": {"persistentVolumeName": "pv-1"}}
            }))
            .unwrap();
            Self {
                nodes: vec![
                    node("node-a", "dc-a", node_a_ready),
                    node("node-b", "dc-b", true),
                ],
                pods: vec![pod("db-0", "data"), pod("other", "other-claim")],
                pvcs: vec![Arc::new(pvc)],
                pvs: vec![Arc::new(pv)],
                attachments: vec![Arc::new(va)],
                dcs: vec![dc("dc-a"), dc("dc-b")],
            }
        }

        fn world(&self) -> World<'_> {
            World {
                nodes: &self.nodes,
                pods: &self.pods,
                pvcs: &self.pvcs,
                pvs: &self.pvs,
                attachments: &self.attachments,
                data_centers: &self.dcs,
            }
        }
    }

    #[test]
    fn after_a_failover_the_pods_and_attachments_on_lost_nodes_are_released() {
        let o = Objects::new(false);
        let r = decide(
            &volume("Sync", "Block", None),
            Some(&failed_over("dc-b")),
            &o.world(),
        );
        assert_eq!(r.data_center, "dc-a");
        assert_eq!(r.pods, vec![("app".to_owned(), "db-0".to_owned())]);
        assert_eq!(r.attachments, vec!["csi-1".to_owned()]);
    }

    #[test]
    fn nothing_is_released_while_the_node_is_ready_or_before_the_failover_completed() {
        let ready = Objects::new(true);
        let v = volume("Sync", "Block", None);
        assert!(decide(&v, Some(&failed_over("dc-b")), &ready.world()).is_empty());

        let lost = Objects::new(false);
        let mut unreachable = failed_over("dc-b");
        unreachable.primary_unreachable_since = Some(Time(Timestamp::now()));
        assert!(decide(&v, Some(&unreachable), &lost.world()).is_empty());
        let mut behind = failed_over("dc-b");
        behind.epoch = 2;
        assert!(decide(&v, Some(&behind), &lost.world()).is_empty());
        let no_failover = CopyVolumeGroupStatus {
            primary: Some("dc-b".into()),
            epoch: 3,
            ..Default::default()
        };
        assert!(decide(&v, Some(&no_failover), &lost.world()).is_empty());
    }

    #[test]
    fn release_is_on_by_default_and_off_when_the_volume_says_so() {
        let lost = Objects::new(false);
        let status = failed_over("dc-b");
        for (transfer, policy, asked, released) in [
            ("Sync", "Block", None, true),
            ("Sync", "Degrade", None, true),
            ("Async", "Block", None, true),
            ("Async", "Degrade", Some(true), true),
            ("Sync", "Block", Some(false), false),
            ("Async", "Degrade", Some(false), false),
        ] {
            let r = decide(
                &volume(transfer, policy, asked),
                Some(&status),
                &lost.world(),
            );
            assert_eq!(!r.is_empty(), released, "{transfer} {policy} {asked:?}");
        }
    }
}
