//! From a CreateVolume request to a `VirtualVolume`: StorageClass
//! parameters, the volume's name and namespace, its size. Pure functions,
//! each error INVALID_ARGUMENT (or OUT_OF_RANGE for sizes) naming the field.

use std::collections::{BTreeMap, HashMap};

use roam_crds::{
    FailoverMode, FailoverPolicy, FailurePolicy, FsType, GRACE_PERIOD_SECONDS_MAX,
    GRACE_PERIOD_SECONDS_MIN, SyncLevel, TransferType, VirtualVolumeSpec,
};
use roam_proto::csi::CapacityRange;
use tonic::Status;

pub const P_DATA_CENTERS: &str = "dataCenters";
pub const P_REPLICAS: &str = "replicas";
pub const P_TRANSFER_TYPE: &str = "transferType";
pub const P_SYNC_LEVEL: &str = "syncLevel";
pub const P_MAX_LAG_BYTES: &str = "maxLagBytes";
pub const P_MAX_LAG_SECONDS: &str = "maxLagSeconds";
pub const P_FAILURE_POLICY: &str = "failurePolicy";
pub const P_FS_TYPE: &str = "fsType";
pub const P_FAILOVER_MODE: &str = "failoverMode";
pub const P_FAILOVER_GRACE: &str = "failoverGracePeriodSeconds";
pub const P_RELEASE_LOST_NODES: &str = "releaseLostNodes";
/// Set by the external-provisioner with `--extra-create-metadata`.
pub const P_PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
/// Prefix of the parameters the CO adds (ignored except the namespace).
const CO_PREFIX: &str = "csi.storage.k8s.io/";

/// Size used when the request gives no capacity range.
pub const DEFAULT_SIZE: u64 = 1 << 30;
/// Sizes are whole 4 KiB blocks (the loop device's block size).
const BLOCK: u64 = 4096;

