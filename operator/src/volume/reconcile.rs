//! VirtualVolume reconcile (thin): finalizer -> read the world -> plan ->
//! apply. Deleting a VirtualVolume deletes its real volumes first; while a
//! storage system is down the finalizer stays and the `CleanupBlocked`
//! condition names what is left.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::future::join_all;
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    runtime::{
        controller::Action as Requeue,
        finalizer::{Event as Finalizer, finalizer},
    },
};
use roam_crds::{
    CopyVolumeGroup, MemberRole, MemberState, VOLUME_FINALIZER, VirtualVolume, conditions, quantity,
};
use roam_proto::storage as pb;
use tracing::instrument;

use super::{apply, plan, release};
use crate::{context::Context, error::Error, locality, storage};

/// Controller name (metrics, logs).
pub const CONTROLLER: &str = "virtualvolume";

/// Reconcile one VirtualVolume.
#[instrument(skip_all, fields(volume = %vv.name_any(), namespace = vv.namespace().unwrap_or_default()))]
pub async fn reconcile(vv: Arc<VirtualVolume>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let start = std::time::Instant::now();
    let ns = vv.namespace().ok_or(Error::MissingMetadata {
        kind: "VirtualVolume",
    })?;
    let volume = format!("{ns}/{}", vv.name_any());
    let api: Api<VirtualVolume> = Api::namespaced(ctx.client.clone(), &ns);
    let res = finalizer(&api, VOLUME_FINALIZER, vv, |event| async {
        match event {
            Finalizer::Apply(vv) => reconcile_live(&vv, &ctx).await,
            Finalizer::Cleanup(vv) => cleanup(&vv, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer {
            volume,
            source: Box::new(other),
        },
    });
    let took = start.elapsed();
    ctx.metrics.observe(CONTROLLER, took);
    tracing::debug!(target: "roam_operator::timing", controller = CONTROLLER, seconds = took.as_secs_f64(), "reconciled");
    res
}

/// Requeue after a failed reconcile.
pub fn error_policy(vv: Arc<VirtualVolume>, err: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.error(CONTROLLER, err.metric_label());
    tracing::warn!(volume = %vv.name_any(), "reconcile failed: {err:#}");
    Requeue::requeue(Duration::from_secs(2))
}

fn replica_obs(
    r: Result<Option<pb::ReplicaStatus>, crate::error::StorageError>,
) -> plan::ReplicaObs {
    match r {
        Ok(None) => plan::ReplicaObs::Missing,
        Err(e) => plan::ReplicaObs::Unreachable(e.to_string()),
        Ok(Some(s)) => plan::ReplicaObs::Present(plan::Replica {
            role: match pb::Role::try_from(s.role) {
                Ok(pb::Role::Primary) => MemberRole::Primary,
                Ok(pb::Role::Secondary) => MemberRole::Secondary,
                _ => MemberRole::None,
            },
            epoch: s.epoch,
            size_bytes: s.size_bytes,
            durable_seq: s.durable_seq,
            secondaries: s
                .members
                .iter()
                .map(|m| plan::SecondaryReport {
                    data_center: m.data_center.clone(),
                    state: match pb::MemberState::try_from(m.state) {
                        Ok(pb::MemberState::InSync) => MemberState::InSync,
                        Ok(pb::MemberState::Lagging) => MemberState::Lagging,
                        Ok(pb::MemberState::Resyncing) => MemberState::Resyncing,
                        _ => MemberState::Unreachable,
                    },
                    lag_bytes: m.lag_bytes,
                    lag_seconds: m.lag_seconds,
                })
                .collect(),
        }),
    }
}

/// Ask every member's storage system about its replica, concurrently.
async fn observe(g: &CopyVolumeGroup) -> BTreeMap<String, plan::ReplicaObs> {
    let calls = g.spec.members.iter().map(|m| async move {
        (
            m.data_center.clone(),
            replica_obs(storage::get_replica(&m.endpoint, &m.volume_id).await),
        )
    });
    join_all(calls).await.into_iter().collect()
}

/// The data center where the volume is wanted, from the caches.
fn wanted_dc(vv: &VirtualVolume, ctx: &Context, dcs: &[roam_crds::DataCenter]) -> Option<String> {
    let s = &ctx.stores;
    let (node, source) = locality::wanted_node(
        vv,
        &s.pods.state(),
        &s.pvcs.state(),
        &s.pvs.state(),
        &s.attachments.state(),
    )?;
    let dc = locality::data_center_of(&node, &s.nodes.state(), dcs);
    tracing::debug!(%node, source, ?dc, "wanted");
    dc
}

/// Rounds of observe -> plan -> act one reconcile runs while the plan's
/// steps are ones that can be checked at once (creating the group and the
/// real volumes, growing them, configuring members). A new volume goes from
/// nothing to Ready in one reconcile instead of one per step.
const MAX_ROUNDS: usize = 4;

async fn read_group(
    groups: &Api<CopyVolumeGroup>,
    name: &str,
    volume: &str,
) -> Result<Option<CopyVolumeGroup>, Error> {
    groups
        .get_opt(name)
        .await
        .map_err(|source| Error::ReadObject {
            kind: "CopyVolumeGroup",
            name: volume.to_string(),
            source: Box::new(source),
        })
}

async fn reconcile_live(vv: &VirtualVolume, ctx: &Context) -> Result<Requeue, Error> {
    let ns = vv.namespace().unwrap_or_default();
    let name = vv.name_any();
    let volume = format!("{ns}/{name}");
    let size_bytes = quantity::parse_bytes(&vv.spec.size).map_err(|source| Error::InvalidSize {
        volume: volume.clone(),
        source,
    })?;
    let groups: Api<CopyVolumeGroup> = Api::namespaced(ctx.client.clone(), &ns);
    let stored_group = read_group(&groups, &name, &volume).await?;
    let dcs = ctx.data_centers();
    let wanted = wanted_dc(vv, ctx, &dcs);

    // What the last round decided, carried to the next as if it had been written.
    let mut group = stored_group.clone();
    let mut previous = vv.status.clone();
    let mut failure = None;
    let mut round = 0;
    let mut decided = loop {
        round += 1;
        let replicas = match &group {
            Some(g) => observe(g).await,
            None => BTreeMap::new(),
        };
        let intent_at = group
            .as_ref()
            .and_then(|g| g.annotations().get(apply::INTENT_AT_ANNOTATION).cloned())
            .and_then(|t| t.parse::<Timestamp>().ok());
        let input = plan::Input {
            namespace: &ns,
            name: &name,
            generation: vv.metadata.generation,
            spec: &vv.spec,
            size_bytes,
            wanted_dc: wanted.clone(),
            attached: vv
                .annotations()
                .get(roam_crds::ATTACHED_NODE_ANNOTATION)
                .is_some_and(|n| !n.is_empty()),
            data_centers: &dcs,
            group: group.as_ref(),
            intent_at,
            replicas,
            previous: previous.as_ref(),
            frontend_faults: super::frontend::reports(vv.annotations()),
            now: Timestamp::now(),
        };
        let decided = plan::plan(&input);
        tracing::debug!(round, actions = ?decided.actions, phase = ?decided.volume_status.phase, "planned");

        for a in &decided.actions {
            match apply::act(ctx, vv, group.as_ref(), a).await {
                Ok(()) => {
                    if let Some((reason, note)) = apply::action_reason(a) {
                        apply::event(ctx, vv, false, reason, note).await;
                    }
                }
                Err(e) => {
                    apply::event(ctx, vv, true, "ActionFailed", e.to_string()).await;
                    failure = Some(e);
                    break;
                }
            }
        }
        apply::notes(ctx, vv, &decided.notes).await;
        let again =
            failure.is_none() && round < MAX_ROUNDS && plan::continues_in_place(&decided.actions);
        if !again {
            break decided;
        }
        if decided.actions.iter().any(|a| {
            matches!(
                a,
                plan::Action::CreateGroup(_) | plan::Action::GrowGroup { .. }
            )
        }) {
            let mut fresh = read_group(&groups, &name, &volume).await?;
            if let (Some(f), Some(g)) = (fresh.as_mut(), group.as_ref()) {
                // The status is still the one the last round decided (not yet written).
                f.status = decided.group_status.clone().or_else(|| g.status.clone());
            }
            group = fresh;
        } else if let Some(g) = group.as_mut() {
            g.status = decided.group_status.clone();
        }
        previous = Some(decided.volume_status.clone());
    };

    // Statuses are compared with (and written over) what is stored.
    let stored_group = match (&stored_group, &group) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(created)) => {
            let mut c = created.clone();
            c.status = None;
            Some(c)
        }
        (None, None) => None,
    };
    if let (Some(g), Some(gs)) = (&stored_group, &decided.group_status) {
        ctx.metrics.record_group(&ns, &name, gs);
        apply::group_status(ctx, g, gs).await?;
    }
    if let Some(e) = &failure {
        explain_not_ready(&mut decided.volume_status.conditions, e);
    }
    apply::volume_status(ctx, vv, &decided.volume_status).await?;
    release_lost_nodes(vv, decided.group_status.as_ref(), ctx).await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(Requeue::requeue(decided.requeue)),
    }
}

