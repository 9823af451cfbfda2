//! Table tests of the DataCenter status plan.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use roam_crds::{DataCenter, DataCenterSpec, ZONE_LABEL, conditions};

use super::plan::{NodeView, Probe, primaries_in, status};

fn node(name: &str, zone: &str, endpoint: Option<&str>) -> NodeView {
    NodeView {
        name: name.into(),
        labels: BTreeMap::from([(ZONE_LABEL.to_string(), zone.to_string())]),
        endpoint: endpoint.map(String::from),
    }
}

fn probe(dc: &str, ready: bool, free: u64) -> Result<Probe, String> {
    Ok(Probe {
        data_center: dc.into(),
        ready,
        capacity_bytes: 1000,
        free_bytes: free,
        rtt_millis: 0.5,
    })
}

#[test]
fn status_table() {
    let dc = DataCenter::new("dc-a", DataCenterSpec::default());
    let nodes = vec![
        node("n2", "dc-a", Some("http://n2:1")),
        node("n1", "dc-a", Some("http://n1:1")),
        node("n3", "dc-a", None),
        node("m1", "dc-b", Some("http://m1:1")),
    ];
    type Row = (
        Vec<(&'static str, Result<Probe, String>)>,
        u32,
        u64,
        bool,
        &'static str,
    );
    let rows: Vec<Row> = vec![
        (
            vec![
                ("http://n1:1", probe("dc-a", true, 10)),
                ("http://n2:1", probe("dc-a", true, 20)),
            ],
            2,
            30,
            true,
            "StorageReady",
        ),
        (
            vec![
                ("http://n1:1", probe("dc-a", true, 10)),
                ("http://n2:1", Err("refused".into())),
            ],
            1,
            10,
            true,
            "StorageReady",
        ),
        (
            vec![
                ("http://n1:1", probe("dc-a", false, 10)),
                ("http://n2:1", Err("refused".into())),
            ],
            0,
            0,
            false,
            "StorageNotReady",
        ),
        (
            vec![("http://n1:1", probe("dc-b", true, 10))],
            0,
            0,
            false,
            "StorageNotReady",
        ),
        (vec![], 0, 0, false, "StorageNotReady"),
    ];
    for (probes, ready, free, ok, reason) in rows {
        let probes: BTreeMap<String, Result<Probe, String>> = probes
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let s = status(&dc, &nodes, &probes, Timestamp::UNIX_EPOCH);
        assert_eq!(s.nodes, ["n1", "n2", "n3"]);
        assert_eq!(s.storage_systems.len(), 2);
        assert_eq!((s.ready_storage_systems, s.free_bytes), (ready, free));
        let c = conditions::get(&s.conditions, "Ready").unwrap();
        assert_eq!((c.status == "True", c.reason.as_str()), (ok, reason));
    }
}

#[test]
fn wrong_data_center_is_named() {
    let dc = DataCenter::new("dc-a", DataCenterSpec::default());
    let nodes = vec![node("n1", "dc-a", Some("http://n1:1"))];
    let probes = BTreeMap::from([("http://n1:1".to_string(), probe("dc-z", true, 5))]);
    let s = status(&dc, &nodes, &probes, Timestamp::UNIX_EPOCH);
    assert!(s.storage_systems[0].message.contains("\"dc-z\""));
    assert!(!s.storage_systems[0].ready);
}

#[test]
fn no_nodes_and_no_storage_reasons() {
    let dc = DataCenter::new("dc-q", DataCenterSpec::default());
    let s = status(
        &dc,
        &[node("n1", "dc-a", None)],
        &BTreeMap::new(),
        Timestamp::UNIX_EPOCH,
    );
    assert_eq!(
        conditions::get(&s.conditions, "Ready").unwrap().reason,
        "NoNodes"
    );
    let dc = DataCenter::new("dc-a", DataCenterSpec::default());
    let s = status(
        &dc,
        &[node("n1", "dc-a", None)],
        &BTreeMap::new(),
        Timestamp::UNIX_EPOCH,
    );
    assert_eq!(
        conditions::get(&s.conditions, "Ready").unwrap().reason,
        "NoStorage"
    );
}

#[test]
fn rtt_is_rewritten_only_when_it_changes_meaningfully() {
    use super::plan::settle_rtt;
    // Nothing recorded: the measurement, rounded to 0.01 ms.
    assert_eq!(settle_rtt(None, 0.4567), 0.46);
    // Jitter below 1 ms, or below a quarter of the recorded value: kept.
    assert_eq!(settle_rtt(Some(0.4), 1.2), 0.4);
    assert_eq!(settle_rtt(Some(60.0), 70.0), 60.0);
    assert_eq!(settle_rtt(Some(60.0), 50.0), 60.0);
    // Real changes: written.
    assert_eq!(settle_rtt(Some(0.4), 1.5), 1.5);
    assert_eq!(settle_rtt(Some(0.4), 60.0), 60.0);
    assert_eq!(settle_rtt(Some(60.0), 0.5), 0.5);
    assert_eq!(settle_rtt(Some(60.0), 80.0), 80.0);
}

#[test]
fn a_cordon_counts_the_primaries_left_and_those_attached() {
    use roam_crds::{VirtualVolume, VirtualVolumeStatus};
    let vv = |primary: &str, attached: bool| {
        let mut v: VirtualVolume = serde_json::from_value(serde_json::json!({
            "apiVersion": "roam.dev/v1alpha1",
            "kind": "VirtualVolume",
            "metadata": { "name": "v", "namespace": "ns" },
            "spec": { "size": "1Gi", "replicas": 2, "transferType": "Sync", "failurePolicy": "Block" }
        }))
        .expect("a VirtualVolume");
        v.status = Some(VirtualVolumeStatus {
            primary_data_center: Some(primary.into()),
            ..Default::default()
        });
        if attached {
            v.metadata.annotations = Some(
                [(
                    roam_crds::ATTACHED_NODE_ANNOTATION.to_string(),
                    "node-a".to_string(),
                )]
                .into(),
            );
        }
        v
    };
    let volumes = [vv("dc-a", false), vv("dc-a", true), vv("dc-b", true)];
    assert_eq!(primaries_in("dc-a", &volumes), (2, 1));
    assert_eq!(primaries_in("dc-c", &volumes), (0, 0));
}
