//! Carries out the VirtualVolume plan: writes to the API server (group,
//! intent, status, events) and calls to the storage systems. Every action is
//! idempotent, so a reconcile that stops half way is simply run again.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::events::{Event, EventType},
};
use roam_crds::{
    CopyVolumeGroup, CopyVolumeGroupStatus, FailurePolicy, OPERATOR_MANAGER, SyncLevel,
    TransferType, VOLUME_LABEL, VirtualVolume, VirtualVolumeStatus, directory,
};
use roam_proto::storage::{self as pb, GroupSpec};
use serde_json::json;

use super::plan::{Action, IntentReason, Note};
use crate::{context::Context, error::Error, storage};

/// Annotation on the group: when the pending intent was written (RFC 3339).
pub const INTENT_AT_ANNOTATION: &str = "roam.dev/intent-at";

fn group_spec(g: &CopyVolumeGroup, primary: &str, epoch: u64) -> GroupSpec {
    GroupSpec {
        members: g
            .spec
            .members
            .iter()
            .map(|m| pb::Member {
                data_center: m.data_center.clone(),
                endpoint: m.endpoint.clone(),
            })
            .collect(),
        primary: primary.to_string(),
        epoch,
        transfer_type: match g.spec.transfer_type {
            TransferType::Sync => pb::TransferType::Sync as i32,
            TransferType::Async => pb::TransferType::Async as i32,
        },
        failure_policy: match g.spec.failure_policy {
            FailurePolicy::Block => pb::FailurePolicy::Block as i32,
            FailurePolicy::Degrade => pb::FailurePolicy::Degrade as i32,
        },
        max_lag_bytes: g.spec.max_lag_bytes,
        max_lag_seconds: g.spec.max_lag_seconds,
        sync_level: match g.spec.sync_level {
            SyncLevel::Write => pb::SyncLevel::Write as i32,
            SyncLevel::Flush => pb::SyncLevel::Flush as i32,
        },
    }
}

fn endpoint<'a>(
    g: &'a CopyVolumeGroup,
    volume: &str,
    dc: &str,
) -> Result<(&'a str, &'a str), Error> {
    g.member(dc)
        .map(|m| (m.endpoint.as_str(), m.volume_id.as_str()))
        .ok_or_else(|| Error::UnknownMember {
            volume: volume.into(),
            dc: dc.into(),
        })
}

/// Do one action.
pub async fn act(
    ctx: &Context,
    vv: &VirtualVolume,
    group: Option<&CopyVolumeGroup>,
    action: &Action,
) -> Result<(), Error> {
    let ns = vv.namespace().unwrap_or_default();
    let name = vv.name_any();
    let volume = format!("{ns}/{name}");
    let groups: Api<CopyVolumeGroup> = Api::namespaced(ctx.client.clone(), &ns);
    let call = |action: &'static str, dc: &str| {
        let volume = volume.clone();
        let dc = dc.to_string();
        move |source| Error::StorageCall {
            volume,
            action,
            dc,
            source: Box::new(source),
        }
    };
    let Some(g) = group else {
        if let Action::CreateGroup(spec) = action {
            let owner = vv.controller_owner_ref(&()).ok_or(Error::MissingMetadata {
                kind: "VirtualVolume",
            })?;
            let cvg = CopyVolumeGroup {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    owner_references: Some(vec![owner]),
                    labels: Some(BTreeMap::from([(VOLUME_LABEL.to_string(), name.clone())])),
                    ..Default::default()
                },
                spec: spec.clone(),
                status: None,
            };
            return match groups.create(&PostParams::default(), &cvg).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(source) => Err(Error::WriteObject {
                    kind: "CopyVolumeGroup",
                    name: volume,
                    source: Box::new(source),
                }),
            };
        }
        return Ok(());
    };
    match action {
        Action::CreateGroup(_) => Ok(()),
        Action::GrowGroup { size_bytes } => {
            let patch = json!({"spec": {"sizeBytes": size_bytes}});
            groups
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(|source| Error::WriteObject {
                    kind: "CopyVolumeGroup",
                    name: volume.clone(),
                    source: Box::new(source),
                })
        }
        Action::CreateReplica { dc } => {
            let (ep, vid) = endpoint(g, &volume, dc)?;
            storage::create_replica(ep, vid, g.spec.size_bytes)
                .await
                .map(|_| ())
                .map_err(call("CreateReplica", dc))
        }
        Action::ExpandReplica { dc, size_bytes } => {
            let (ep, vid) = endpoint(g, &volume, dc)?;
            storage::expand_replica(ep, vid, *size_bytes)
                .await
                .map(|_| ())
                .map_err(call("ExpandReplica", dc))
        }
        Action::Configure { dc, primary, epoch } => {
            let (ep, vid) = endpoint(g, &volume, dc)?;
            storage::configure_group(ep, vid, group_spec(g, primary, *epoch))
                .await
                .map(|_| ())
                .map_err(call("ConfigureGroup", dc))
        }
        Action::WriteIntent {
            primary,
            epoch,
            reason,
        } => {
            // resourceVersion makes this a compare-and-swap on what the plan saw.
            let patch = json!({
                "metadata": {
                    "resourceVersion": g.resource_version(),
                    "annotations": {INTENT_AT_ANNOTATION: Timestamp::now().to_string()},
                },
                "spec": {"desiredPrimary": primary, "epoch": epoch},
            });
            groups
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|source| Error::WriteObject {
                    kind: "CopyVolumeGroup",
                    name: volume.clone(),
                    source: Box::new(source),
                })?;
            tracing::info!(volume = %volume, primary = %primary, epoch, ?reason, "intent written");
            Ok(())
        }
        Action::Transfer { from, to, epoch } => {
            let (ep, vid) = endpoint(g, &volume, from)?;
            storage::transfer_primary(ep, vid, to, *epoch)
                .await
                .map(|_| ())
                .map_err(call("TransferPrimary", from))
        }
        Action::Fence { epoch } => {
            // Two writes: the fence, on the group the plan saw; then, once
            // the API server has it, the moment to count the lease from. A
            // renewal that began before that moment may still hold a lease
            // for PRIMARY_LEASE after it, never longer.
            let write = |patch: serde_json::Value| {
                let groups = groups.clone();
                let name = name.clone();
                let volume = volume.clone();
                async move {
                    groups
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(|source| Error::WriteObject {
                            kind: "CopyVolumeGroup",
                            name: volume,
                            source: Box::new(source),
                        })
                }
            };
            write(json!({"metadata": {
                "resourceVersion": g.resource_version(),
                "annotations": {directory::FENCE_EPOCH_ANNOTATION: epoch.to_string()},
            }}))
            .await?;
            write(json!({"metadata": {"annotations": {
                directory::FENCED_AT_ANNOTATION: Timestamp::now().to_string(),
            }}}))
            .await?;
            tracing::info!(volume = %volume, epoch, "fenced in the directory");
            Ok(())
        }
        Action::Promote { dc, epoch } => {
            let (ep, vid) = endpoint(g, &volume, dc)?;
            storage::promote(ep, vid, *epoch)
                .await
                .map(|_| ())
                .map_err(call("Promote", dc))
        }
    }
}

