//! What `kubectl roam status` shows, built from a VirtualVolume and its
//! CopyVolumeGroup (pure), and its three renderings: a table in human units,
//! or JSON/YAML with exact numbers for scripts.
//!
//! The primary, epoch and lag come from the CopyVolumeGroup's status (what
//! the storage systems confirmed), not from the VirtualVolume's copy of it.

use std::fmt::Write;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use roam_crds::{CopyVolumeGroup, MemberRole, MemberState, VirtualVolume};
use serde::Serialize;

use crate::units;

/// One volume as `status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeView {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    pub transfer_type: String,
    pub size_bytes: u64,
    /// Confirmed primary data center.
    pub primary: Option<String>,
    /// Data center the operator is moving the primary to, while one is pending.
    pub desired_primary: Option<String>,
    pub epoch: u64,
    /// Largest lag of any secondary.
    pub lag_bytes: u64,
    pub lag_seconds: f64,
    /// Where the volume is wanted (its pod's data center).
    pub wanted_data_center: Option<String>,
    pub members: Vec<MemberView>,
    pub last_relocation: Option<roam_crds::RelocationRecord>,
    pub last_failover: Option<roam_crds::FailoverRecord>,
    pub primary_unreachable_since: Option<String>,
    pub conditions: Vec<ConditionView>,
}

/// One member.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    pub data_center: String,
    pub node: String,
    pub role: MemberRole,
    pub state: MemberState,
    pub epoch: u64,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
}

/// One condition (of the VirtualVolume, which carries the group's too).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

impl From<&Condition> for ConditionView {
    fn from(c: &Condition) -> Self {
        Self {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            last_transition_time: c.last_transition_time.0.to_string(),
        }
    }
}

