//! `VirtualVolume` (namespaced): what a user asks for — a size, the data
//! centers that hold a replica, how writes reach the secondaries, and what to
//! do when something fails.
//!
//! Its spec has **no field the operator writes**: the user (or the CSI
//! controller's CreateVolume) is its only writer, and everything the operator
//! decides lives in the status and in the [`crate::CopyVolumeGroup`]. The
//! placement fields (`dataCenters`, `replicas`, `transferType`, `syncLevel`) are immutable
//! and `size` can only grow; CEL rules in the schema enforce both.

use k8s_openapi::apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::Condition};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A volume replicated across data centers whose primary follows the pod.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "roam.dev",
    version = "v1alpha1",
    kind = "VirtualVolume",
    plural = "virtualvolumes",
    shortname = "vv",
    namespaced,
    status = "VirtualVolumeStatus",
    printcolumn(name = "Size", type_ = "string", json_path = ".spec.size"),
    printcolumn(
        name = "Primary",
        type_ = "string",
        json_path = ".status.primaryDataCenter"
    ),
    printcolumn(name = "Transfer", type_ = "string", json_path = ".spec.transferType"),
    printcolumn(
        name = "Lag",
        type_ = "integer",
        json_path = ".status.lagBytes",
        description = "largest secondary lag, bytes"
    ),
    printcolumn(
        name = "Epoch",
        type_ = "integer",
        json_path = ".status.epoch",
        priority = 1
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("(has(self.dataCenters) && size(self.dataCenters) > 0) || (has(self.replicas) && self.replicas > 0)").message("name at least one data center: set spec.dataCenters or spec.replicas"),
    validation = Rule::new("!(has(self.dataCenters) && has(self.replicas))").message("set spec.dataCenters or spec.replicas, not both"),
    validation = Rule::new("self.transferType == 'Async' || (!has(self.maxLagBytes) && !has(self.maxLagSeconds))").message("spec.maxLagBytes and spec.maxLagSeconds apply only to transferType Async"),
    validation = Rule::new("self.transferType == 'Sync' || self.syncLevel == 'Write'").message("spec.syncLevel Flush applies only to transferType Sync"),
    validation = Rule::new("has(self.dataCenters) == has(oldSelf.dataCenters) && (!has(self.dataCenters) || self.dataCenters == oldSelf.dataCenters)").message("spec.dataCenters is immutable"),
    validation = Rule::new("has(self.replicas) == has(oldSelf.replicas) && (!has(self.replicas) || self.replicas == oldSelf.replicas)").message("spec.replicas is immutable"),
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualVolumeSpec {
    /// Size of the volume (a quantity such as `10Gi`, or bytes). It may grow,
    /// never shrink.
    #[x_kube(
        validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))").message("spec.size must be a positive quantity such as 10Gi"),
        validation = Rule::new("!isQuantity(string(self)) || !isQuantity(string(oldSelf)) || quantity(string(self)).compareTo(quantity(string(oldSelf))) >= 0").message("spec.size may grow but never shrink"),
    )]
    pub size: Quantity,

    /// Data centers (DataCenter names) that each hold one replica. Unique.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub data_centers: Option<Vec<String>>,

    /// Instead of `dataCenters`: how many data centers hold a replica; the
    /// operator picks the ready data centers with the most free space.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub replicas: Option<u32>,

    /// How writes reach the secondaries: `Sync` (acknowledged after every
    /// member of the in-sync set holds them) or `Async` (sent in the
    /// background). The contract: under Sync, every write acknowledged before
    /// a flush (or FUA) that completed is on every member of the in-sync set
    /// and survives the loss of any one data center and any crash of any
    /// process; under Async, what can be lost is at most what status reported
    /// as the possible loss. Either way, no two members accept writes at
    /// once, and a member that says InSync holds every write up to its
    /// reported position. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.transferType is immutable"))]
    pub transfer_type: TransferType,

    /// Sync only: what a write waits for. `Write` (the default): every write
    /// waits until every member of the in-sync set holds it (one round
    /// trip). `Flush`: a write waits only until it is queued, in order, to
    /// every member; only a flush (fsync, O_SYNC, FUA) waits. At both levels
    /// a flush completes once everything before it is on the disk of every
    /// member of the in-sync set, so nothing the application made durable is
    /// lost; at `Flush` a failover lands on a prefix of the write order, as a
    /// disk does after a power cut. `Flush` is for databases, which flush
    /// what they need durable. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.syncLevel is immutable"))]
    pub sync_level: SyncLevel,

    /// Async only: the largest lag, in bytes, before new writes wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_lag_bytes: Option<u64>,

    /// Async only: the largest lag, in seconds, before new writes wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_lag_seconds: Option<u64>,

    /// What writes do while a secondary is unreachable: `Block` (wait, then
    /// fail: the in-sync set never shrinks, so a flush never completes
    /// without every member) or `Degrade` (go on once the secondary's removal
    /// from the in-sync set is durably recorded; it resyncs what changed and
    /// rejoins only after a copy proven complete). A failover promotes
    /// only a member of the in-sync set.
    #[serde(default)]
    pub failure_policy: FailurePolicy,

    /// When and how the operator promotes a secondary if the primary's
    /// storage system is gone.
    #[serde(default)]
    pub failover: FailoverPolicy,

    /// Filesystem the CSI node plugin creates on the volume (mount mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_type: Option<FsType>,
}

