//! What a node plugin tells the directory about the frontends it serves.
//!
//! The node plugin is the only one that sees a staged volume's FUSE export
//! and loop device. When one stops carrying I/O (its connection aborted, its
//! threads gone, or left behind by an earlier run of the plugin) the plugin
//! writes a [`FrontendFault`] as an annotation on the VirtualVolume, under a
//! key of its own node ([`fault_annotation`]), and removes it once the fault
//! is gone (the volume staged again, or unstaged). The operator folds every
//! such annotation into the volume's `FrontendHealthy` and `Ready`
//! conditions and records Events: the status has one writer, and a node
//! never needs to read or merge another's report.

use serde::{Deserialize, Serialize};

/// Prefix of the annotation keys; the name part is the node's.
pub const FAULT_ANNOTATION_PREFIX: &str = "frontend.roam.dev/";

/// Longest name part of an annotation key (Kubernetes' limit).
const MAX_NAME: usize = 63;

/// A frontend that stopped carrying I/O on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FrontendFault {
    /// CamelCase cause: `ExportBroken`, `ExportLost`.
    pub reason: String,
    /// What broke, in words a user acts on.
    pub message: String,
    /// When the node plugin first saw it (RFC 3339).
    pub since: String,
}

/// The annotation key of `node`'s report. Node names longer than an
/// annotation name may be are cut and given a hash of the whole name, so
/// two long names never share a key.
pub fn fault_annotation(node: &str) -> String {
    let name: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.len() <= MAX_NAME && name == node {
        return format!("{FAULT_ANNOTATION_PREFIX}{name}");
    }
    // FNV-1a: stable across processes and versions, unlike std's hasher.
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let keep = MAX_NAME - 9;
    let head = name[..name.len().min(keep)].trim_end_matches(['-', '.', '_']);
    format!("{FAULT_ANNOTATION_PREFIX}{head}-{:08x}", hash as u32)
}

/// The node's name-part of a report's key, and the report; None for other
/// annotations and for values that are no report.
pub fn parse_fault(key: &str, value: &str) -> Option<(String, FrontendFault)> {
    let node = key.strip_prefix(FAULT_ANNOTATION_PREFIX)?;
    let fault = serde_json::from_str(value).ok()?;
    Some((node.to_owned(), fault))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_name_that_fits_is_the_key() {
        assert_eq!(fault_annotation("dc-a-node"), "frontend.roam.dev/dc-a-node");
    }

    #[test]
    fn long_names_are_cut_and_stay_distinct() {
        let a = format!("{}a", "n".repeat(80));
        let b = format!("{}b", "n".repeat(80));
        let (ka, kb) = (fault_annotation(&a), fault_annotation(&b));
        assert_ne!(ka, kb);
        for k in [&ka, &kb] {
            let name = k.strip_prefix(FAULT_ANNOTATION_PREFIX).unwrap();
            assert!(name.len() <= MAX_NAME, "{name} is {} long", name.len());
        }
    }

    #[test]
    fn a_report_round_trips_and_other_annotations_are_not_reports() {
        let fault = FrontendFault {
            reason: "ExportBroken".into(),
            message: "the FUSE connection was aborted".into(),
            since: "2026-12-01T00:00:00Z".into(),
        };
        let key = fault_annotation("n1");
        let value = serde_json::to_string(&fault).unwrap();
        assert_eq!(parse_fault(&key, &value), Some(("n1".into(), fault)));
        assert_eq!(parse_fault("roam.dev/attached-node", &value), None);
        assert_eq!(parse_fault(&key, "not json"), None);
    }
}
