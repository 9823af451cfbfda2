//! Where a volume is wanted (claims 2, 5, 13): the node named by the
//! `roam.dev/attached-node` annotation (CSI ControllerPublish, the log-in),
//! else the node of the newest running pod that mounts a PVC bound to the
//! volume's PersistentVolume, else the node of the newest VolumeAttachment of
//! driver `roam.dev` for it. Pure functions over objects from the caches.

use k8s_openapi::api::{
    core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod},
    storage::v1::VolumeAttachment,
};
use kube::ResourceExt;
use roam_crds::{ATTACHED_NODE_ANNOTATION, DRIVER_NAME, DataCenter, VirtualVolume, csi_volume_id};

/// The PersistentVolume names that carry this VirtualVolume.
pub fn pv_names(ns: &str, name: &str, pvs: &[std::sync::Arc<PersistentVolume>]) -> Vec<String> {
    let handle = csi_volume_id(ns, name);
    pvs.iter()
        .filter(|pv| {
            pv.spec
                .as_ref()
                .and_then(|s| s.csi.as_ref())
                .is_some_and(|c| c.driver == DRIVER_NAME && c.volume_handle == handle)
        })
        .map(|pv| pv.name_any())
        .collect()
}

/// The PersistentVolumeClaims bound to this VirtualVolume's volumes.
pub fn claims_of(
    vv: &VirtualVolume,
    pvcs: &[std::sync::Arc<PersistentVolumeClaim>],
    pvs: &[std::sync::Arc<PersistentVolume>],
) -> Vec<std::sync::Arc<PersistentVolumeClaim>> {
    let pv = pv_names(&vv.namespace().unwrap_or_default(), &vv.name_any(), pvs);
    if pv.is_empty() {
        return Vec::new();
    }
    pvcs.iter()
        .filter(|c| {
            c.spec
                .as_ref()
                .and_then(|s| s.volume_name.as_ref())
                .is_some_and(|v| pv.contains(v))
        })
        .cloned()
        .collect()
}

/// Whether the pod mounts one of the claims, given as (namespace, name).
pub fn uses_a_claim(pod: &Pod, claims: &[(String, String)]) -> bool {
    let ns = pod.namespace().unwrap_or_default();
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vols| {
            vols.iter().any(|v| {
                v.persistent_volume_claim.as_ref().is_some_and(|c| {
                    claims
                        .iter()
                        .any(|(cns, cn)| *cns == ns && *cn == c.claim_name)
                })
            })
        })
}

/// The VirtualVolume (namespace, name) a PersistentVolume carries.
pub fn volume_of_pv(pv: &PersistentVolume) -> Option<(String, String)> {
    let csi = pv.spec.as_ref()?.csi.as_ref()?;
    if csi.driver != DRIVER_NAME {
        return None;
    }
    let (ns, name) = csi.volume_handle.split_once('/')?;
    Some((ns.to_string(), name.to_string()))
}

fn pod_is_running_somewhere(p: &Pod) -> Option<&str> {
    if p.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return None;
    }
    p.spec.as_ref()?.node_name.as_deref()
}

/// The node where the volume is wanted, and what said so.
pub fn wanted_node(
    vv: &VirtualVolume,
    pods: &[std::sync::Arc<Pod>],
    pvcs: &[std::sync::Arc<PersistentVolumeClaim>],
    pvs: &[std::sync::Arc<PersistentVolume>],
    vas: &[std::sync::Arc<VolumeAttachment>],
) -> Option<(String, &'static str)> {
    if let Some(n) = vv
        .annotations()
        .get(ATTACHED_NODE_ANNOTATION)
        .filter(|n| !n.is_empty())
    {
        return Some((n.clone(), "attached-node annotation"));
    }
    let pv = pv_names(&vv.namespace().unwrap_or_default(), &vv.name_any(), pvs);
    if pv.is_empty() {
        return None;
    }
    let claims: Vec<(String, String)> = claims_of(vv, pvcs, pvs)
        .iter()
        .map(|c| (c.namespace().unwrap_or_default(), c.name_any()))
        .collect();
    let newest_pod = pods
        .iter()
        .filter(|p| uses_a_claim(p, &claims))
        .filter_map(|p| {
            pod_is_running_somewhere(p).map(|n| (p.creation_timestamp(), n.to_string()))
        })
        .max();
    if let Some((_, node)) = newest_pod {
        return Some((node, "pod"));
    }
    vas.iter()
        .filter(|va| {
            va.spec.attacher == DRIVER_NAME
                && va.metadata.deletion_timestamp.is_none()
                && va
                    .spec
                    .source
                    .persistent_volume_name
                    .as_ref()
                    .is_some_and(|n| pv.contains(n))
        })
        .map(|va| (va.creation_timestamp(), va.spec.node_name.clone()))
        .max()
        .map(|(_, n)| (n, "volume attachment"))
}