/// How writes reach the secondaries.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum TransferType {
    /// A write is acknowledged once every in-sync secondary holds it.
    #[default]
    Sync,
    /// A write is acknowledged once the primary holds it; the sender ships it later.
    Async,
}

/// Sync groups: what a write waits for; a flush always waits for the disk of
/// every member of the in-sync set.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum SyncLevel {
    /// Every write waits until every member of the in-sync set holds it.
    #[default]
    Write,
    /// A write waits only until it is queued to every member; only flushes wait.
    Flush,
}

/// What writes do while a secondary is unreachable.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Writes wait, then fail.
    #[default]
    Block,
    /// Writes go on; the secondary is marked out of sync and resynced later.
    Degrade,
}

/// Filesystem on the volume.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    /// ext4
    Ext4,
    /// xfs
    Xfs,
}

/// Failover policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FailoverPolicy {
    /// `Automatic`: promote the most up-to-date reachable secondary once the
    /// primary has been unreachable for `gracePeriodSeconds`. `Manual`: only
    /// report it (promote with `kubectl roam promote`).
    #[serde(default)]
    pub mode: FailoverMode,
    /// How long the primary's storage system must be unreachable before an
    /// automatic failover.
    #[serde(default = "default_grace")]
    #[schemars(range(min = GRACE_PERIOD_SECONDS_MIN, max = GRACE_PERIOD_SECONDS_MAX))]
    pub grace_period_seconds: u32,
    /// After a failover away from a data center, delete the pods that use
    /// the volume on that data center's nodes that are not Ready, and the
    /// volume's VolumeAttachments to them, so that their controllers start
    /// them again elsewhere at once instead of after Kubernetes' six-minute
    /// force-detach. Unset: on; the failover waited out the old primary's
    /// lease, so it acknowledges nothing any more under any policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_lost_nodes: Option<bool>,
}

/// Bounds of `spec.failover.gracePeriodSeconds` (the schema's, and the CSI
/// driver's check of the StorageClass parameter).
pub const GRACE_PERIOD_SECONDS_MIN: u32 = 1;
pub const GRACE_PERIOD_SECONDS_MAX: u32 = 86400;

fn default_grace() -> u32 {
    30
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        Self {
            mode: FailoverMode::Automatic,
            grace_period_seconds: default_grace(),
            release_lost_nodes: None,
        }
    }
}

/// Whether failover is automatic.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailoverMode {
    /// Promote a secondary after the grace period.
    #[default]
    Automatic,
    /// Report only.
    Manual,
}

/// Phase of a VirtualVolume.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VolumePhase {
    /// Accepted; placement not decided yet.
    #[default]
    Pending,
    /// Real volumes being created and configured.
    Creating,
    /// Every member configured; the primary is where it is wanted.
    Ready,
    /// Usable, but a member is unreachable or out of sync.
    Degraded,
    /// The primary is moving to another data center.
    Relocating,
    /// Cannot be placed or has lost its primary with no failover possible.
    Failed,
}

impl VolumePhase {
    /// The phase as it appears in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Creating => "Creating",
            Self::Ready => "Ready",
            Self::Degraded => "Degraded",
            Self::Relocating => "Relocating",
            Self::Failed => "Failed",
        }
    }
}

/// What the operator reports about a VirtualVolume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VirtualVolumeStatus {
    /// Pending, Creating, Ready, Degraded, Relocating or Failed.
    #[serde(default)]
    pub phase: VolumePhase,
    /// Data center whose replica is primary now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_data_center: Option<String>,
    /// Data center where the volume is wanted (from the attached node or a pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wanted_data_center: Option<String>,
    /// Name of the CopyVolumeGroup holding the real volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Epoch of the current primary; rises by one at every change of primary.
    #[serde(default)]
    pub epoch: u64,
    /// Size in bytes.
    #[serde(default)]
    pub size_bytes: u64,
    /// Largest lag of any secondary, bytes.
    #[serde(default)]
    pub lag_bytes: u64,
    /// Largest lag of any secondary, seconds.
    #[serde(default)]
    pub lag_seconds: f64,
    /// Ready, InSync, Relocating, PrimaryUnreachable, CleanupBlocked, PlacementFailed,
    /// FrontendHealthy.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
