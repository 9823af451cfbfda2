//! Table and property tests of the VirtualVolume plan: plain values in, actions
//! and status out.

use std::collections::BTreeMap;

use k8s_openapi::{
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::Time},
    jiff::{SignedDuration, Timestamp},
};
use proptest::prelude::*;
use roam_crds::{
    CopyVolumeGroup, CopyVolumeGroupSpec, CopyVolumeGroupStatus, DataCenter, DataCenterSpec,
    DataCenterStatus, FailoverMode, FailoverPolicy, FailurePolicy, GroupMember, MemberRole,
    MemberState, MemberStatus, StorageSystemStatus, SyncLevel, TransferType, VirtualVolumeSpec,
    VolumePhase,
};

use super::plan::{Action, Input, IntentReason, Plan, Replica, ReplicaObs, SecondaryReport, plan};

const NOW: i64 = 1_800_000_000;

fn now() -> Timestamp {
    Timestamp::from_second(NOW).unwrap()
}

fn dc(name: &str, prox: &[(&str, u32)], ready: bool, free: u64) -> DataCenter {
    let mut d = DataCenter::new(
        name,
        DataCenterSpec {
            cordoned: false,
            zone: None,
            node_selector: None,
            proximity: prox.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        },
    );
    d.status = Some(DataCenterStatus {
        storage_systems: vec![StorageSystemStatus {
            node: format!("{name}-n1"),
            endpoint: format!("http://{name}:7100"),
            ready,
            free_bytes: free,
            capacity_bytes: free,
            ..Default::default()
        }],
        free_bytes: if ready { free } else { 0 },
        ..Default::default()
    });
    d
}

fn three_dcs() -> Vec<DataCenter> {
    vec![
        dc("a", &[("b", 2), ("c", 10)], true, 100),
        dc("b", &[("a", 2), ("c", 5)], true, 300),
        dc("c", &[("a", 10), ("b", 5)], true, 200),
        dc("x", &[("a", 1), ("b", 7), ("c", 3)], true, 50),
    ]
}

fn vspec(dcs: &[&str], t: TransferType) -> VirtualVolumeSpec {
    VirtualVolumeSpec {
        size: Quantity("1Gi".into()),
        data_centers: Some(dcs.iter().map(|s| s.to_string()).collect()),
        replicas: None,
        transfer_type: t,
        sync_level: SyncLevel::Write,
        max_lag_bytes: None,
        max_lag_seconds: None,
        failure_policy: FailurePolicy::Block,
        failover: FailoverPolicy::default(),
        fs_type: None,
    }
}

fn group(
    dcs: &[&str],
    desired: &str,
    epoch: u64,
    status: Option<CopyVolumeGroupStatus>,
) -> CopyVolumeGroup {
    let mut g = CopyVolumeGroup::new(
        "v",
        CopyVolumeGroupSpec {
            members: dcs
                .iter()
                .map(|d| GroupMember {
                    data_center: d.to_string(),
                    node: format!("{d}-n1"),
                    endpoint: format!("http://{d}:7100"),
                    volume_id: "ns.v".into(),
                })
                .collect(),
            desired_primary: desired.into(),
            epoch,
            transfer_type: TransferType::Sync,
            sync_level: SyncLevel::Write,
            failure_policy: FailurePolicy::Block,
            max_lag_bytes: 0,
            max_lag_seconds: 0,
            size_bytes: 1 << 30,
        },
    );
    g.status = status;
    g
}

fn gstatus(primary: &str, epoch: u64) -> CopyVolumeGroupStatus {
    CopyVolumeGroupStatus {
        primary: Some(primary.into()),
        epoch,
        ..Default::default()
    }
}

fn rep(role: MemberRole, epoch: u64, seq: u64) -> ReplicaObs {
    ReplicaObs::Present(Replica {
        role,
        epoch,
        size_bytes: 1 << 30,
        durable_seq: seq,
        secondaries: vec![],
    })
}

fn primary_with(epoch: u64, secs: &[(&str, MemberState, u64)]) -> ReplicaObs {
    ReplicaObs::Present(Replica {
        role: MemberRole::Primary,
        epoch,
        size_bytes: 1 << 30,
        durable_seq: 100,
        secondaries: secs
            .iter()
            .map(|(d, s, lag)| SecondaryReport {
                data_center: d.to_string(),
                state: *s,
                lag_bytes: *lag,
                lag_seconds: *lag as f64 / 1000.0,
            })
            .collect(),
    })
}