/// The view of `vv` and its group (`None` before placement).
pub fn build(vv: &VirtualVolume, group: Option<&CopyVolumeGroup>) -> VolumeView {
    let vs = vv.status.clone().unwrap_or_default();
    let gs = group.and_then(|g| g.status.clone()).unwrap_or_default();
    let members: Vec<MemberView> = group
        .map(|g| {
            g.spec
                .members
                .iter()
                .map(|m| {
                    let s = gs.members.iter().find(|s| s.data_center == m.data_center);
                    MemberView {
                        data_center: m.data_center.clone(),
                        node: m.node.clone(),
                        role: s.map(|s| s.role).unwrap_or_default(),
                        state: s.map(|s| s.state).unwrap_or_default(),
                        epoch: s.map_or(0, |s| s.epoch),
                        lag_bytes: s.map_or(0, |s| s.lag_bytes),
                        lag_seconds: s.map_or(0.0, |s| s.lag_seconds),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let desired = group
        .filter(|g| {
            g.spec.epoch > gs.epoch || gs.primary.as_deref() != Some(&g.spec.desired_primary)
        })
        .map(|g| g.spec.desired_primary.clone());
    VolumeView {
        namespace: vv.namespace().unwrap_or_default(),
        name: vv.name_any(),
        phase: vs.phase.as_str().to_string(),
        // The sync level only when it is not the default.
        transfer_type: match (vv.spec.transfer_type, vv.spec.sync_level) {
            (roam_crds::TransferType::Sync, roam_crds::SyncLevel::Flush) => "Sync/Flush".into(),
            (t, _) => format!("{t:?}"),
        },
        size_bytes: vs.size_bytes,
        primary: if group.is_some() {
            gs.primary.clone()
        } else {
            vs.primary_data_center.clone()
        },
        desired_primary: desired,
        epoch: if group.is_some() { gs.epoch } else { vs.epoch },
        lag_bytes: if group.is_some() {
            gs.lag_bytes
        } else {
            vs.lag_bytes
        },
        lag_seconds: if group.is_some() {
            members
                .iter()
                .map(|m: &MemberView| m.lag_seconds)
                .fold(0.0, f64::max)
        } else {
            vs.lag_seconds
        },
        wanted_data_center: vs.wanted_data_center.clone(),
        members,
        last_relocation: gs.last_relocation.clone(),
        last_failover: gs.last_failover.clone(),
        primary_unreachable_since: gs.primary_unreachable_since.map(|t| t.0.to_string()),
        conditions: vs.conditions.iter().map(ConditionView::from).collect(),
    }
}

/// One volume in full, as `kubectl describe` lays it out.
pub fn describe(v: &VolumeView) -> String {
    let mut out = String::new();
    let field = |out: &mut String, k: &str, val: &str| {
        let _ = writeln!(out, "{:<18}{val}", format!("{k}:"));
    };
    field(&mut out, "Volume", &format!("{}/{}", v.namespace, v.name));
    field(&mut out, "Phase", &v.phase);
    field(&mut out, "Transfer", &v.transfer_type);
    field(&mut out, "Size", &units::bytes(v.size_bytes));
    let primary = match &v.primary {
        Some(p) => format!("{p} (epoch {})", v.epoch),
        None => format!("<none> (epoch {})", v.epoch),
    };
    field(&mut out, "Primary", &primary);
    if let Some(d) = &v.desired_primary {
        field(&mut out, "Moving to", d);
    }
    if let Some(since) = &v.primary_unreachable_since {
        field(&mut out, "Unreachable since", since);
    }
    field(
        &mut out,
        "Wanted in",
        v.wanted_data_center.as_deref().unwrap_or("<no pod>"),
    );
    field(&mut out, "Lag", &units::lag(v.lag_bytes, v.lag_seconds));
    let reloc = match &v.last_relocation {
        Some(r) => format!(
            "{} -> {} at epoch {}, took {}, {}",
            r.from,
            r.to,
            r.epoch,
            units::millis(r.duration_millis),
            r.at.0
        ),
        None => "<none>".into(),
    };
    field(&mut out, "Last relocation", &reloc);
    let fo = match &v.last_failover {
        Some(f) => format!(
            "{} -> {} at epoch {}, possible loss {}, {}",
            f.from,
            f.to,
            f.epoch,
            units::lag(f.possible_loss_bytes, f.possible_loss_seconds),
            f.at.0
        ),
        None => "<none>".into(),
    };
    field(&mut out, "Last failover", &fo);
    out.push_str("Members:\n");
    let rows: Vec<Vec<String>> = v
        .members
        .iter()
        .map(|m| {
            vec![
                m.data_center.clone(),
                m.node.clone(),
                format!("{:?}", m.role),
                format!("{:?}", m.state),
                m.epoch.to_string(),
                units::lag(m.lag_bytes, m.lag_seconds),
            ]
        })
        .collect();
    out.push_str(&indent(&table(
        &["DATA CENTER", "NODE", "ROLE", "STATE", "EPOCH", "LAG"],
        &rows,
    )));
    out.push_str("Conditions:\n");
    let rows: Vec<Vec<String>> = v
        .conditions
        .iter()
        .map(|c| {
            vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            ]
        })
        .collect();
    out.push_str(&indent(&table(
        &["TYPE", "STATUS", "REASON", "MESSAGE"],
        &rows,
    )));
    out
}

/// Several volumes, one line each.
pub fn list(views: &[VolumeView]) -> String {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let secondaries: Vec<String> = v
                .members
                .iter()
                .filter(|m| Some(&m.data_center) != v.primary.as_ref())
                .map(|m| format!("{}={:?}", m.data_center, m.state))
                .collect();
            vec![
                v.namespace.clone(),
                v.name.clone(),
                v.phase.clone(),
                v.primary.clone().unwrap_or_else(|| "<none>".into()),
                v.epoch.to_string(),
                v.transfer_type.clone(),
                units::lag(v.lag_bytes, v.lag_seconds),
                secondaries.join(","),
            ]
        })
        .collect();
    table(
        &[
            "NAMESPACE",
            "NAME",
            "PHASE",
            "PRIMARY",
            "EPOCH",
            "TRANSFER",
            "LAG",
            "SECONDARIES",
        ],
        &rows,
    )
}

/// Columns padded to their widest cell, three spaces apart (kubectl's layout).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                let _ = write!(out, "{c:<w$}   ", w = width[i]);
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use roam_crds::{CopyVolumeGroupSpec, CopyVolumeGroupStatus, GroupMember, MemberStatus};

    fn vv() -> VirtualVolume {
        let spec = serde_json::from_value(serde_json::json!({
            "size": "1Gi", "dataCenters": ["a", "b"], "transferType": "Async"
        }))
        .unwrap();
        let mut v = VirtualVolume::new("db", spec);
        v.metadata.namespace = Some("apps".into());
        v
    }

    fn group(primary: &str, epoch: u64, lag: u64) -> CopyVolumeGroup {
        let member = |dc: &str| GroupMember {
            data_center: dc.into(),
            node: format!("{dc}-n1"),
            endpoint: format!("http://{dc}:7100"),
            volume_id: "apps.db".into(),
        };
        let mut g = CopyVolumeGroup::new(
            "db",
            CopyVolumeGroupSpec {
                members: vec![member("a"), member("b")],
                desired_primary: primary.into(),
                epoch,
                transfer_type: roam_crds::TransferType::Async,
                sync_level: roam_crds::SyncLevel::Write,
                failure_policy: roam_crds::FailurePolicy::Block,
                max_lag_bytes: 0,
                max_lag_seconds: 0,
                size_bytes: 1 << 30,
            },
        );
        g.status = Some(CopyVolumeGroupStatus {
            primary: Some(primary.into()),
            epoch,
            lag_bytes: lag,
            members: vec![
                MemberStatus {
                    data_center: primary.into(),
                    role: MemberRole::Primary,
                    state: MemberState::InSync,
                    epoch,
                    ..Default::default()
                },
                MemberStatus {
                    data_center: if primary == "a" { "b" } else { "a" }.into(),
                    role: MemberRole::Secondary,
                    state: MemberState::Lagging,
                    lag_bytes: lag,
                    lag_seconds: 1.5,
                    epoch,
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        g
    }

    #[test]
    fn primary_epoch_and_lag_come_from_the_group() {
        let v = build(&vv(), Some(&group("b", 4, 3 << 20)));
        assert_eq!(
            (v.primary.as_deref(), v.epoch, v.lag_bytes),
            (Some("b"), 4, 3 << 20)
        );
        assert_eq!(v.desired_primary, None);
        assert_eq!(v.members[0].node, "a-n1");
        let text = describe(&v);
        assert!(text.contains("Primary:          b (epoch 4)"), "{text}");
        assert!(text.contains("3.0 MiB (1.5s)"), "{text}");
    }

    #[test]
    fn a_pending_intent_shows_where_the_primary_goes() {
        let mut g = group("a", 2, 0);
        g.spec.desired_primary = "b".into();
        g.spec.epoch = 3;
        let v = build(&vv(), Some(&g));
        assert_eq!(v.desired_primary.as_deref(), Some("b"));
        assert!(describe(&v).contains("Moving to:        b"));
    }

    #[test]
    fn without_a_group_the_volume_still_shows() {
        let v = build(&vv(), None);
        assert_eq!((v.primary.clone(), v.members.len()), (None, 0));
        assert!(list(&[v]).contains("<none>"));
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A     BB\nxyz   1\n");
    }
}