/// After a failover, frees the volume from the lost data center's nodes
/// (`release.rs`).
async fn release_lost_nodes(
    vv: &VirtualVolume,
    group: Option<&roam_crds::CopyVolumeGroupStatus>,
    ctx: &Context,
) -> Result<(), Error> {
    let s = &ctx.stores;
    let (nodes, pods, pvcs, pvs, attachments) = (
        s.nodes.state(),
        s.pods.state(),
        s.pvcs.state(),
        s.pvs.state(),
        s.attachments.state(),
    );
    let dcs = ctx.data_centers();
    let world = release::World {
        nodes: &nodes,
        pods: &pods,
        pvcs: &pvcs,
        pvs: &pvs,
        attachments: &attachments,
        data_centers: &dcs,
    };
    let decided = release::decide(vv, group, &world);
    if decided.is_empty() {
        return Ok(());
    }
    apply::release(ctx, vv, &decided).await
}

/// A volume that is not Ready because a step failed says which step and why
/// in its Ready condition (a full disk on one data center, say), not only in
/// an event that expires.
fn explain_not_ready(conditions: &mut [Condition], failure: &Error) {
    if let Some(ready) = conditions
        .iter_mut()
        .find(|c| c.type_ == conditions::READY && c.status == "False")
    {
        ready.reason = "ActionFailed".into();
        ready.message = format!("{}; {failure}", ready.message);
    }
}