#[derive(Clone)]
struct Case {
    spec: VirtualVolumeSpec,
    wanted: Option<&'static str>,
    attached: bool,
    group: Option<CopyVolumeGroup>,
    replicas: Vec<(&'static str, ReplicaObs)>,
    dcs: Vec<DataCenter>,
    now: Timestamp,
}

impl Case {
    fn new(spec: VirtualVolumeSpec) -> Self {
        Self {
            spec,
            wanted: None,
            attached: false,
            group: None,
            replicas: vec![],
            dcs: three_dcs(),
            now: now(),
        }
    }
    fn run(&self) -> Plan {
        let input = Input {
            namespace: "ns",
            name: "v",
            generation: Some(1),
            spec: &self.spec,
            size_bytes: roam_crds::quantity::parse_bytes(&self.spec.size).unwrap(),
            wanted_dc: self.wanted.map(String::from),
            attached: self.attached,
            data_centers: &self.dcs,
            group: self.group.as_ref(),
            intent_at: Some(self.now - SignedDuration::from_millis(1500)),
            replicas: self
                .replicas
                .iter()
                .map(|(d, r)| (d.to_string(), r.clone()))
                .collect::<BTreeMap<_, _>>(),
            previous: None,
            frontend_faults: Vec::new(),
            now: self.now,
        };
        plan(&input)
    }
}

fn steady_ab(primary: &str) -> Case {
    let mut c = Case::new(vspec(&["a", "b"], TransferType::Sync));
    let other = if primary == "a" { "b" } else { "a" };
    c.group = Some(group(&["a", "b"], primary, 3, Some(gstatus(primary, 3))));
    c.replicas = vec![
        (
            leak(primary),
            primary_with(3, &[(leak(other), MemberState::InSync, 0)]),
        ),
        (leak(other), rep(MemberRole::Secondary, 3, 100)),
    ];
    c
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

// ---------- placement ----------

#[test]
fn placement_creates_group_with_listed_dcs_and_first_as_primary() {
    let p = Case::new(vspec(&["b", "c"], TransferType::Sync)).run();
    let [Action::CreateGroup(g)] = p.actions.as_slice() else {
        panic!("{:?}", p.actions)
    };
    assert_eq!(
        g.members
            .iter()
            .map(|m| m.data_center.as_str())
            .collect::<Vec<_>>(),
        ["b", "c"]
    );
    assert_eq!(g.desired_primary, "b");
    assert_eq!(g.epoch, 1);
    assert_eq!(g.members[0].endpoint, "http://b:7100");
    assert_eq!(g.members[0].volume_id, "ns.v");
    assert_eq!(p.volume_status.phase, VolumePhase::Creating);
}

#[test]
fn placement_primary_follows_wanted_dc() {
    for (wanted, want) in [("a", "a"), ("b", "b"), ("c", "c"), ("x", "a")] {
        let mut c = Case::new(vspec(&["a", "b", "c"], TransferType::Async));
        c.wanted = Some(wanted);
        let p = c.run();
        let [Action::CreateGroup(g)] = p.actions.as_slice() else {
            panic!()
        };
        assert_eq!(g.desired_primary, want, "wanted {wanted}");
    }
}

#[test]
fn placement_by_count_picks_most_free_and_wanted_first() {
    let mut spec = vspec(&[], TransferType::Sync);
    spec.data_centers = None;
    for (count, wanted, want) in [
        (1, None, vec!["b"]),
        (2, None, vec!["b", "c"]),
        (3, None, vec!["b", "c", "a"]),
        (2, Some("a"), vec!["a", "b"]),
        (1, Some("x"), vec!["x"]),
    ] {
        spec.replicas = Some(count);
        let mut c = Case::new(spec.clone());
        c.wanted = wanted;
        let p = c.run();
        let [Action::CreateGroup(g)] = p.actions.as_slice() else {
            panic!("{:?}", p.actions)
        };
        assert_eq!(
            g.members
                .iter()
                .map(|m| m.data_center.as_str())
                .collect::<Vec<_>>(),
            want,
            "count {count} wanted {wanted:?}"
        );
    }
}

#[test]
fn placement_fails_precisely_and_changes_nothing() {
    let cases: Vec<(Vec<DataCenter>, Vec<&str>, &str)> = vec![
        (
            three_dcs(),
            vec!["a", "zz"],
            "data center \"zz\" does not exist",
        ),
        (
            vec![dc("a", &[], true, 1), dc("b", &[], false, 1)],
            vec!["a", "b"],
            "data center \"b\" has no ready storage system",
        ),
        (vec![], vec!["a"], "data center \"a\" does not exist"),
    ];
    for (dcs, list, msg) in cases {
        let mut c = Case::new(vspec(&list, TransferType::Sync));
        c.dcs = dcs;
        let p = c.run();
        assert!(p.actions.is_empty());
        assert_eq!(p.volume_status.phase, VolumePhase::Pending);
        let cond =
            roam_crds::conditions::get(&p.volume_status.conditions, "PlacementFailed").unwrap();
        assert_eq!(cond.status, "True");
        assert_eq!(cond.message, msg);
        assert!(
            p.notes
                .iter()
                .any(|n| n.warning && n.reason == "PlacementFailed")
        );
    }
    let mut spec = vspec(&[], TransferType::Sync);
    spec.data_centers = None;
    spec.replicas = Some(5);
    let p = Case::new(spec).run();
    assert!(p.actions.is_empty());
    assert!(
        p.volume_status
            .conditions
            .iter()
            .any(|c| c.message.contains("5 data centers requested but only 4"))
    );
}

#[test]
fn async_lag_bounds_reach_the_group_and_sync_drops_them() {
    let mut spec = vspec(&["a", "b"], TransferType::Async);
    spec.max_lag_bytes = Some(4096);
    spec.max_lag_seconds = Some(3);
    let p = Case::new(spec.clone()).run();
    let [Action::CreateGroup(g)] = p.actions.as_slice() else {
        panic!()
    };
    assert_eq!(
        (g.max_lag_bytes, g.max_lag_seconds, g.transfer_type),
        (4096, 3, TransferType::Async)
    );
    spec.transfer_type = TransferType::Sync;
    let p = Case::new(spec).run();
    let [Action::CreateGroup(g)] = p.actions.as_slice() else {
        panic!()
    };
    assert_eq!((g.max_lag_bytes, g.max_lag_seconds), (0, 0));
}

// ---------- creation and configuration ----------

#[test]
fn missing_replicas_are_created_then_group_configured() {
    let mut c = Case::new(vspec(&["a", "b", "c"], TransferType::Sync));
    c.group = Some(group(&["a", "b", "c"], "b", 1, None));
    c.replicas = vec![
        ("a", ReplicaObs::Missing),
        ("b", rep(MemberRole::None, 0, 0)),
        ("c", ReplicaObs::Missing),
    ];
    let p = c.run();
    assert_eq!(
        p.actions,
        vec![
            Action::CreateReplica { dc: "a".into() },
            Action::CreateReplica { dc: "c".into() }
        ]
    );
    assert_eq!(p.volume_status.phase, VolumePhase::Creating);

    c.replicas = vec![
        ("a", rep(MemberRole::None, 0, 0)),
        ("b", rep(MemberRole::None, 0, 0)),
        ("c", rep(MemberRole::None, 0, 0)),
    ];
    let p = c.run();
    assert_eq!(
        p.actions,
        ["b", "a", "c"]
            .iter()
            .map(|d| Action::Configure {
                dc: d.to_string(),
                primary: "b".into(),
                epoch: 1
            })
            .collect::<Vec<_>>()
    );
}

#[test]
fn unreachable_member_delays_first_configuration() {
    let mut c = Case::new(vspec(&["a", "b"], TransferType::Sync));
    c.group = Some(group(&["a", "b"], "a", 1, None));
    c.replicas = vec![
        ("a", rep(MemberRole::None, 0, 0)),
        ("b", ReplicaObs::Unreachable("refused".into())),
    ];
    let p = c.run();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.volume_status.phase, VolumePhase::Creating);
    let ready = roam_crds::conditions::get(&p.volume_status.conditions, "Ready").unwrap();
    assert!(
        ready.message.contains("b (unreachable)"),
        "{}",
        ready.message
    );
}

#[test]
fn steady_group_is_ready_with_no_actions() {
    for primary in ["a", "b"] {
        let p = steady_ab(primary).run();
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.volume_status.phase, VolumePhase::Ready);
        assert_eq!(
            p.volume_status.primary_data_center.as_deref(),
            Some(primary)
        );
        assert_eq!(p.volume_status.epoch, 3);
        let gs = p.group_status.unwrap();
        assert!(gs.members.iter().all(|m| m.state == MemberState::InSync));
    }
}

