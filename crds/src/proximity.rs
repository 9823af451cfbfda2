//! Choosing the primary for where a volume is wanted (claims 2 and 5).
//!
//! The wanted data center (the DC of the node a pod runs on, or that CSI
//! `ControllerPublishVolume` names) becomes primary when it holds a replica.
//! Otherwise the replica nearest to it is chosen, by the wanted DataCenter's
//! `spec.proximity` (lower is nearer); when that DC declares nothing about a
//! member, the member's own declared distance to the wanted DC is used. Ties
//! go to the lexicographically smallest name so every caller (operator, CSI
//! controller) picks the same one.

use crate::DataCenter;

/// Distance between two data centers as declared in either one's proximity
/// map (the wanted side first), or `None` when neither declares it.
pub fn distance(from: &str, to: &str, data_centers: &[DataCenter]) -> Option<u64> {
    let declared = |a: &str, b: &str| {
        data_centers
            .iter()
            .find(|dc| dc.metadata.name.as_deref() == Some(a))
            .and_then(|dc| dc.spec.proximity.get(b))
            .map(|v| u64::from(*v))
    };
    declared(from, to).or_else(|| declared(to, from))
}

/// Whether the DataCenter named `name` is cordoned (holds no primary).
pub fn is_cordoned(name: &str, data_centers: &[DataCenter]) -> bool {
    data_centers
        .iter()
        .any(|dc| dc.metadata.name.as_deref() == Some(name) && dc.spec.cordoned)
}

/// The data center whose replica should be primary when the volume is wanted
/// in `wanted_dc`: `wanted_dc` itself if it is a member, else the member
/// nearest to it. A cordoned member is never chosen. `None` when no
/// uncordoned member has a known distance to `wanted_dc` (the caller then
/// keeps the current primary).
pub fn choose_primary(
    wanted_dc: &str,
    member_dcs: &[String],
    data_centers: &[DataCenter],
) -> Option<String> {
    let eligible = |m: &&String| !is_cordoned(m, data_centers);
    if member_dcs.iter().filter(eligible).any(|m| m == wanted_dc) {
        return Some(wanted_dc.to_string());
    }
    member_dcs
        .iter()
        .filter(eligible)
        .filter_map(|m| distance(wanted_dc, m, data_centers).map(|d| (d, m)))
        .min()
        .map(|(_, m)| m.clone())
}

/// Every data center a volume held in `member_dcs` can be used from: its
/// members, and each other DataCenter for which [`choose_primary`] finds a
/// member (one with a known distance to it). A pod there is served remotely
/// by that member; this is the volume's CSI accessible topology. Sorted by
/// name, members included even when their DataCenter object is gone.
pub fn reachable_from(member_dcs: &[String], data_centers: &[DataCenter]) -> Vec<String> {
    let mut reachable: Vec<String> = data_centers
        .iter()
        .filter_map(|dc| dc.metadata.name.clone())
        .filter(|name| choose_primary(name, member_dcs, data_centers).is_some())
        .chain(member_dcs.iter().cloned())
        .collect();
    reachable.sort();
    reachable.dedup();
    reachable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DataCenterSpec;
    use std::collections::BTreeMap;

    fn dc(name: &str, prox: &[(&str, u32)]) -> DataCenter {
        let mut d = DataCenter::new(
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
        );
        d.metadata.name = Some(name.into());
        d
    }

    fn members(m: &[&str]) -> Vec<String> {
        m.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn wanted_member_is_chosen_even_without_proximity() {
        let dcs = vec![dc("a", &[]), dc("b", &[])];
        assert_eq!(
            choose_primary("b", &members(&["a", "b"]), &dcs).as_deref(),
            Some("b")
        );
    }

    #[test]
    fn nearest_member_by_wanted_dcs_map() {
        let dcs = vec![dc("c", &[("a", 20), ("b", 5)])];
        assert_eq!(
            choose_primary("c", &members(&["a", "b"]), &dcs).as_deref(),
            Some("b")
        );
    }

    #[test]
    fn falls_back_to_members_declared_distance() {
        let dcs = vec![dc("c", &[]), dc("a", &[("c", 3)]), dc("b", &[("c", 9)])];
        assert_eq!(
            choose_primary("c", &members(&["a", "b"]), &dcs).as_deref(),
            Some("a")
        );
    }

    #[test]
    fn wanted_side_wins_over_member_side() {
        let dcs = vec![
            dc("c", &[("b", 1)]),
            dc("a", &[("c", 1)]),
            dc("b", &[("c", 50)]),
        ];
        // c says b=1; a says c=1 but c's own map has no entry for a, so a's is used: tie → "a".
        assert_eq!(
            choose_primary("c", &members(&["a", "b"]), &dcs).as_deref(),
            Some("a")
        );
    }

    #[test]
    fn tie_goes_to_smallest_name() {
        let dcs = vec![dc("z", &[("b", 4), ("a", 4)])];
        assert_eq!(
            choose_primary("z", &members(&["b", "a"]), &dcs).as_deref(),
            Some("a")
        );
    }

    #[test]
    fn unknown_distances_give_none() {
        let dcs = vec![dc("a", &[]), dc("b", &[])];
        assert_eq!(choose_primary("x", &members(&["a", "b"]), &dcs), None);
        assert_eq!(choose_primary("x", &[], &dcs), None);
    }

    #[test]
    fn a_data_center_with_a_distance_to_a_member_can_use_the_volume() {
        // c declares b; d declares nothing and nobody declares d.
        let dcs = vec![
            dc("a", &[]),
            dc("b", &[]),
            dc("c", &[("b", 5)]),
            dc("d", &[]),
        ];
        assert_eq!(
            reachable_from(&members(&["a", "b"]), &dcs),
            members(&["a", "b", "c"])
        );
        // A member whose DataCenter object is gone still counts.
        assert_eq!(
            reachable_from(&members(&["a", "z"]), &dcs),
            members(&["a", "z"])
        );
    }

    #[test]
    fn a_cordoned_member_is_never_chosen() {
        let mut dcs = vec![
            dc("a", &[("b", 2), ("c", 10)]),
            dc("b", &[("a", 2)]),
            dc("c", &[]),
        ];
        dcs[0].spec.cordoned = true;
        let m = members(&["a", "b", "c"]);
        // Wanted in the cordoned member itself: its nearest other member.
        assert_eq!(choose_primary("a", &m, &dcs).as_deref(), Some("b"));
        assert!(is_cordoned("a", &dcs) && !is_cordoned("b", &dcs));
        // Every member cordoned: nothing to choose, the caller keeps it.
        for d in &mut dcs {
            d.spec.cordoned = true;
        }
        assert_eq!(choose_primary("a", &m, &dcs), None);
        // Still usable from there (served by no one new), as it holds replicas.
        assert_eq!(reachable_from(&m, &dcs), m);
    }
}