/// Delete every real volume; keep the finalizer (by failing) until all are gone.
async fn cleanup(vv: &VirtualVolume, ctx: &Context) -> Result<Requeue, Error> {
    let ns = vv.namespace().unwrap_or_default();
    let name = vv.name_any();
    let volume = format!("{ns}/{name}");
    let groups: Api<CopyVolumeGroup> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(g) = groups
        .get_opt(&name)
        .await
        .map_err(|source| Error::ReadObject {
            kind: "CopyVolumeGroup",
            name: volume.clone(),
            source: Box::new(source),
        })?
    else {
        return Ok(Requeue::await_change());
    };
    let calls = g
        .spec
        .members
        .iter()
        .map(|m| async move { (m, storage::delete_replica(&m.endpoint, &m.volume_id).await) });
    let left: Vec<String> = join_all(calls)
        .await
        .into_iter()
        .filter_map(|(m, r)| {
            r.err()
                .map(|e| format!("{} on node {} ({e})", m.data_center, m.node))
        })
        .collect();
    if left.is_empty() {
        if let Err(e) = groups.delete(&name, &Default::default()).await
            && !matches!(&e, kube::Error::Api(ae) if ae.code == 404)
        {
            return Err(Error::WriteObject {
                kind: "CopyVolumeGroup",
                name: volume,
                source: Box::new(e),
            });
        }
        ctx.metrics.forget_group(&ns, &name);
        apply::event(
            ctx,
            vv,
            false,
            "RealVolumesDeleted",
            format!("deleted {} real volumes", g.spec.members.len()),
        )
        .await;
        return Ok(Requeue::await_change());
    }
    let msg = format!("real volumes left: {}", left.join("; "));
    let mut status = vv.status.clone().unwrap_or_default();
    let already = conditions::get(&status.conditions, conditions::CLEANUP_BLOCKED)
        .is_some_and(|c| c.message == msg);
    conditions::set(
        &mut status.conditions,
        conditions::CLEANUP_BLOCKED,
        true,
        "StorageUnreachable",
        &msg,
        vv.metadata.generation,
        Time(Timestamp::now()),
    );
    if !already {
        apply::event(ctx, vv, true, "CleanupBlocked", msg.clone()).await;
    }
    apply::volume_status(ctx, vv, &status).await?;
    Err(Error::CleanupBlocked {
        volume,
        left: left.join("; "),
    })
}