/// The StorageClass parameters that shape the volume, sorted, without the
/// ones the CO adds: what idempotency compares.
pub fn placement_parameters(params: &HashMap<String, String>) -> BTreeMap<String, String> {
    params
        .iter()
        .filter(|(k, _)| !k.starts_with(CO_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn parse_u64(key: &str, value: &str) -> Result<u64, Status> {
    value.trim().parse::<u64>().map_err(|_| {
        Status::invalid_argument(format!(
            "parameters.{key} {value:?} is not a non-negative integer"
        ))
    })
}

/// Builds the VirtualVolume spec from the parameters. `default_replicas` is
/// used when neither `dataCenters` nor `replicas` is given.
pub fn volume_spec(
    params: &HashMap<String, String>,
    size_bytes: u64,
    default_replicas: u32,
) -> Result<VirtualVolumeSpec, Status> {
    let mut spec = VirtualVolumeSpec {
        size: roam_crds::quantity::from_bytes(size_bytes),
        data_centers: None,
        replicas: None,
        transfer_type: TransferType::Sync,
        sync_level: SyncLevel::Write,
        max_lag_bytes: None,
        max_lag_seconds: None,
        failure_policy: FailurePolicy::Block,
        failover: FailoverPolicy::default(),
        fs_type: None,
    };
    for (key, value) in placement_parameters(params) {
        match key.as_str() {
            P_DATA_CENTERS => {
                let mut dcs: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if dcs.is_empty() {
                    return Err(Status::invalid_argument(format!(
                        "parameters.{P_DATA_CENTERS} names no data center"
                    )));
                }
                let before = dcs.len();
                dcs.sort();
                dcs.dedup();
                if dcs.len() != before {
                    return Err(Status::invalid_argument(format!(
                        "parameters.{P_DATA_CENTERS} {value:?} names a data center twice"
                    )));
                }
                spec.data_centers = Some(dcs);
            }
            P_REPLICAS => {
                let n = parse_u64(&key, &value)?;
                if !(1..=16).contains(&n) {
                    return Err(Status::invalid_argument(format!(
                        "parameters.{P_REPLICAS} {n} is outside 1..=16"
                    )));
                }
                spec.replicas = Some(n as u32);
            }
            P_TRANSFER_TYPE => {
                spec.transfer_type = match value.as_str() {
                    "Sync" => TransferType::Sync,
                    "Async" => TransferType::Async,
                    other => {
                        return Err(Status::invalid_argument(format!(
                            "parameters.{P_TRANSFER_TYPE} {other:?} is not Sync or Async"
                        )));
                    }
                }
            }
            P_SYNC_LEVEL => {
                spec.sync_level = match value.as_str() {
                    "Write" => SyncLevel::Write,
                    "Flush" => SyncLevel::Flush,
                    other => {
                        return Err(Status::invalid_argument(format!(
                            "parameters.{P_SYNC_LEVEL} {other:?} is not Write or Flush"
                        )));
                    }
                }
            }
            P_MAX_LAG_BYTES => spec.max_lag_bytes = Some(parse_u64(&key, &value)?),
            P_MAX_LAG_SECONDS => spec.max_lag_seconds = Some(parse_u64(&key, &value)?),
            P_FAILURE_POLICY => {
                spec.failure_policy = match value.as_str() {
                    "Block" => FailurePolicy::Block,
                    "Degrade" => FailurePolicy::Degrade,
                    other => {
                        return Err(Status::invalid_argument(format!(
                            "parameters.{P_FAILURE_POLICY} {other:?} is not Block or Degrade"
                        )));
                    }
                }
            }
            P_FAILOVER_MODE => {
                spec.failover.mode = match value.as_str() {
                    "Automatic" => FailoverMode::Automatic,
                    "Manual" => FailoverMode::Manual,
                    other => {
                        return Err(Status::invalid_argument(format!(
                            "parameters.{P_FAILOVER_MODE} {other:?} is not Automatic or Manual"
                        )));
                    }
                }
            }
            P_FAILOVER_GRACE => {
                // The schema's bounds, checked here so that the error names
                // the StorageClass parameter, not a field of an object the
                // user never wrote.
                let n = parse_u64(&key, &value)?;
                let bounds =
                    u64::from(GRACE_PERIOD_SECONDS_MIN)..=u64::from(GRACE_PERIOD_SECONDS_MAX);
                if !bounds.contains(&n) {
                    return Err(Status::invalid_argument(format!(
                        "parameters.{P_FAILOVER_GRACE} {n} is outside \
                         {GRACE_PERIOD_SECONDS_MIN}..={GRACE_PERIOD_SECONDS_MAX}"
                    )));
                }
                spec.failover.grace_period_seconds = n as u32;
            }
            P_RELEASE_LOST_NODES => {
                spec.failover.release_lost_nodes = Some(match value.as_str() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(Status::invalid_argument(format!(
                            "parameters.{P_RELEASE_LOST_NODES} {other:?} is not true or false"
                        )));
                    }
                })
            }
            P_FS_TYPE => {
                spec.fs_type = Some(match value.as_str() {
                    "ext4" => FsType::Ext4,
                    "xfs" => FsType::Xfs,
                    other => {
                        return Err(Status::invalid_argument(format!(
                            "parameters.{P_FS_TYPE} {other:?} is not ext4 or xfs"
                        )));
                    }
                })
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "parameters.{other} is not a Roam parameter (known: {P_DATA_CENTERS}, \
                     {P_REPLICAS}, {P_TRANSFER_TYPE}, {P_SYNC_LEVEL}, {P_MAX_LAG_BYTES}, \
                     {P_MAX_LAG_SECONDS}, \
                     {P_FAILURE_POLICY}, {P_FAILOVER_MODE}, {P_FAILOVER_GRACE}, \
                     {P_RELEASE_LOST_NODES}, {P_FS_TYPE})"
                )));
            }
        }
    }
    if spec.data_centers.is_some() && spec.replicas.is_some() {
        return Err(Status::invalid_argument(format!(
            "parameters.{P_DATA_CENTERS} and parameters.{P_REPLICAS} exclude each other"
        )));
    }
    if spec.transfer_type == TransferType::Sync
        && (spec.max_lag_bytes.is_some() || spec.max_lag_seconds.is_some())
    {
        return Err(Status::invalid_argument(format!(
            "parameters.{P_MAX_LAG_BYTES} and {P_MAX_LAG_SECONDS} need {P_TRANSFER_TYPE}=Async"
        )));
    }
    if spec.transfer_type == TransferType::Async && spec.sync_level == SyncLevel::Flush {
        return Err(Status::invalid_argument(format!(
            "parameters.{P_SYNC_LEVEL}=Flush needs {P_TRANSFER_TYPE}=Sync"
        )));
    }
    if spec.data_centers.is_none() && spec.replicas.is_none() {
        spec.replicas = Some(default_replicas.max(1));
    }
    Ok(spec)
}

