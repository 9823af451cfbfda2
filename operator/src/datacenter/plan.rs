//! The DataCenter decisions (pure): from the nodes that belong to a data
//! center and what probing their storage systems found, the status.

use std::collections::BTreeMap;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use roam_crds::{DataCenter, DataCenterStatus, StorageSystemStatus, conditions};

/// A node as the plan needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `roam.dev/storage-endpoint`, when announced.
    pub endpoint: Option<String>,
}

/// What GetInfo returned.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub data_center: String,
    pub ready: bool,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub rtt_millis: f64,
}

/// Smallest change of a storage system's round-trip time worth writing, ms.
pub const RTT_MIN_CHANGE_MILLIS: f64 = 1.0;
/// Smallest change worth writing, as a fraction of the recorded value.
pub const RTT_MIN_CHANGE_RATIO: f64 = 0.25;

/// The round-trip time to record, given the recorded one and a new
/// measurement: the measurement when it differs meaningfully (by at least
/// `RTT_MIN_CHANGE_MILLIS` and `RTT_MIN_CHANGE_RATIO` of the recorded value),
/// else the recorded value, so jitter does not rewrite the status every probe.
pub fn settle_rtt(recorded: Option<f64>, measured: f64) -> f64 {
    let measured = (measured * 100.0).round() / 100.0;
    match recorded {
        Some(r)
            if (measured - r).abs() < RTT_MIN_CHANGE_MILLIS
                || (measured - r).abs() < r * RTT_MIN_CHANGE_RATIO =>
        {
            r
        }
        _ => measured,
    }
}

/// The nodes of `dc` (by zone label or node selector), sorted by name.
pub fn member_nodes<'a>(dc: &DataCenter, nodes: &'a [NodeView]) -> Vec<&'a NodeView> {
    let mut v: Vec<_> = nodes.iter().filter(|n| dc.selects(&n.labels)).collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// The status of `dc`. `probes` is keyed by endpoint; a missing entry or an
/// error means the storage system did not answer.
pub fn status(
    dc: &DataCenter,
    nodes: &[NodeView],
    probes: &BTreeMap<String, Result<Probe, String>>,
    now: Timestamp,
) -> DataCenterStatus {
    let name = dc.metadata.name.clone().unwrap_or_default();
    let members = member_nodes(dc, nodes);
    let recorded_rtt = |endpoint: &str| {
        dc.status
            .iter()
            .flat_map(|s| s.storage_systems.iter())
            .find(|s| s.endpoint == endpoint)
            .and_then(|s| s.rtt_millis)
    };
    let mut storage = Vec::new();
    for n in &members {
        let Some(endpoint) = &n.endpoint else {
            continue;
        };
        let s = match probes.get(endpoint) {
            Some(Ok(p)) if p.data_center != name => StorageSystemStatus {
                node: n.name.clone(),
                endpoint: endpoint.clone(),
                ready: false,
                message: format!(
                    "storage system reports data center {:?}, node is in {name:?}",
                    p.data_center
                ),
                rtt_millis: Some(settle_rtt(recorded_rtt(endpoint), p.rtt_millis)),
                ..Default::default()
            },
            Some(Ok(p)) => StorageSystemStatus {
                node: n.name.clone(),
                endpoint: endpoint.clone(),
                ready: p.ready,
                capacity_bytes: p.capacity_bytes,
                free_bytes: p.free_bytes,
                rtt_millis: Some(settle_rtt(recorded_rtt(endpoint), p.rtt_millis)),
                message: if p.ready {
                    String::new()
                } else {
                    "storage system reports not ready".into()
                },
            },
            Some(Err(e)) => StorageSystemStatus {
                node: n.name.clone(),
                endpoint: endpoint.clone(),
                message: e.clone(),
                ..Default::default()
            },
            None => StorageSystemStatus {
                node: n.name.clone(),
                endpoint: endpoint.clone(),
                message: "not probed yet".into(),
                ..Default::default()
            },
        };
        storage.push(s);
    }
    let ready: Vec<&StorageSystemStatus> = storage.iter().filter(|s| s.ready).collect();
    let mut st = dc.status.clone().unwrap_or_default();
    st.nodes = members.iter().map(|n| n.name.clone()).collect();
    st.node_count = members.len() as u32;
    st.ready_storage_systems = ready.len() as u32;
    st.capacity_bytes = ready.iter().map(|s| s.capacity_bytes).sum();
    st.free_bytes = ready.iter().map(|s| s.free_bytes).sum();
    st.observed_generation = dc.metadata.generation;
    let (ok, reason, msg) = if !ready.is_empty() {
        (
            true,
            "StorageReady",
            format!("{} of {} storage systems ready", ready.len(), storage.len()),
        )
    } else if members.is_empty() {
        (
            false,
            "NoNodes",
            "no node belongs to this data center".to_string(),
        )
    } else if storage.is_empty() {
        (
            false,
            "NoStorage",
            format!(
                "none of {} nodes announces a storage system (annotation {})",
                members.len(),
                roam_crds::STORAGE_ENDPOINT_ANNOTATION
            ),
        )
    } else {
        let why: Vec<String> = storage
            .iter()
            .map(|s| format!("{}: {}", s.node, s.message))
            .collect();
        (
            false,
            "StorageNotReady",
            format!("no storage system ready ({})", why.join("; ")),
        )
    };
    st.storage_systems = storage;
    conditions::set(
        &mut st.conditions,
        conditions::READY,
        ok,
        reason,
        msg,
        dc.metadata.generation,
        Time(now),
    );
    st
}

/// A cordoned data center's drain progress: how many of `volumes` still have
/// their primary in `dc`, and how many of those are attached to a node
/// (they wait for their pod to stop).
pub fn primaries_in(dc: &str, volumes: &[roam_crds::VirtualVolume]) -> (u32, u32) {
    let here: Vec<_> = volumes
        .iter()
        .filter(|v| {
            v.status
                .as_ref()
                .and_then(|s| s.primary_data_center.as_deref())
                == Some(dc)
        })
        .collect();
    let attached = here
        .iter()
        .filter(|v| {
            v.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(roam_crds::ATTACHED_NODE_ANNOTATION))
                .is_some_and(|n| !n.is_empty())
        })
        .count();
    (here.len() as u32, attached as u32)
}
