//! `DataCenter` (cluster scoped): which nodes form a data center, how near it
//! is to the other data centers, and (status, written by the operator) the
//! storage systems found on its nodes.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::ZONE_LABEL;

/// A data center: a set of nodes (each with a storage system) and its distance
/// to the other data centers.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "roam.dev",
    version = "v1alpha1",
    kind = "DataCenter",
    plural = "datacenters",
    shortname = "dc",
    status = "DataCenterStatus",
    printcolumn(name = "Zone", type_ = "string", json_path = ".spec.zone"),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyStorageSystems",
        description = "storage systems ready"
    ),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.nodeCount"),
    printcolumn(name = "Cordoned", type_ = "boolean", json_path = ".spec.cordoned"),
    printcolumn(
        name = "Primaries",
        type_ = "integer",
        json_path = ".status.primaries",
        description = "while cordoned: primaries still here"
    ),
    printcolumn(
        name = "Free",
        type_ = "integer",
        json_path = ".status.freeBytes",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!(has(self.zone) && has(self.nodeSelector))").message("set at most one of spec.zone and spec.nodeSelector"))]
#[serde(rename_all = "camelCase")]
pub struct DataCenterSpec {
    /// Nodes whose `topology.kubernetes.io/zone` label has this value belong
    /// to this data center. When neither `zone` nor `nodeSelector` is set, the
    /// DataCenter's own name is the zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self != ''").message("spec.zone must not be empty"))]
    pub zone: Option<String>,

    /// Nodes carrying all of these labels belong to this data center (instead
    /// of `zone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("spec.nodeSelector must name at least one label"))]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Distance from this data center to others, keyed by DataCenter name:
    /// a rank or a measured round-trip time in milliseconds; lower is nearer,
    /// every value is positive. When a pod runs in a data center without a
    /// replica, the replica in the nearest data center becomes primary.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, self[k] > 0)").message("spec.proximity values must be positive"))]
    pub proximity: BTreeMap<String, u32>,

    /// Drain this data center of primaries: while true, the operator moves
    /// every primary here to the nearest uncordoned member by planned
    /// relocation (flush, fence, swap: nothing is lost), once the volume is
    /// not attached to a node (a running pod keeps its primary until it
    /// stops), and no new primary is placed here; a pod here is served by
    /// the nearest uncordoned replica. Its replicas stay, as secondaries.
    /// `status.primaries` shows the progress.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cordoned: bool,
}

/// What the operator found in a data center.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DataCenterStatus {
    /// Names of the nodes that belong to this data center.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Number of nodes.
    #[serde(default)]
    pub node_count: u32,
    /// Storage systems announced by those nodes (annotation
    /// `roam.dev/storage-endpoint`) and what probing them found.
    #[serde(default)]
    pub storage_systems: Vec<StorageSystemStatus>,
    /// Number of storage systems that answered and are ready.
    #[serde(default)]
    pub ready_storage_systems: u32,
    /// Total capacity of the ready storage systems, bytes.
    #[serde(default)]
    pub capacity_bytes: u64,
    /// Free space on the ready storage systems, bytes.
    #[serde(default)]
    pub free_bytes: u64,
    /// While cordoned: primaries still held in this data center (the drain
    /// is done at 0), counted from the VirtualVolumes' status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primaries: Option<u32>,
    /// While cordoned: those of them that wait because their volume is
    /// attached to a node (they move once its pod stops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primaries_attached: Option<u32>,
    /// `Ready`: at least one storage system is ready.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One storage system of a data center.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StorageSystemStatus {
    /// Node the storage system runs on.
    pub node: String,
    /// Endpoint peers and the operator use (`http(s)://host:port`).
    pub endpoint: String,
    /// It answered GetInfo, reported ready and the right data center.
    pub ready: bool,
    /// Capacity, bytes.
    #[serde(default)]
    pub capacity_bytes: u64,
    /// Free space, bytes.
    #[serde(default)]
    pub free_bytes: u64,
    /// Round-trip time of the last probe from the operator, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_millis: Option<f64>,
    /// Why it is not ready.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl DataCenter {
    /// Whether a node with these labels belongs to this data center.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        if let Some(sel) = &self.spec.node_selector {
            return sel.iter().all(|(k, v)| labels.get(k) == Some(v));
        }
        let zone = self
            .spec
            .zone
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default();
        labels.get(ZONE_LABEL).map(String::as_str) == Some(zone)
    }

    /// Ready storage systems, most free space first (name order breaks ties).
    pub fn ready_storage(&self) -> Vec<&StorageSystemStatus> {
        let mut v: Vec<_> = self
            .status
            .iter()
            .flat_map(|s| s.storage_systems.iter())
            .filter(|s| s.ready)
            .collect();
        v.sort_by(|a, b| b.free_bytes.cmp(&a.free_bytes).then(a.node.cmp(&b.node)));
        v
    }
}

/// The data center a node with these labels belongs to: the first DataCenter
/// (by name) that selects it.
pub fn data_center_of_node(
    labels: &BTreeMap<String, String>,
    data_centers: &[DataCenter],
) -> Option<String> {
    let mut names: Vec<_> = data_centers
        .iter()
        .filter(|dc| dc.selects(labels))
        .filter_map(|dc| dc.metadata.name.clone())
        .collect();
    names.sort();
    names.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn dc(name: &str, spec: DataCenterSpec) -> DataCenter {
        DataCenter::new(name, spec)
    }

    #[test]
    fn zone_defaults_to_name() {
        let d = dc("dc-a", DataCenterSpec::default());
        assert!(d.selects(&labels(&[(ZONE_LABEL, "dc-a")])));
        assert!(!d.selects(&labels(&[(ZONE_LABEL, "dc-b")])));
        assert!(!d.selects(&labels(&[])));
    }

    #[test]
    fn explicit_zone_and_selector() {
        let z = dc(
            "x",
            DataCenterSpec {
                cordoned: false,
                zone: Some("eu-1".into()),
                ..Default::default()
            },
        );
        assert!(z.selects(&labels(&[(ZONE_LABEL, "eu-1")])));
        assert!(!z.selects(&labels(&[(ZONE_LABEL, "x")])));
        let s = dc(
            "y",
            DataCenterSpec {
                cordoned: false,
                node_selector: Some(labels(&[("site", "y"), ("tier", "storage")])),
                ..Default::default()
            },
        );
        assert!(s.selects(&labels(&[("site", "y"), ("tier", "storage"), ("o", "1")])));
        assert!(!s.selects(&labels(&[("site", "y")])));
    }

    #[test]
    fn node_maps_to_first_dc_by_name() {
        let dcs = vec![
            dc(
                "b",
                DataCenterSpec {
                    cordoned: false,
                    zone: Some("z".into()),
                    ..Default::default()
                },
            ),
            dc(
                "a",
                DataCenterSpec {
                    cordoned: false,
                    zone: Some("z".into()),
                    ..Default::default()
                },
            ),
        ];
        assert_eq!(
            data_center_of_node(&labels(&[(ZONE_LABEL, "z")]), &dcs).as_deref(),
            Some("a")
        );
        assert_eq!(
            data_center_of_node(&labels(&[(ZONE_LABEL, "q")]), &dcs),
            None
        );
    }
}