/// Short name of an action for events and logs.
pub fn action_reason(a: &Action) -> Option<(&'static str, String)> {
    match a {
        Action::CreateGroup(s) => Some((
            "GroupCreated",
            format!("{} members, primary {}", s.members.len(), s.desired_primary),
        )),
        Action::WriteIntent {
            primary,
            epoch,
            reason: IntentReason::Failover,
        } => Some((
            "FailoverIntent",
            format!("promote {primary} at epoch {epoch}"),
        )),
        Action::WriteIntent {
            primary,
            epoch,
            reason: IntentReason::Adopt,
        } => Some(("PrimaryAdopted", format!("{primary} at epoch {epoch}"))),
        Action::WriteIntent { .. } => None,
        Action::Transfer { from, to, epoch } => Some((
            "PrimaryTransferred",
            format!("{from} -> {to} at epoch {epoch}"),
        )),
        Action::Promote { dc, epoch } => Some(("Promoted", format!("{dc} at epoch {epoch}"))),
        Action::Fence { epoch } => Some((
            "Fenced",
            format!(
                "no lease below epoch {epoch}; promoting after {}s",
                directory::PRIMARY_LEASE.as_secs()
            ),
        )),
        Action::CreateReplica { dc } => Some(("ReplicaCreated", format!("real volume in {dc}"))),
        Action::ExpandReplica { dc, size_bytes } => {
            Some(("ReplicaExpanded", format!("{dc} to {size_bytes} bytes")))
        }
        Action::GrowGroup { size_bytes } => Some(("GroupGrown", format!("{size_bytes} bytes"))),
        Action::Configure { .. } => None,
    }
}