/// The size to create for a capacity range: the required bytes rounded up
/// to whole blocks, or [`DEFAULT_SIZE`] (capped by the limit) when none is
/// required. OUT_OF_RANGE when the limit can't be met.
pub fn size_for(range: Option<&CapacityRange>) -> Result<u64, Status> {
    let (required, limit) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if required < 0 || limit < 0 {
        return Err(Status::invalid_argument(
            "capacity_range.required_bytes and limit_bytes must not be negative",
        ));
    }
    let (required, limit) = (required as u64, limit as u64);
    if limit > 0 && required > limit {
        return Err(Status::invalid_argument(format!(
            "capacity_range.required_bytes {required} exceeds limit_bytes {limit}"
        )));
    }
    let size = if required > 0 {
        required.div_ceil(BLOCK) * BLOCK
    } else if limit > 0 {
        DEFAULT_SIZE.min(limit / BLOCK * BLOCK)
    } else {
        DEFAULT_SIZE
    };
    if size == 0 || (limit > 0 && size > limit) {
        return Err(Status::out_of_range(format!(
            "capacity_range: no size of whole {BLOCK}-byte blocks fits required_bytes {required} \
             and limit_bytes {limit}"
        )));
    }
    Ok(size)
}

/// Whether an existing volume of `size` bytes satisfies `range`.
pub fn size_satisfies(size: u64, range: Option<&CapacityRange>) -> bool {
    let Some(r) = range else { return true };
    (r.required_bytes <= 0 || size >= r.required_bytes as u64)
        && (r.limit_bytes <= 0 || size <= r.limit_bytes as u64)
}

