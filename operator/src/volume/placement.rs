//! Placement of a new VirtualVolume (pure): which data centers hold a replica
//! and, in each, which storage system (the ready one with the most free space).

use roam_crds::{DataCenter, GroupMember, VirtualVolumeSpec, proximity};

/// Why a volume cannot be placed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementError {
    /// A requested data center has no DataCenter object.
    UnknownDataCenter(String),
    /// A requested data center has no ready storage system.
    NoReadyStorage(String),
    /// `replicas` asks for more data centers than have ready storage.
    NotEnoughDataCenters { wanted: u32, ready: u32 },
}

impl std::fmt::Display for PlacementError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownDataCenter(dc) => write!(f, "data center {dc:?} does not exist"),
            Self::NoReadyStorage(dc) => write!(f, "data center {dc:?} has no ready storage system"),
            Self::NotEnoughDataCenters { wanted, ready } => {
                write!(
                    f,
                    "{wanted} data centers requested but only {ready} have a ready storage system"
                )
            }
        }
    }
}

/// The data centers that hold a replica: `spec.dataCenters` in order, or the
/// `spec.replicas` ready data centers with the most free space (the wanted
/// one first when it is ready).
pub fn data_centers(
    spec: &VirtualVolumeSpec,
    wanted: Option<&str>,
    dcs: &[DataCenter],
) -> Result<Vec<String>, PlacementError> {
    if let Some(list) = &spec.data_centers {
        return Ok(list.clone());
    }
    let count = spec.replicas.unwrap_or(1);
    let mut ready: Vec<(&DataCenter, u64)> = dcs
        .iter()
        .filter(|d| !d.ready_storage().is_empty())
        .map(|d| (d, d.status.as_ref().map(|s| s.free_bytes).unwrap_or(0)))
        .collect();
    ready.sort_by(|(a, fa), (b, fb)| {
        let a_wanted = wanted.is_some() && a.metadata.name.as_deref() == wanted;
        let b_wanted = wanted.is_some() && b.metadata.name.as_deref() == wanted;
        b_wanted
            .cmp(&a_wanted)
            .then(fb.cmp(fa))
            .then(a.metadata.name.cmp(&b.metadata.name))
    });
    if (ready.len() as u32) < count {
        return Err(PlacementError::NotEnoughDataCenters {
            wanted: count,
            ready: ready.len() as u32,
        });
    }
    Ok(ready
        .into_iter()
        .take(count as usize)
        .filter_map(|(d, _)| d.metadata.name.clone())
        .collect())
}

/// One member per data center, on its ready storage system with the most
/// free space.
pub fn members(
    dc_names: &[String],
    volume_id: &str,
    dcs: &[DataCenter],
) -> Result<Vec<GroupMember>, PlacementError> {
    dc_names
        .iter()
        .map(|name| {
            let dc = dcs
                .iter()
                .find(|d| d.metadata.name.as_deref() == Some(name))
                .ok_or_else(|| PlacementError::UnknownDataCenter(name.clone()))?;
            let storage = dc
                .ready_storage()
                .into_iter()
                .next()
                .ok_or_else(|| PlacementError::NoReadyStorage(name.clone()))?;
            Ok(GroupMember {
                data_center: name.clone(),
                node: storage.node.clone(),
                endpoint: storage.endpoint.clone(),
                volume_id: volume_id.to_string(),
            })
        })
        .collect()
}

/// The first primary: where the volume is wanted (or the member nearest to
/// it), else the first member.
pub fn initial_primary(
    wanted: Option<&str>,
    member_dcs: &[String],
    dcs: &[DataCenter],
) -> Option<String> {
    wanted
        .and_then(|w| proximity::choose_primary(w, member_dcs, dcs))
        .or_else(|| member_dcs.first().cloned())
}