/// Deletes what keeps the volume on a lost data center's nodes: its pods
/// there at once (no grace period: their kubelet is gone and would never
/// confirm), then its VolumeAttachments to those nodes. Objects already
/// gone are fine.
pub async fn release(
    ctx: &Context,
    vv: &VirtualVolume,
    release: &super::release::Release,
) -> Result<(), Error> {
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    let gone = |e: &kube::Error| matches!(e, kube::Error::Api(ae) if ae.code == 404);
    for (ns, name) in &release.pods {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        match pods.delete(name, &now).await {
            Ok(_) => {}
            Err(e) if gone(&e) => {}
            Err(e) => {
                return Err(Error::WriteObject {
                    kind: "Pod",
                    name: format!("{ns}/{name}"),
                    source: Box::new(e),
                });
            }
        }
    }
    let attachments: Api<VolumeAttachment> = Api::all(ctx.client.clone());
    for name in &release.attachments {
        let failed = |e: kube::Error| Error::WriteObject {
            kind: "VolumeAttachment",
            name: name.clone(),
            source: Box::new(e),
        };
        let deleted = match attachments.delete(name, &DeleteParams::default()).await {
            Ok(deleted) => deleted.left(),
            Err(e) if gone(&e) => None,
            Err(e) => return Err(failed(e)),
        };
        // The external-attacher's finalizer waits for a ControllerUnpublish
        // that only drops the attached-node annotation, and the attacher may
        // have been lost with the data center itself. Nothing on that node
        // can be detached any more, and the new epoch fences it: let the
        // attachment go now, so the attach/detach controller stops counting
        // the volume as attached there.
        if let Some(va) = deleted {
            let kept: Vec<String> = va
                .finalizers()
                .iter()
                .filter(|f| !f.starts_with("external-attacher/"))
                .cloned()
                .collect();
            if kept.len() != va.finalizers().len() {
                let patch = json!({"metadata": {"finalizers": kept}});
                match attachments
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if gone(&e) => {}
                    Err(e) => return Err(failed(e)),
                }
            }
        }
    }
    let pods: Vec<String> = release
        .pods
        .iter()
        .map(|(ns, name)| format!("{ns}/{name}"))
        .collect();
    event(
        ctx,
        vv,
        true,
        "ReleasedFromLostNodes",
        format!(
            "{} is lost: deleted pods [{}] and VolumeAttachments [{}] on its nodes that are not \
             Ready",
            release.data_center,
            pods.join(", "),
            release.attachments.join(", ")
        ),
    )
    .await;
    Ok(())
}

/// Record an Event on the VirtualVolume (failures are logged, not returned).
pub async fn event(ctx: &Context, vv: &VirtualVolume, warning: bool, reason: &str, note: String) {
    publish(ctx, &vv.object_ref(&()), warning, reason, note).await;
}

/// Record an Event on any object (failures are logged, not returned).
async fn publish(
    ctx: &Context,
    object: &ObjectReference,
    warning: bool,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, object).await {
        tracing::warn!("recording event {reason}: {e:#}");
    }
}

/// Record the plan's notes. A frontend's change is the pod's business as
/// well: it is recorded on the volume's claims too, where `kubectl describe
/// pvc` shows it.
pub async fn notes(ctx: &Context, vv: &VirtualVolume, notes: &[Note]) {
    for n in notes {
        event(ctx, vv, n.warning, n.reason, n.message.clone()).await;
        if matches!(n.reason, super::frontend::BROKEN | super::frontend::HEALED) {
            let claims =
                crate::locality::claims_of(vv, &ctx.stores.pvcs.state(), &ctx.stores.pvs.state());
            for claim in claims {
                publish(
                    ctx,
                    &claim.object_ref(&()),
                    n.warning,
                    n.reason,
                    n.message.clone(),
                )
                .await;
            }
        }
        if n.reason == "Relocated" {
            ctx.metrics
                .relocations
                .get_or_create(&crate::metrics::RelocationLabels {
                    kind: "planned".into(),
                })
                .inc();
        } else if n.reason == "FailedOver" {
            ctx.metrics
                .relocations
                .get_or_create(&crate::metrics::RelocationLabels {
                    kind: "failover".into(),
                })
                .inc();
        }
    }
}

/// Write the VirtualVolume status when it changed.
pub async fn volume_status(
    ctx: &Context,
    vv: &VirtualVolume,
    status: &VirtualVolumeStatus,
) -> Result<(), Error> {
    if vv.status.as_ref() == Some(status) {
        return Ok(());
    }
    let ns = vv.namespace().unwrap_or_default();
    let api: Api<VirtualVolume> = Api::namespaced(ctx.client.clone(), &ns);
    let body =
        json!({"apiVersion": "roam.dev/v1alpha1", "kind": "VirtualVolume", "status": status});
    api.patch_status(
        &vv.name_any(),
        &PatchParams::apply(OPERATOR_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::WriteObject {
        kind: "VirtualVolume",
        name: format!("{ns}/{}", vv.name_any()),
        source: Box::new(source),
    })
}

/// Write the CopyVolumeGroup status when it changed.
pub async fn group_status(
    ctx: &Context,
    g: &CopyVolumeGroup,
    status: &CopyVolumeGroupStatus,
) -> Result<(), Error> {
    if g.status.as_ref() == Some(status) {
        return Ok(());
    }
    let ns = g.namespace().unwrap_or_default();
    let api: Api<CopyVolumeGroup> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(rel) = &status.last_relocation
        && g.status.as_ref().and_then(|s| s.last_relocation.as_ref()) != Some(rel)
    {
        ctx.metrics
            .relocation_seconds
            .observe(rel.duration_millis as f64 / 1000.0);
    }
    // The in-sync set is the directory's record, written by the primary's
    // storage system with a precondition: never part of this write, so it
    // can neither drop nor resurrect a record made meanwhile.
    let mut written = status.clone();
    written.out_of_sync.clear();
    let body =
        json!({"apiVersion": "roam.dev/v1alpha1", "kind": "CopyVolumeGroup", "status": written});
    api.patch_status(
        &g.name_any(),
        &PatchParams::apply(OPERATOR_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::WriteObject {
        kind: "CopyVolumeGroup",
        name: format!("{ns}/{}", g.name_any()),
        source: Box::new(source),
    })
}