#[test]
fn partially_configured_group_finishes_configuration() {
    let mut c = Case::new(vspec(&["a", "b"], TransferType::Sync));
    c.group = Some(group(&["a", "b"], "a", 1, None));
    c.replicas = vec![
        ("a", rep(MemberRole::Primary, 1, 0)),
        ("b", rep(MemberRole::None, 0, 0)),
    ];
    let p = c.run();
    assert_eq!(
        p.actions,
        vec![Action::Configure {
            dc: "b".into(),
            primary: "a".into(),
            epoch: 1
        }]
    );
    assert_eq!(p.volume_status.phase, VolumePhase::Creating);
}

#[test]
fn size_growth_grows_group_then_replicas() {
    let mut c = steady_ab("a");
    c.spec.size = Quantity("2Gi".into());
    let p = c.run();
    assert_eq!(
        p.actions,
        vec![Action::GrowGroup {
            size_bytes: 2 << 30
        }]
    );
    let mut c = steady_ab("a");
    c.group.as_mut().unwrap().spec.size_bytes = 2 << 30;
    c.spec.size = Quantity("2Gi".into());
    let p = c.run();
    assert_eq!(
        p.actions,
        vec![
            Action::ExpandReplica {
                dc: "a".into(),
                size_bytes: 2 << 30
            },
            Action::ExpandReplica {
                dc: "b".into(),
                size_bytes: 2 << 30
            }
        ]
    );
}

// ---------- relocation ----------

#[test]
fn wanted_elsewhere_writes_intent_first() {
    let mut c = steady_ab("a");
    c.wanted = Some("b");
    let p = c.run();
    assert_eq!(
        p.actions,
        vec![Action::WriteIntent {
            primary: "b".into(),
            epoch: 4,
            reason: IntentReason::Relocate
        }]
    );
    assert_eq!(p.volume_status.phase, VolumePhase::Relocating);
    assert!(p.notes.iter().any(|n| n.reason == "RelocationStarted"));
}

fn cordon(c: &mut Case, dc: &str) {
    c.dcs
        .iter_mut()
        .filter(|d| d.metadata.name.as_deref() == Some(dc))
        .for_each(|d| d.spec.cordoned = true);
}

#[test]
fn a_cordoned_primary_moves_out_when_nobody_uses_the_volume() {
    let mut c = steady_ab("a");
    cordon(&mut c, "a");
    let p = c.run();
    assert_eq!(
        p.actions,
        vec![Action::WriteIntent {
            primary: "b".into(),
            epoch: 4,
            reason: IntentReason::Relocate
        }]
    );
    assert_eq!(p.volume_status.phase, VolumePhase::Relocating);
}

#[test]
fn a_cordon_moves_the_primary_even_where_no_distance_is_known() {
    let mut c = steady_ab("a");
    for d in &mut c.dcs {
        d.spec.proximity.clear();
    }
    cordon(&mut c, "a");
    let p = c.run();
    assert_eq!(
        p.actions,
        vec![Action::WriteIntent {
            primary: "b".into(),
            epoch: 4,
            reason: IntentReason::Relocate
        }]
    );
}

#[test]
fn a_pod_in_a_cordoned_data_center_is_served_from_the_nearest_other() {
    let mut c = steady_ab("a");
    cordon(&mut c, "a");
    c.wanted = Some("a");
    let p = c.run();
    assert_eq!(
        p.actions,
        vec![Action::WriteIntent {
            primary: "b".into(),
            epoch: 4,
            reason: IntentReason::Relocate
        }]
    );
}

#[test]
fn a_cordon_waits_while_the_volume_is_attached() {
    let mut c = steady_ab("a");
    cordon(&mut c, "a");
    c.wanted = Some("a");
    c.attached = true;
    let p = c.run();
    assert!(
        p.actions.is_empty(),
        "no move under a running pod: {:?}",
        p.actions
    );
    assert_eq!(p.volume_status.phase, VolumePhase::Ready);
    let relocating = p
        .volume_status
        .conditions
        .iter()
        .find(|c| c.type_ == roam_crds::conditions::RELOCATING)
        .expect("a Relocating condition");
    assert_eq!(relocating.reason, "CordonWaitsForDetach");
}