/// The data center of a node (by its labels), given the DataCenters.
pub fn data_center_of(
    node: &str,
    nodes: &[std::sync::Arc<Node>],
    dcs: &[DataCenter],
) -> Option<String> {
    let n = nodes.iter().find(|n| n.name_any() == node)?;
    roam_crds::datacenter::data_center_of_node(n.labels(), dcs)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use roam_crds::VirtualVolumeSpec;

    fn vv(annot: Option<&str>) -> VirtualVolume {
        let spec: VirtualVolumeSpec =
            serde_json::from_value(serde_json::json!({"size": "1Gi", "dataCenters": ["a"]}))
                .unwrap();
        let mut v = VirtualVolume::new("db", spec);
        v.metadata.namespace = Some("ns".into());
        if let Some(n) = annot {
            v.metadata.annotations =
                Some([(ATTACHED_NODE_ANNOTATION.to_string(), n.to_string())].into());
        }
        v
    }

    fn pv(name: &str, handle: &str, driver: &str) -> Arc<PersistentVolume> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {"csi": {"driver": driver, "volumeHandle": handle}}
            }))
            .unwrap(),
        )
    }

    fn pvc(ns: &str, name: &str, volume: &str) -> Arc<PersistentVolumeClaim> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"volumeName": volume}
            }))
            .unwrap(),
        )
    }

    fn pod(
        ns: &str,
        name: &str,
        claim: &str,
        node: Option<&str>,
        created: &str,
        phase: &str,
    ) -> Arc<Pod> {
        Arc::new(serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
            "spec": {"nodeName": node, "containers": [], "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]},
            "status": {"phase": phase}
        })).unwrap())
    }

    fn va(pv: &str, node: &str, created: &str) -> Arc<VolumeAttachment> {
        Arc::new(serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("va-{node}"), "creationTimestamp": created},
            "spec": {"attacher": DRIVER_NAME, "nodeName": node, "source": {"persistentVolumeName": pv}}
        })).unwrap())
    }

    #[test]
    fn annotation_wins() {
        let pods = vec![pod(
            "ns",
            "p",
            "c",
            Some("n-pod"),
            "2026-01-01T00:00:00Z",
            "Running",
        )];
        let got = wanted_node(
            &vv(Some("n-attached")),
            &pods,
            &[pvc("ns", "c", "pv1")],
            &[pv("pv1", "ns/db", DRIVER_NAME)],
            &[],
        );
        assert_eq!(got, Some(("n-attached".into(), "attached-node annotation")));
    }

    #[test]
    fn newest_running_pod_then_attachment() {
        let pvs = vec![
            pv("pv1", "ns/db", DRIVER_NAME),
            pv("other", "ns/db", "other.driver"),
        ];
        let pvcs = vec![pvc("ns", "c", "pv1"), pvc("elsewhere", "c", "pv1")];
        let pods = vec![
            pod(
                "ns",
                "old",
                "c",
                Some("n-old"),
                "2026-01-01T00:00:00Z",
                "Running",
            ),
            pod(
                "ns",
                "new",
                "c",
                Some("n-new"),
                "2026-01-02T00:00:00Z",
                "Pending",
            ),
            pod(
                "ns",
                "done",
                "c",
                Some("n-done"),
                "2026-01-03T00:00:00Z",
                "Succeeded",
            ),
            pod(
                "ns",
                "unscheduled",
                "c",
                None,
                "2026-01-04T00:00:00Z",
                "Pending",
            ),
            pod(
                "other",
                "foreign",
                "c",
                Some("n-foreign"),
                "2026-01-05T00:00:00Z",
                "Running",
            ),
        ];
        assert_eq!(
            wanted_node(&vv(None), &pods, &pvcs, &pvs, &[])
                .map(|w| w.0)
                .as_deref(),
            Some("n-new")
        );
        let vas = vec![
            va("pv1", "n-va1", "2026-01-01T00:00:00Z"),
            va("pv1", "n-va2", "2026-01-02T00:00:00Z"),
            va("zz", "n-x", "2026-01-09T00:00:00Z"),
        ];
        assert_eq!(
            wanted_node(&vv(None), &pods[2..4], &pvcs, &pvs, &vas),
            Some(("n-va2".into(), "volume attachment"))
        );
        assert_eq!(
            wanted_node(
                &vv(None),
                &[],
                &pvcs,
                &[pv("pv1", "ns/other", DRIVER_NAME)],
                &vas
            ),
            None
        );
    }

    #[test]
    fn pv_handle_parses() {
        assert_eq!(
            volume_of_pv(&pv("p", "ns/db", DRIVER_NAME)),
            Some(("ns".into(), "db".into()))
        );
        assert_eq!(volume_of_pv(&pv("p", "ns/db", "x")), None);
        assert_eq!(volume_of_pv(&pv("p", "nodash", DRIVER_NAME)), None);
    }
}
