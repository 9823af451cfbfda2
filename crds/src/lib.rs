//! Roam's API (group `roam.dev`, version `v1alpha1`): the types the Kubernetes
//! API server stores as Roam's directory (DESIGN.md section 3).
//!
//! - [`DataCenter`] (cluster scoped): which nodes form a data center, how near it
//!   is to the others, and (status) its storage systems.
//! - [`VirtualVolume`] (namespaced): what a user asks for. Its spec has no field
//!   the operator writes; everything the operator decides lives in its status
//!   and in the [`CopyVolumeGroup`].
//! - [`CopyVolumeGroup`] (namespaced, owned by the VirtualVolume of the same
//!   name): the real volumes, one per data center, the desired primary and the
//!   epoch. Written only by the operator.
//!
//! This crate does no I/O. Besides the types it holds the pure decisions both
//! the operator and the CSI driver rely on: [`proximity::choose_primary`],
//! [`datacenter::data_center_of_node`] and [`quantity::parse_bytes`].

// kube-derive's repeated `printcolumn(...)` and `validation = ...` arguments
// look like duplicated attributes to clippy.
#![allow(clippy::duplicated_attributes)]

pub mod conditions;
pub mod copyvolumegroup;
pub mod datacenter;
pub mod directory;
pub mod frontend;
pub mod generate;
pub mod proximity;
pub mod quantity;
pub mod virtualvolume;

pub use copyvolumegroup::{
    CopyVolumeGroup, CopyVolumeGroupSpec, CopyVolumeGroupStatus, FailoverRecord, GroupMember,
    MemberRole, MemberState, MemberStatus, RelocationRecord,
};
pub use datacenter::{DataCenter, DataCenterSpec, DataCenterStatus, StorageSystemStatus};
pub use virtualvolume::{
    FailoverMode, FailoverPolicy, FailurePolicy, FsType, GRACE_PERIOD_SECONDS_MAX,
    GRACE_PERIOD_SECONDS_MIN, SyncLevel, TransferType, VirtualVolume, VirtualVolumeSpec,
    VirtualVolumeStatus, VolumePhase,
};

/// API group of every Roam resource.
pub const GROUP: &str = "roam.dev";
/// API version of every Roam resource.
pub const VERSION: &str = "v1alpha1";
/// CSI driver name (`CSIDriver` object, `PersistentVolume.spec.csi.driver`,
/// `VolumeAttachment.spec.attacher`).
pub const DRIVER_NAME: &str = "roam.dev";
/// Node label naming the node's data center (unless a DataCenter selects its
/// nodes by `nodeSelector`).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Node annotation: the endpoint URL of the node's storage system
/// (e.g. `http://10.0.0.2:7100`). Written by `roam-csi node` at start-up.
pub const STORAGE_ENDPOINT_ANNOTATION: &str = "roam.dev/storage-endpoint";
/// VirtualVolume annotation: the node the volume is published to. Written by
/// CSI `ControllerPublishVolume`, removed by `ControllerUnpublishVolume`; the
/// operator moves the primary to that node's data center (claim 13).
pub const ATTACHED_NODE_ANNOTATION: &str = "roam.dev/attached-node";
/// VirtualVolume annotation: the CreateVolume name the volume was created
/// from, kept for idempotency when the name had to be sanitized.
pub const CSI_NAME_ANNOTATION: &str = "roam.dev/csi-name";
/// CopyVolumeGroup annotation: the epoch of a pending intent that a person
/// asked for as a failover (`kubectl roam promote`, written with the intent
/// while the primary did not answer). In `Manual` failover mode the operator
/// promotes only an intent carrying it; a later intent has a higher epoch,
/// so a stale annotation never applies to it.
pub const PROMOTE_EPOCH_ANNOTATION: &str = "roam.dev/promote-epoch";
/// Finalizer the operator puts on a VirtualVolume so that deleting it deletes
/// its real volumes first.
pub const VOLUME_FINALIZER: &str = "roam.dev/real-volumes";
/// Field manager the operator uses for server-side apply.
pub const OPERATOR_MANAGER: &str = "roam-operator";
/// Label the operator sets on a CopyVolumeGroup naming its VirtualVolume.
pub const VOLUME_LABEL: &str = "roam.dev/virtual-volume";

/// The real volume id used with the storage systems for a VirtualVolume
/// (storage.proto `volume_id`): `<namespace>.<name>`. Both parts are DNS
/// names, which never contain `.`-free ambiguity problems because a namespace
/// cannot contain a dot.
pub fn real_volume_id(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

/// CSI volume id of a VirtualVolume: `<namespace>/<name>`.
pub fn csi_volume_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}