#[test]
fn no_primary_moves_into_a_cordoned_data_center() {
    let mut c = steady_ab("a");
    cordon(&mut c, "b");
    c.wanted = Some("b");
    let p = c.run();
    assert!(p.actions.is_empty(), "stays in a: {:?}", p.actions);
    assert_eq!(p.volume_status.phase, VolumePhase::Ready);
}

#[test]
fn pending_intent_transfers_from_current_primary() {
    let mut c = steady_ab("a");
    c.group.as_mut().unwrap().spec.desired_primary = "b".into();
    c.group.as_mut().unwrap().spec.epoch = 4;
    let p = c.run();
    assert_eq!(
        p.actions,
        vec![Action::Transfer {
            from: "a".into(),
            to: "b".into(),
            epoch: 4
        }]
    );
    assert_eq!(p.volume_status.phase, VolumePhase::Relocating);
    assert_eq!(p.volume_status.primary_data_center.as_deref(), Some("a"));
}

#[test]
fn finished_transfer_is_recorded_with_duration() {
    let mut c = steady_ab("a");
    {
        let g = c.group.as_mut().unwrap();
        g.spec.desired_primary = "b".into();
        g.spec.epoch = 4;
    }
    c.wanted = Some("b");
    c.replicas = vec![
        ("b", primary_with(4, &[("a", MemberState::InSync, 0)])),
        ("a", rep(MemberRole::Secondary, 4, 100)),
    ];
    let p = c.run();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.volume_status.phase, VolumePhase::Ready);
    assert_eq!(p.volume_status.primary_data_center.as_deref(), Some("b"));
    assert_eq!(p.volume_status.epoch, 4);
    let rel = p.group_status.unwrap().last_relocation.unwrap();
    assert_eq!(
        (
            rel.from.as_str(),
            rel.to.as_str(),
            rel.epoch,
            rel.duration_millis
        ),
        ("a", "b", 4, 1500)
    );
    assert!(p.notes.iter().any(|n| n.reason == "Relocated"));
}

#[test]
fn no_new_relocation_while_one_is_pending() {
    let mut c = steady_ab("a");
    {
        let g = c.group.as_mut().unwrap();
        g.spec.desired_primary = "b".into();
        g.spec.epoch = 4;
    }
    c.wanted = Some("a"); // wanted moved back meanwhile
    let p = c.run();
    // Finish the pending one first; never two intents at once.
    assert_eq!(
        p.actions,
        vec![Action::Transfer {
            from: "a".into(),
            to: "b".into(),
            epoch: 4
        }]
    );
}

#[test]
fn wanted_dc_without_replica_goes_to_nearest_member() {
    let mut c = Case::new(vspec(&["a", "b", "c"], TransferType::Async));
    c.group = Some(group(&["a", "b", "c"], "b", 2, Some(gstatus("b", 2))));
    c.replicas = vec![
        ("a", rep(MemberRole::Secondary, 2, 1)),
        (
            "b",
            primary_with(
                2,
                &[("a", MemberState::InSync, 0), ("c", MemberState::InSync, 0)],
            ),
        ),
        ("c", rep(MemberRole::Secondary, 2, 1)),
    ];
    c.wanted = Some("x"); // x is nearest to a (1), then c (3), then b (7)
    let p = c.run();
    assert_eq!(
        p.actions,
        vec![Action::WriteIntent {
            primary: "a".into(),
            epoch: 3,
            reason: IntentReason::Relocate
        }]
    );
}

#[test]
fn wanted_member_unreachable_keeps_primary() {
    let mut c = steady_ab("a");
    c.wanted = Some("b");
    c.replicas[1].1 = ReplicaObs::Unreachable("down".into());
    let p = c.run();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.volume_status.phase, VolumePhase::Degraded);
    assert!(p.notes.iter().any(|n| n.reason == "RelocationWaiting"));
}

#[test]
fn unknown_wanted_dc_changes_nothing() {
    let mut c = steady_ab("a");
    c.wanted = Some("nowhere");
    let p = c.run();
    assert!(p.actions.is_empty());
    assert_eq!(p.volume_status.phase, VolumePhase::Ready);
}

#[test]
fn storage_ahead_of_directory_is_adopted() {
    let mut c = steady_ab("a");
    c.replicas = vec![
        ("b", primary_with(5, &[])),
        ("a", rep(MemberRole::Secondary, 5, 1)),
    ];
    let p = c.run();
    assert_eq!(
        p.actions,
        vec![Action::WriteIntent {
            primary: "b".into(),
            epoch: 5,
            reason: IntentReason::Adopt
        }]
    );
}

#[test]
fn stale_old_primary_is_reconfigured_as_secondary() {
    let mut c = steady_ab("b");
    c.group.as_mut().unwrap().spec.epoch = 4;
    c.group.as_mut().unwrap().status = Some(gstatus("b", 4));
    c.replicas = vec![
        ("b", primary_with(4, &[])),
        ("a", rep(MemberRole::Primary, 3, 90)),
    ];
    let p = c.run();
    assert_eq!(
        p.actions,
        vec![Action::Configure {
            dc: "a".into(),
            primary: "b".into(),
            epoch: 4
        }]
    );
}

// ---------- failover ----------