/// A Kubernetes object name (DNS label, at most 63 characters) for a
/// CreateVolume name. Names that are already valid are kept; others are
/// lowercased, cleaned and suffixed with a hash of the original so that two
/// different names never map to the same object.
pub fn object_name(csi_name: &str) -> String {
    let valid = !csi_name.is_empty()
        && csi_name.len() <= 63
        && csi_name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !csi_name.starts_with('-')
        && !csi_name.ends_with('-');
    if valid {
        return csi_name.to_owned();
    }
    let mut cleaned = String::new();
    for c in csi_name.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (cleaned.is_empty() || cleaned.ends_with('-'))) {
            cleaned.push(c);
        }
    }
    cleaned.truncate(50);
    let cleaned = cleaned.trim_end_matches('-');
    let hash = fnv1a(csi_name.as_bytes());
    if cleaned.is_empty() {
        format!("vol-{:012x}", hash & 0xffff_ffff_ffff)
    } else {
        format!("{cleaned}-{:012x}", hash & 0xffff_ffff_ffff)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Splits a CSI volume id `<namespace>/<name>`; None when malformed.
pub fn split_volume_id(id: &str) -> Option<(&str, &str)> {
    let (ns, name) = id.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    (ok(ns) && ok(name)).then_some((ns, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn storage_class_parameters_map_to_the_spec() {
        let spec = volume_spec(
            &params(&[
                ("dataCenters", "dc-b, dc-a"),
                ("transferType", "Async"),
                ("maxLagBytes", "1048576"),
                ("failurePolicy", "Degrade"),
                ("fsType", "xfs"),
                (P_PVC_NAMESPACE, "apps"),
            ]),
            4096,
            3,
        )
        .unwrap();
        assert_eq!(spec.data_centers, Some(vec!["dc-a".into(), "dc-b".into()]));
        assert_eq!(spec.replicas, None);
        assert_eq!(spec.transfer_type, TransferType::Async);
        assert_eq!(spec.max_lag_bytes, Some(1 << 20));
        assert_eq!(spec.failure_policy, FailurePolicy::Degrade);
        assert_eq!(spec.fs_type, Some(FsType::Xfs));
        assert_eq!(spec.failover, FailoverPolicy::default());
        assert_eq!(spec.size.0, "4Ki");
        assert_eq!(
            volume_spec(&params(&[]), 4096, 2).unwrap().replicas,
            Some(2)
        );
    }

    #[test]
    fn the_sync_level_is_a_parameter() {
        let spec = volume_spec(&params(&[("syncLevel", "Flush")]), 4096, 1).unwrap();
        assert_eq!(spec.sync_level, SyncLevel::Flush);
        let spec = volume_spec(&params(&[]), 4096, 1).unwrap();
        assert_eq!(spec.sync_level, SyncLevel::Write);
    }

    #[test]
    fn failover_mode_and_grace_period_are_parameters() {
        let spec = volume_spec(
            &params(&[
                ("failoverMode", "Manual"),
                ("failoverGracePeriodSeconds", "120"),
            ]),
            4096,
            1,
        )
        .unwrap();
        assert_eq!(
            spec.failover,
            FailoverPolicy {
                mode: FailoverMode::Manual,
                grace_period_seconds: 120,
                release_lost_nodes: None,
            }
        );
        let spec = volume_spec(&params(&[("releaseLostNodes", "false")]), 4096, 1).unwrap();
        assert_eq!(spec.failover.release_lost_nodes, Some(false));
        let refused = volume_spec(&params(&[("releaseLostNodes", "yes")]), 4096, 1).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().contains("releaseLostNodes"),
            "{}",
            refused.message()
        );
        // Either alone keeps the other's default.
        let spec = volume_spec(&params(&[("failoverGracePeriodSeconds", "1")]), 4096, 1).unwrap();
        assert_eq!(spec.failover.mode, FailoverMode::Automatic);
        assert_eq!(spec.failover.grace_period_seconds, 1);
        let spec = volume_spec(&params(&[("failoverMode", "Automatic")]), 4096, 1).unwrap();
        assert_eq!(spec.failover, FailoverPolicy::default());
        let spec = volume_spec(&params(&[("failoverGracePeriodSeconds", "86400")]), 4096, 1);
        assert_eq!(spec.unwrap().failover.grace_period_seconds, 86400);
    }

    #[test]
    fn bad_failover_parameters_say_what_is_allowed() {
        for (kv, message) in [
            (
                ("failoverMode", "manual"),
                "parameters.failoverMode \"manual\" is not Automatic or Manual",
            ),
            (
                ("failoverGracePeriodSeconds", "0"),
                "parameters.failoverGracePeriodSeconds 0 is outside 1..=86400",
            ),
            (
                ("failoverGracePeriodSeconds", "86401"),
                "parameters.failoverGracePeriodSeconds 86401 is outside 1..=86400",
            ),
            (
                ("failoverGracePeriodSeconds", "30s"),
                "parameters.failoverGracePeriodSeconds \"30s\" is not a non-negative integer",
            ),
            (
                ("failoverGracePeriodSeconds", "-5"),
                "parameters.failoverGracePeriodSeconds \"-5\" is not a non-negative integer",
            ),
        ] {
            let e = volume_spec(&params(&[kv]), 4096, 1).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{kv:?}");
            assert_eq!(e.message(), message, "{kv:?}");
        }
    }

    #[test]
    fn bad_parameters_name_the_key() {
        for (kv, key) in [
            (vec![("replicas", "x")], "parameters.replicas"),
            (vec![("replicas", "0")], "parameters.replicas"),
            (vec![("transferType", "sync")], "parameters.transferType"),
            (vec![("dataCenters", "a,a")], "parameters.dataCenters"),
            (
                vec![("dataCenters", "a"), ("replicas", "1")],
                "exclude each other",
            ),
            (vec![("maxLagBytes", "5")], "need transferType=Async"),
            (vec![("colour", "blue")], "parameters.colour"),
            (vec![("fsType", "btrfs")], "parameters.fsType"),
            (vec![("syncLevel", "flush")], "parameters.syncLevel"),
            (
                vec![("syncLevel", "Flush"), ("transferType", "Async")],
                "syncLevel=Flush needs transferType=Sync",
            ),
        ] {
            let e = volume_spec(&params(&kv), 4096, 1).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(key), "{kv:?}: {}", e.message());
        }
    }

    #[test]
    fn sizes_round_up_to_blocks_and_respect_the_limit() {
        let r = |required, limit| CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        };
        assert_eq!(size_for(None).unwrap(), DEFAULT_SIZE);
        assert_eq!(size_for(Some(&r(1, 0))).unwrap(), 4096);
        assert_eq!(size_for(Some(&r(10 << 20, 0))).unwrap(), 10 << 20);
        assert_eq!(size_for(Some(&r(0, 1 << 20))).unwrap(), 1 << 20);
        assert_eq!(
            size_for(Some(&r(5000, 6000))).unwrap_err().code(),
            tonic::Code::OutOfRange
        );
        assert_eq!(
            size_for(Some(&r(10, 5))).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            size_for(Some(&r(-1, 0))).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert!(size_satisfies(8192, Some(&r(4096, 0))));
        assert!(!size_satisfies(8192, Some(&r(16384, 0))));
        assert!(!size_satisfies(8192, Some(&r(0, 4096))));
    }

    #[test]
    fn object_names_are_dns_labels_and_distinct() {
        assert_eq!(object_name("pvc-1234"), "pvc-1234");
        let a = object_name("sanity-Node Service-ABC");
        let b = object_name("sanity-node-service-abc");
        assert_ne!(a, b);
        assert!(a.starts_with("sanity-node-service-abc-"), "{a}");
        for name in [
            a.as_str(),
            &object_name(&"X".repeat(200)),
            &object_name("///"),
        ] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
    }

    #[test]
    fn volume_ids_split_into_namespace_and_name() {
        assert_eq!(split_volume_id("apps/data"), Some(("apps", "data")));
        assert_eq!(split_volume_id("no-slash"), None);
        assert_eq!(split_volume_id("a/b/c"), None);
        assert_eq!(split_volume_id("/b"), None);
    }
}
