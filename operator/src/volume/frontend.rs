//! A volume's frontends in its status (pure): what the node plugins reported
//! about the FUSE exports and loop devices they serve it through.
//!
//! A node plugin that finds a frontend of the volume broken writes a
//! [`FrontendFault`] annotation on the VirtualVolume, and removes it once
//! the volume carries I/O again (`roam_crds::frontend`). Here every such
//! report becomes the `FrontendHealthy` condition; while one stands, a volume
//! the replicas would call Ready is Degraded and not Ready, since its pod
//! can't read or write. A change either way is a Note, and those are Events
//! on the VirtualVolume and on its PersistentVolumeClaim.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use roam_crds::{VirtualVolumeStatus, VolumePhase, conditions, frontend::FrontendFault};

use super::plan::Note;

/// Reasons of the Notes that are recorded on the claim as well.
pub const BROKEN: &str = "FrontendBroken";
pub const HEALED: &str = "FrontendHealed";

/// The annotations of a VirtualVolume that are frontend reports, by node.
pub fn reports<'a>(
    annotations: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(String, FrontendFault)> {
    annotations
        .into_iter()
        .filter_map(|(k, v)| roam_crds::frontend::parse_fault(k, v))
        .collect()
}

/// Folds the reports into the status and returns the volume's phase.
pub fn fold(
    faults: &[(String, FrontendFault)],
    phase: VolumePhase,
    previous: Option<&VirtualVolumeStatus>,
    status: &mut VirtualVolumeStatus,
    notes: &mut Vec<Note>,
    generation: Option<i64>,
    now: &Time,
) -> VolumePhase {
    let was_healthy = previous
        .and_then(|p| conditions::get(&p.conditions, conditions::FRONTEND_HEALTHY))
        .is_none_or(|c| c.status == "True");
    let Some((_, first)) = faults.first() else {
        conditions::set(
            &mut status.conditions,
            conditions::FRONTEND_HEALTHY,
            true,
            "NoFaultReported",
            "no node plugin reports a broken frontend",
            generation,
            now.clone(),
        );
        if !was_healthy {
            notes.push(Note {
                warning: false,
                reason: HEALED,
                message: "no node plugin reports a broken frontend any more".into(),
            });
        }
        return phase;
    };
    let message = faults
        .iter()
        .map(|(node, f)| format!("node {node}: {} (since {})", f.message, f.since))
        .collect::<Vec<_>>()
        .join("; ");
    conditions::set(
        &mut status.conditions,
        conditions::FRONTEND_HEALTHY,
        false,
        &first.reason,
        &message,
        generation,
        now.clone(),
    );
    if was_healthy {
        notes.push(Note {
            warning: true,
            reason: BROKEN,
            message: message.clone(),
        });
    }
    if phase != VolumePhase::Ready {
        // Whatever keeps it from Ready already says so in Ready.
        return phase;
    }
    conditions::set(
        &mut status.conditions,
        conditions::READY,
        false,
        BROKEN,
        &message,
        generation,
        now.clone(),
    );
    VolumePhase::Degraded
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn fault(reason: &str) -> FrontendFault {
        FrontendFault {
            reason: reason.into(),
            message: "the FUSE export fails: ENOTCONN".into(),
            since: "2026-12-01T00:00:00Z".into(),
        }
    }

    fn ready_status() -> VirtualVolumeStatus {
        let mut s = VirtualVolumeStatus {
            phase: VolumePhase::Ready,
            ..Default::default()
        };
        conditions::set(
            &mut s.conditions,
            conditions::READY,
            true,
            "Ready",
            "phase Ready",
            Some(1),
            Time(Timestamp::now()),
        );
        s
    }

    fn condition<'a>(s: &'a VirtualVolumeStatus, t: &str) -> (&'a str, &'a str) {
        let c = conditions::get(&s.conditions, t).unwrap_or_else(|| panic!("no {t}"));
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn a_broken_frontend_makes_a_ready_volume_degraded_with_an_event_once() {
        let faults = vec![("n1".to_owned(), fault("ExportBroken"))];
        let now = Time(Timestamp::now());
        let mut status = ready_status();
        let mut notes = Vec::new();
        let phase = fold(
            &faults,
            VolumePhase::Ready,
            None,
            &mut status,
            &mut notes,
            Some(1),
            &now,
        );
        assert_eq!(phase, VolumePhase::Degraded);
        assert_eq!(condition(&status, conditions::READY), ("False", BROKEN));
        assert_eq!(
            condition(&status, conditions::FRONTEND_HEALTHY),
            ("False", "ExportBroken")
        );
        let c = conditions::get(&status.conditions, conditions::FRONTEND_HEALTHY).unwrap();
        assert!(
            c.message.contains("node n1: the FUSE export fails"),
            "{}",
            c.message
        );
        assert_eq!(notes.len(), 1);
        assert_eq!((notes[0].reason, notes[0].warning), (BROKEN, true));

        // The next reconcile sees the same report: no second Event.
        let previous = status.clone();
        let mut again = ready_status();
        let mut notes = Vec::new();
        fold(
            &faults,
            VolumePhase::Ready,
            Some(&previous),
            &mut again,
            &mut notes,
            Some(1),
            &now,
        );
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn the_report_removed_heals_the_volume_with_an_event() {
        let faults = vec![("n1".to_owned(), fault("ExportLost"))];
        let now = Time(Timestamp::now());
        let mut broken = ready_status();
        fold(
            &faults,
            VolumePhase::Ready,
            None,
            &mut broken,
            &mut Vec::new(),
            Some(1),
            &now,
        );

        let mut status = ready_status();
        let mut notes = Vec::new();
        let phase = fold(
            &[],
            VolumePhase::Ready,
            Some(&broken),
            &mut status,
            &mut notes,
            Some(1),
            &now,
        );
        assert_eq!(phase, VolumePhase::Ready);
        assert_eq!(condition(&status, conditions::READY).0, "True");
        assert_eq!(condition(&status, conditions::FRONTEND_HEALTHY).0, "True");
        assert_eq!(notes.len(), 1);
        assert_eq!((notes[0].reason, notes[0].warning), (HEALED, false));
    }

    #[test]
    fn a_volume_not_ready_for_another_cause_keeps_that_cause_in_ready() {
        let faults = vec![("n1".to_owned(), fault("ExportBroken"))];
        let now = Time(Timestamp::now());
        let mut status = VirtualVolumeStatus::default();
        conditions::set(
            &mut status.conditions,
            conditions::READY,
            false,
            "PrimaryUnreachable",
            "primary in a is unreachable",
            Some(1),
            now.clone(),
        );
        let phase = fold(
            &faults,
            VolumePhase::Degraded,
            None,
            &mut status,
            &mut Vec::new(),
            Some(1),
            &now,
        );
        assert_eq!(phase, VolumePhase::Degraded);
        assert_eq!(
            condition(&status, conditions::READY),
            ("False", "PrimaryUnreachable")
        );
        assert_eq!(condition(&status, conditions::FRONTEND_HEALTHY).0, "False");
    }

    #[test]
    fn only_frontend_reports_are_read_from_the_annotations() {
        let value = serde_json::to_string(&fault("ExportBroken")).unwrap();
        let annotations: std::collections::BTreeMap<String, String> = [
            (roam_crds::frontend::fault_annotation("n1"), value),
            (
                roam_crds::ATTACHED_NODE_ANNOTATION.to_owned(),
                "n1".to_owned(),
            ),
        ]
        .into();
        let got = reports(&annotations);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "n1");
    }
}