fn lost_primary_case(elapsed_secs: i64, mode: FailoverMode) -> Case {
    let mut c = Case::new(vspec(&["a", "b", "c"], TransferType::Async));
    c.spec.failover = FailoverPolicy {
        mode,
        grace_period_seconds: 30,
        release_lost_nodes: None,
    };
    let mut st = gstatus("a", 2);
    st.members = vec![
        MemberStatus {
            data_center: "b".into(),
            role: MemberRole::Secondary,
            state: MemberState::Lagging,
            lag_bytes: 4096,
            lag_seconds: 0.5,
            epoch: 2,
            durable_seq: 90,
        },
        MemberStatus {
            data_center: "c".into(),
            role: MemberRole::Secondary,
            state: MemberState::Lagging,
            lag_bytes: 8192,
            lag_seconds: 1.0,
            epoch: 2,
            durable_seq: 80,
        },
    ];
    if elapsed_secs >= 0 {
        st.primary_unreachable_since = Some(Time(now() - SignedDuration::from_secs(elapsed_secs)));
    }
    c.group = Some(group(&["a", "b", "c"], "a", 2, Some(st)));
    c.replicas = vec![
        ("a", ReplicaObs::Unreachable("connection refused".into())),
        ("b", rep(MemberRole::Secondary, 2, 90)),
        ("c", rep(MemberRole::Secondary, 2, 80)),
    ];
    c
}

#[test]
fn primary_loss_waits_for_grace_period() {
    for elapsed in [-1, 0, 10, 29] {
        let p = lost_primary_case(elapsed, FailoverMode::Automatic).run();
        assert!(p.actions.is_empty(), "elapsed {elapsed}: {:?}", p.actions);
        assert_eq!(p.volume_status.phase, VolumePhase::Degraded);
        let gs = p.group_status.unwrap();
        assert!(gs.primary_unreachable_since.is_some());
        assert_eq!(gs.primary.as_deref(), Some("a"));
    }
    let p = lost_primary_case(-1, FailoverMode::Automatic).run();
    assert!(p.notes.iter().any(|n| n.reason == "PrimaryUnreachable"));
}

#[test]
fn failover_after_grace_picks_most_up_to_date() {
    for elapsed in [30, 31, 300] {
        let p = lost_primary_case(elapsed, FailoverMode::Automatic).run();
        assert_eq!(
            p.actions,
            vec![Action::WriteIntent {
                primary: "b".into(),
                epoch: 3,
                reason: IntentReason::Failover
            }],
            "elapsed {elapsed}"
        );
    }
}

#[test]
fn manual_failover_only_reports() {
    let p = lost_primary_case(1000, FailoverMode::Manual).run();
    assert!(p.actions.is_empty());
    let c = roam_crds::conditions::get(&p.volume_status.conditions, "PrimaryUnreachable").unwrap();
    assert!(c.message.contains("manual"));
}

/// The directory's fence at `epoch`, seen recorded `secs_ago`.
fn fenced(c: &mut Case, epoch: u64, secs_ago: i64) {
    let at = c.now - SignedDuration::from_secs(secs_ago);
    let g = c.group.as_mut().unwrap();
    let a = g.metadata.annotations.get_or_insert_with(Default::default);
    a.insert(
        roam_crds::directory::FENCE_EPOCH_ANNOTATION.into(),
        epoch.to_string(),
    );
    a.insert(
        roam_crds::directory::FENCED_AT_ANNOTATION.into(),
        at.to_string(),
    );
}

fn promote_b_at_3() -> Vec<Action> {
    vec![Action::Promote {
        dc: "b".into(),
        epoch: 3,
    }]
}

#[test]
fn failover_intent_fences_then_waits_out_the_lease_then_promotes() {
    let mut c = lost_primary_case(60, FailoverMode::Automatic);
    c.group.as_mut().unwrap().spec.desired_primary = "b".into();
    c.group.as_mut().unwrap().spec.epoch = 3;
    // No fence yet: fence first, promote nothing.
    assert_eq!(c.run().actions, vec![Action::Fence { epoch: 3 }]);
    // Fenced, the lease not yet run out: wait, and say so.
    let lease = roam_crds::directory::PRIMARY_LEASE.as_secs() as i64;
    for ago in [0, 1, lease - 1] {
        let mut w = c.clone();
        fenced(&mut w, 3, ago);
        let p = w.run();
        assert!(
            p.actions.is_empty(),
            "{ago}s after the fence: {:?}",
            p.actions
        );
        let msg = &roam_crds::conditions::get(&p.volume_status.conditions, "PrimaryUnreachable")
            .unwrap()
            .message;
        assert!(msg.contains("lease of a to run out"), "{msg}");
    }
    // A fence of an earlier epoch does not count for this one.
    let mut old = c.clone();
    fenced(&mut old, 2, 600);
    assert_eq!(old.run().actions, vec![Action::Fence { epoch: 3 }]);
    for ago in [lease, lease + 1, 600] {
        let mut w = c.clone();
        fenced(&mut w, 3, ago);
        assert_eq!(w.run().actions, promote_b_at_3(), "{ago}s after the fence");
    }
}

#[test]
fn a_member_recorded_out_of_sync_is_never_promoted() {
    // b is the most advanced, but the primary went on without it.
    let mut c = lost_primary_case(60, FailoverMode::Automatic);
    let st = c.group.as_mut().unwrap().status.as_mut().unwrap();
    st.out_of_sync = vec!["b".into()];
    assert_eq!(
        c.run().actions,
        vec![Action::WriteIntent {
            primary: "c".into(),
            epoch: 3,
            reason: IntentReason::Failover
        }]
    );
    // An intent for it (a relocation the loss cut short, or a person's
    // promote) waits instead, and says why.
    promote_intent(&mut c, Some(3));
    fenced(&mut c, 3, 600);
    let p = c.run();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    let msg = &roam_crds::conditions::get(&p.volume_status.conditions, "PrimaryUnreachable")
        .unwrap()
        .message;
    assert!(msg.contains("b is recorded out of sync"), "{msg}");
    // Nobody in the set reachable: no failover at all.
    let mut none = lost_primary_case(60, FailoverMode::Automatic);
    none.group
        .as_mut()
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .out_of_sync = vec!["b".into(), "c".into()];
    let p = none.run();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
}

