//! `CopyVolumeGroup` (namespaced, owned by the VirtualVolume of the same
//! name; claims 8-10): the real volumes, one per data center, the desired
//! primary and the epoch.
//!
//! Its only writer is the operator. The spec is the operator's durable intent:
//! a relocation writes `desiredPrimary` and `epoch + 1` here *before* asking
//! the storage systems to change roles, so an operator that restarts
//! mid-relocation reads the intent back and finishes the job. The status is
//! what the storage systems reported. The Helm chart installs a
//! ValidatingAdmissionPolicy that refuses writes from anyone but the operator's
//! service account; the schema itself forbids an epoch going backwards.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{FailurePolicy, SyncLevel, TransferType};

/// The real volumes of one VirtualVolume and which one is primary.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "roam.dev",
    version = "v1alpha1",
    kind = "CopyVolumeGroup",
    plural = "copyvolumegroups",
    shortname = "cvg",
    namespaced,
    status = "CopyVolumeGroupStatus",
    printcolumn(name = "Primary", type_ = "string", json_path = ".status.primary"),
    printcolumn(
        name = "Desired",
        type_ = "string",
        json_path = ".spec.desiredPrimary",
        priority = 1
    ),
    printcolumn(name = "Epoch", type_ = "integer", json_path = ".status.epoch"),
    printcolumn(name = "Transfer", type_ = "string", json_path = ".spec.transferType"),
    printcolumn(
        name = "Lag",
        type_ = "integer",
        json_path = ".status.lagBytes",
        description = "largest secondary lag, bytes"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.members.exists(m, m.dataCenter == self.desiredPrimary)").message("spec.desiredPrimary must be the data center of one of spec.members"),
    validation = Rule::new("self.members.all(m, m.volumeId == self.members[0].volumeId)").message("spec.members[].volumeId must be the same on every member"),
)]
#[serde(rename_all = "camelCase")]
pub struct CopyVolumeGroupSpec {
    /// One real volume per data center. Data centers are unique.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["dataCenter".into()]))]
    pub members: Vec<GroupMember>,
    /// Data center that should be primary at `epoch`.
    pub desired_primary: String,
    /// Epoch of `desiredPrimary`; rises by one at every change of primary,
    /// never falls.
    #[x_kube(validation = Rule::new("self >= oldSelf").message("spec.epoch never decreases"))]
    pub epoch: u64,
    /// Sync or Async (from the VirtualVolume).
    pub transfer_type: TransferType,
    /// Write or Flush (from the VirtualVolume).
    #[serde(default)]
    pub sync_level: SyncLevel,
    /// Block or Degrade (from the VirtualVolume).
    pub failure_policy: FailurePolicy,
    /// Async lag bound, bytes; 0 = none.
    #[serde(default)]
    pub max_lag_bytes: u64,
    /// Async lag bound, seconds; 0 = none.
    #[serde(default)]
    pub max_lag_seconds: u64,
    /// Size of every real volume, bytes.
    pub size_bytes: u64,
}

/// One real volume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GroupMember {
    /// DataCenter name.
    #[x_kube(validation = Rule::new("self != ''").message("members[].dataCenter must not be empty"))]
    pub data_center: String,
    /// Node whose storage system holds the real volume.
    pub node: String,
    /// That storage system's endpoint.
    pub endpoint: String,
    /// Real volume id on the storage system (same on every member).
    pub volume_id: String,
}

/// What the storage systems reported about the group.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CopyVolumeGroupStatus {
    /// Data center that is primary now (confirmed by its storage system).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// Epoch the primary holds.
    #[serde(default)]
    pub epoch: u64,
    /// Same phase names as the VirtualVolume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Every member's role and state.
    #[serde(default)]
    pub members: Vec<MemberStatus>,
    /// Largest lag of any secondary, bytes.
    #[serde(default)]
    pub lag_bytes: u64,
    /// The last planned change of primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_relocation: Option<RelocationRecord>,
    /// The last forced promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<FailoverRecord>,
    /// Since when the primary's storage system has been unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_unreachable_since: Option<Time>,
    /// Ready, InSync, Relocating, PrimaryUnreachable.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Data centers the primary recorded out of the in-sync set: it went on
    /// acknowledging without them. A failover never promotes one. Written
    /// only by the primary's storage system through the directory
    /// (crate::directory), with a resourceVersion precondition; cleared
    /// member by member once a resync is proven complete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub out_of_sync: Vec<String>,
}

/// One member as its storage systems report it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// DataCenter name.
    pub data_center: String,
    /// Primary, Secondary or None (not configured yet).
    pub role: MemberRole,
    /// InSync, Lagging, Resyncing or Unreachable.
    pub state: MemberState,
    /// Bytes written on the primary this member does not hold yet.
    #[serde(default)]
    pub lag_bytes: u64,
    /// Age of the oldest write this member does not hold yet, seconds.
    #[serde(default)]
    pub lag_seconds: f64,
    /// Epoch the member holds.
    #[serde(default)]
    pub epoch: u64,
    /// Highest write sequence number durable on the member.
    #[serde(default)]
    pub durable_seq: u64,
}

/// Role of a member.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MemberRole {
    /// Created, not yet configured.
    #[default]
    None,
    /// Takes the writes.
    Primary,
    /// Receives every write from the primary.
    Secondary,
}

/// State of a member.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MemberState {
    /// Holds every acknowledged write.
    InSync,
    /// Behind the primary (Async, or catching up after a short outage).
    Lagging,
    /// Copying what changed (or everything, when new) from the primary.
    Resyncing,
    /// Its storage system does not answer.
    #[default]
    Unreachable,
}

/// A planned change of primary.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RelocationRecord {
    /// Data center that was primary.
    pub from: String,
    /// Data center that became primary.
    pub to: String,
    /// Epoch of the new primary.
    pub epoch: u64,
    /// Time from the request to the new primary confirming, milliseconds.
    pub duration_millis: u64,
    /// When it finished.
    pub at: Time,
}

/// A forced promotion after the primary was lost.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRecord {
    /// Data center that was lost.
    pub from: String,
    /// Data center promoted.
    pub to: String,
    /// Epoch of the new primary.
    pub epoch: u64,
    /// Async: writes the promoted member may not hold, as last reported
    /// before the primary was lost (bytes). 0 for Sync groups.
    pub possible_loss_bytes: u64,
    /// Same, in seconds.
    pub possible_loss_seconds: f64,
    /// When it happened.
    pub at: Time,
}

impl CopyVolumeGroup {
    /// Data centers of the members, in spec order.
    pub fn member_dcs(&self) -> Vec<String> {
        self.spec
            .members
            .iter()
            .map(|m| m.data_center.clone())
            .collect()
    }

    /// The member in data center `dc`.
    pub fn member(&self, dc: &str) -> Option<&GroupMember> {
        self.spec.members.iter().find(|m| m.data_center == dc)
    }
}