#[test]
fn a_fenced_primary_that_answers_again_is_still_failed_over() {
    // The failover fenced a at 3; a answers again as primary at 2. It can
    // no longer renew its lease: the promotion goes on, no transfer from a.
    let mut c = lost_primary_case(60, FailoverMode::Automatic);
    c.group.as_mut().unwrap().spec.desired_primary = "b".into();
    c.group.as_mut().unwrap().spec.epoch = 3;
    fenced(&mut c, 3, 600);
    c.replicas[0].1 = primary_with(2, &[("b", MemberState::Lagging, 4096)]);
    assert_eq!(c.run().actions, promote_b_at_3());
}

/// `kubectl roam promote --to b` on the lost-primary case: the intent (b at
/// epoch 3) and, when `asked` names an epoch, the promote annotation.
fn promote_intent(c: &mut Case, asked: Option<u64>) {
    let g = c.group.as_mut().unwrap();
    g.spec.desired_primary = "b".into();
    g.spec.epoch = 3;
    if let Some(e) = asked {
        g.metadata.annotations = Some(
            [(
                roam_crds::PROMOTE_EPOCH_ANNOTATION.to_string(),
                e.to_string(),
            )]
            .into(),
        );
    }
}

#[test]
fn manual_mode_promotes_what_a_person_asked_for_after_the_grace_period() {
    for (elapsed, asked, promoted) in [
        // Asked for, grace period over: promoted.
        (60, Some(3), true),
        (30, Some(3), true),
        // Asked for within the grace period: it waits.
        (10, Some(3), false),
        // A pending intent nobody asked to promote (a relocation cut short
        // by the loss): only reported, as Manual says.
        (60, None, false),
        // The annotation of an earlier promotion: not this intent.
        (60, Some(2), false),
    ] {
        let mut c = lost_primary_case(elapsed, FailoverMode::Manual);
        promote_intent(&mut c, asked);
        fenced(&mut c, 3, 600);
        let p = c.run();
        let want = if promoted { promote_b_at_3() } else { vec![] };
        assert_eq!(p.actions, want, "elapsed {elapsed} asked {asked:?}");
        assert_eq!(p.volume_status.phase, VolumePhase::Degraded);
        let msg = &roam_crds::conditions::get(&p.volume_status.conditions, "PrimaryUnreachable")
            .unwrap()
            .message;
        let expected = match (promoted, asked == Some(3)) {
            (true, _) => "promoting b at epoch 3",
            (false, true) => "failover in",
            (false, false) => "failover is manual",
        };
        assert!(
            msg.contains(expected),
            "elapsed {elapsed} asked {asked:?}: {msg}"
        );
    }
}

#[test]
fn a_promotion_asked_for_an_unreachable_member_waits() {
    let mut c = lost_primary_case(60, FailoverMode::Manual);
    promote_intent(&mut c, Some(3));
    c.replicas[1].1 = ReplicaObs::Unreachable("connection refused".into());
    let p = c.run();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
}

#[test]
fn promoted_secondary_is_recorded_with_possible_loss() {
    let mut c = lost_primary_case(60, FailoverMode::Automatic);
    c.group.as_mut().unwrap().spec.desired_primary = "b".into();
    c.group.as_mut().unwrap().spec.epoch = 3;
    c.replicas[1].1 = primary_with(3, &[("c", MemberState::InSync, 0)]);
    let p = c.run();
    assert_eq!(
        p.actions,
        vec![Action::Configure {
            dc: "c".into(),
            primary: "b".into(),
            epoch: 3
        }]
    );
    let gs = p.group_status.unwrap();
    let f = gs.last_failover.unwrap();
    assert_eq!(
        (
            f.from.as_str(),
            f.to.as_str(),
            f.epoch,
            f.possible_loss_bytes
        ),
        ("a", "b", 3, 4096)
    );
    assert!(gs.primary_unreachable_since.is_none());
    assert_eq!(gs.primary.as_deref(), Some("b"));
    assert_eq!(p.volume_status.phase, VolumePhase::Degraded); // a still unreachable
}

#[test]
fn sync_failover_records_no_loss() {
    let mut c = lost_primary_case(60, FailoverMode::Automatic);
    c.spec.transfer_type = TransferType::Sync;
    c.group.as_mut().unwrap().spec.desired_primary = "b".into();
    c.group.as_mut().unwrap().spec.epoch = 3;
    c.replicas[1].1 = primary_with(3, &[]);
    let f = c.run().group_status.unwrap().last_failover.unwrap();
    assert_eq!(f.possible_loss_bytes, 0);
}

#[test]
fn failover_with_no_reachable_secondary_waits() {
    let mut c = lost_primary_case(60, FailoverMode::Automatic);
    c.replicas = vec![
        ("a", ReplicaObs::Unreachable("x".into())),
        ("b", ReplicaObs::Unreachable("x".into())),
        ("c", ReplicaObs::Unreachable("x".into())),
    ];
    let p = c.run();
    assert!(p.actions.is_empty());
    assert!(p.volume_status.conditions.iter().any(|c| {
        c.message
            .contains("no member of the in-sync set is reachable")
    }));
}

#[test]
fn failover_tie_prefers_member_nearest_wanted() {
    let mut c = lost_primary_case(60, FailoverMode::Automatic);
    c.replicas[1].1 = rep(MemberRole::Secondary, 2, 80);
    c.wanted = Some("c");
    let p = c.run();
    assert_eq!(
        p.actions,
        vec![Action::WriteIntent {
            primary: "c".into(),
            epoch: 3,
            reason: IntentReason::Failover
        }]
    );
    c.wanted = None;
    let p = c.run();
    assert_eq!(
        p.actions,
        vec![Action::WriteIntent {
            primary: "b".into(),
            epoch: 3,
            reason: IntentReason::Failover
        }]
    );
}

#[test]
fn returning_stale_primary_is_not_trusted() {
    // a comes back claiming primary at epoch 2 after b was promoted at 3 and then b went away.
    let mut c = lost_primary_case(0, FailoverMode::Automatic);
    {
        let g = c.group.as_mut().unwrap();
        g.spec.desired_primary = "b".into();
        g.spec.epoch = 3;
        let st = g.status.as_mut().unwrap();
        st.primary = Some("b".into());
        st.epoch = 3;
        st.primary_unreachable_since = None;
    }
    c.replicas = vec![
        ("a", rep(MemberRole::Primary, 2, 100)),
        ("b", ReplicaObs::Unreachable("x".into())),
        ("c", rep(MemberRole::Secondary, 3, 90)),
    ];
    let p = c.run();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.volume_status.phase, VolumePhase::Degraded);
    assert!(p.group_status.unwrap().primary_unreachable_since.is_some());
}

// ---------- status details ----------

#[test]
fn lag_is_reported_per_member_and_max() {
    let mut c = Case::new(vspec(&["a", "b", "c"], TransferType::Async));
    c.group = Some(group(&["a", "b", "c"], "a", 1, Some(gstatus("a", 1))));
    c.replicas = vec![
        (
            "a",
            primary_with(
                1,
                &[
                    ("b", MemberState::Lagging, 5000),
                    ("c", MemberState::InSync, 0),
                ],
            ),
        ),
        ("b", rep(MemberRole::Secondary, 1, 1)),
        ("c", rep(MemberRole::Secondary, 1, 1)),
    ];
    let p = c.run();
    assert_eq!(p.volume_status.lag_bytes, 5000);
    let gs = p.group_status.unwrap();
    assert_eq!(
        gs.members
            .iter()
            .find(|m| m.data_center == "b")
            .unwrap()
            .state,
        MemberState::Lagging
    );
    let in_sync = roam_crds::conditions::get(&gs.conditions, "InSync").unwrap();
    assert_eq!(in_sync.status, "False");
}

#[test]
fn phase_change_leaves_a_note() {
    let p = steady_ab("a").run();
    assert!(
        p.notes
            .iter()
            .any(|n| n.reason == "PhaseChanged" && n.message == "phase Ready")
    );
}

// ---------- properties ----------

fn arb_obs(max_epoch: u64) -> impl Strategy<Value = ReplicaObs> {
    prop_oneof![
        Just(ReplicaObs::Missing),
        Just(ReplicaObs::Unreachable("x".into())),
        (0..3u8, 0..=max_epoch, 0..100u64).prop_map(|(r, e, s)| {
            let role = match r {
                0 => MemberRole::None,
                1 => MemberRole::Primary,
                _ => MemberRole::Secondary,
            };
            ReplicaObs::Present(Replica {
                role,
                epoch: e,
                size_bytes: 1 << 30,
                durable_seq: s,
                secondaries: vec![],
            })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Whatever the storage systems report: at most one role change per plan,
    /// a role change never precedes its intent (Transfer/Promote only at the
    /// epoch already in the spec), intents never lower the epoch, and
    /// Configure never names an epoch below the group's status epoch.
    #[test]
    fn role_changes_are_safe(
        obs in proptest::collection::vec(arb_obs(6), 3),
        spec_epoch in 1..6u64,
        status_epoch in 0..6u64,
        desired in 0..3usize,
        status_primary in proptest::option::of(0..3usize),
        wanted in proptest::option::of(0..4usize),
        unreachable_for in proptest::option::of(0..100i64),
        fence in proptest::option::of((0..7u64, 0..40i64)),
        out_of_sync in proptest::collection::btree_set(0..3usize, 0..3),
    ) {
        let names = ["a", "b", "c"];
        let mut st = CopyVolumeGroupStatus { primary: status_primary.map(|i| names[i].to_string()), epoch: status_epoch, ..Default::default() };
        st.primary_unreachable_since = unreachable_for.map(|s| Time(now() - SignedDuration::from_secs(s)));
        st.out_of_sync = out_of_sync.iter().map(|i| names[*i].to_string()).collect();
        let mut c = Case::new(vspec(&names, TransferType::Sync));
        c.group = Some(group(&names, names[desired], spec_epoch, Some(st)));
        if let Some((epoch, ago)) = fence { fenced(&mut c, epoch, ago); }
        // Whether the lease of whoever was primary before spec_epoch has
        // surely run out.
        let lease_out = fence.is_some_and(|(e, ago)| e == spec_epoch && ago >= roam_crds::directory::PRIMARY_LEASE.as_secs() as i64);
        c.replicas = names.iter().zip(obs).map(|(n, o)| (*n, o)).collect();
        c.wanted = wanted.map(|i| ["a", "b", "c", "x"][i]);
        let p = c.run();
        let role_changes = p.actions.iter().filter(|a| matches!(a, Action::Transfer { .. } | Action::Promote { .. } | Action::WriteIntent { .. })).count();
        prop_assert!(role_changes <= 1, "{:?}", p.actions);
        for a in &p.actions {
            match a {
                Action::Transfer { epoch, to, from } => {
                    prop_assert_eq!(*epoch, spec_epoch);
                    prop_assert_eq!(to, names[desired]);
                    prop_assert_ne!(from, to);
                }
                Action::Promote { epoch, dc } => {
                    prop_assert_eq!(*epoch, spec_epoch);
                    prop_assert_eq!(dc, names[desired]);
                    // Raising the primary that answers at a newer epoch
                    // needs no fence; promoting anyone else needs the fence,
                    // its lease run out, and a member of the in-sync set.
                    let raised = c.replicas.iter().any(|(n, o)| *n == dc.as_str() && matches!(o, ReplicaObs::Present(r) if r.role == MemberRole::Primary));
                    prop_assert!(raised || lease_out, "promoted {} before the lease ran out: {:?}", dc, fence);
                    prop_assert!(raised || !c.group.as_ref().unwrap().status.as_ref().unwrap().out_of_sync.contains(dc), "promoted {} recorded out of sync", dc);
                }
                Action::WriteIntent { epoch, reason, primary } => {
                    prop_assert!(*epoch >= spec_epoch);
                    if *reason != IntentReason::Adopt { prop_assert!(*epoch > spec_epoch); }
                    if *reason == IntentReason::Failover {
                        prop_assert!(!out_of_sync.iter().any(|i| names[*i] == primary.as_str()), "failover to {} recorded out of sync", primary);
                    }
                }
                Action::Configure { epoch, .. } => prop_assert!(*epoch >= status_epoch.min(spec_epoch)),
                Action::CreateGroup(_) => prop_assert!(false, "group exists"),
                _ => {}
            }
        }
        let gs = p.group_status.unwrap();
        prop_assert!(gs.epoch >= status_epoch, "status epoch went back");
    }
}

/// Every (current primary, wanted DC, transfer type): a steady group either
/// stays Ready with no action, or writes exactly one intent for the member
/// `choose_primary` names, at epoch + 1.
#[test]
fn steady_relocation_table() {
    let names = ["a", "b", "c"];
    let mut cases = 0;
    for p in names {
        for wanted in [
            None,
            Some("a"),
            Some("b"),
            Some("c"),
            Some("x"),
            Some("nowhere"),
        ] {
            for t in [TransferType::Sync, TransferType::Async] {
                let mut c = Case::new(vspec(&names, t));
                c.group = Some(group(&names, p, 7, Some(gstatus(p, 7))));
                c.replicas = names
                    .iter()
                    .map(|d| {
                        let obs = if *d == p {
                            primary_with(7, &[])
                        } else {
                            rep(MemberRole::Secondary, 7, 1)
                        };
                        (*d, obs)
                    })
                    .collect();
                c.wanted = wanted;
                let p_ = c.run();
                let target = wanted.and_then(|w| {
                    roam_crds::proximity::choose_primary(w, &names.map(String::from), &three_dcs())
                });
                match target.filter(|t| t != p) {
                    Some(t) => {
                        assert_eq!(
                            p_.actions,
                            vec![Action::WriteIntent {
                                primary: t.clone(),
                                epoch: 8,
                                reason: IntentReason::Relocate
                            }],
                            "primary {p} wanted {wanted:?} {t:?}"
                        );
                        assert_eq!(p_.volume_status.phase, VolumePhase::Relocating);
                    }
                    None => {
                        assert!(
                            p_.actions.is_empty(),
                            "primary {p} wanted {wanted:?}: {:?}",
                            p_.actions
                        );
                        assert_eq!(p_.volume_status.phase, VolumePhase::Ready);
                    }
                }
                assert_eq!(p_.volume_status.primary_data_center.as_deref(), Some(p));
                assert_eq!(p_.volume_status.epoch, 7);
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 36);
}

/// Every (lost primary, elapsed, grace, mode) for a three-member group.
#[test]
fn failover_timing_table() {
    let mut cases = 0;
    for grace in [1u32, 5, 30, 300] {
        for elapsed in [0i64, 1, 4, 5, 6, 29, 30, 31, 299, 300, 301] {
            for mode in [FailoverMode::Automatic, FailoverMode::Manual] {
                let mut c = lost_primary_case(elapsed, mode);
                c.spec.failover.grace_period_seconds = grace;
                let p = c.run();
                let due = mode == FailoverMode::Automatic && elapsed >= i64::from(grace);
                if due {
                    assert_eq!(
                        p.actions,
                        vec![Action::WriteIntent {
                            primary: "b".into(),
                            epoch: 3,
                            reason: IntentReason::Failover
                        }],
                        "grace {grace} elapsed {elapsed}"
                    );
                } else {
                    assert!(
                        p.actions.is_empty(),
                        "grace {grace} elapsed {elapsed} {mode:?}: {:?}",
                        p.actions
                    );
                }
                assert_eq!(p.volume_status.phase, VolumePhase::Degraded);
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 88);
}

#[test]
fn creation_steps_continue_in_place_and_relocation_steps_do_not() {
    use super::plan::continues_in_place;
    let configure = Action::Configure {
        dc: "a".into(),
        primary: "a".into(),
        epoch: 1,
    };
    let create = Action::CreateReplica { dc: "b".into() };
    let transfer = Action::Transfer {
        from: "a".into(),
        to: "b".into(),
        epoch: 2,
    };
    let intent = Action::WriteIntent {
        primary: "b".into(),
        epoch: 2,
        reason: IntentReason::Relocate,
    };
    assert!(!continues_in_place(&[]));
    assert!(continues_in_place(&[create.clone(), configure.clone()]));
    assert!(!continues_in_place(&[configure.clone(), transfer]));
    assert!(!continues_in_place(&[create, intent]));
    assert!(!continues_in_place(&[Action::Promote {
        dc: "b".into(),
        epoch: 3
    }]));
}
