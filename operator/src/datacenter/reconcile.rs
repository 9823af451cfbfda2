//! DataCenter reconcile (thin): nodes from the cache -> probe their storage
//! systems -> plan the status -> write it. Runs again every few seconds, so
//! the status follows storage systems that come and go.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, runtime::controller::Action as Requeue};
use roam_crds::{DataCenter, STORAGE_ENDPOINT_ANNOTATION, conditions};
use tracing::instrument;

use super::{apply, plan};
use crate::{context::Context, error::Error};

/// Controller name (metrics, logs).
pub const CONTROLLER: &str = "datacenter";

/// Nodes from the cache as the plan sees them.
pub fn node_views(ctx: &Context) -> Vec<plan::NodeView> {
    ctx.stores
        .nodes
        .state()
        .iter()
        .map(|n| plan::NodeView {
            name: n.name_any(),
            labels: n.labels().clone(),
            endpoint: n
                .annotations()
                .get(STORAGE_ENDPOINT_ANNOTATION)
                .filter(|e| !e.is_empty())
                .cloned(),
        })
        .collect()
}

/// Reconcile one DataCenter.
#[instrument(skip_all, fields(dc = %dc.name_any()))]
pub async fn reconcile(dc: Arc<DataCenter>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let start = std::time::Instant::now();
    let nodes = node_views(&ctx);
    let endpoints: Vec<String> = plan::member_nodes(&dc, &nodes)
        .iter()
        .filter_map(|n| n.endpoint.clone())
        .collect();
    let probes = apply::probe_all(endpoints).await;
    let mut status = plan::status(&dc, &nodes, &probes, Timestamp::now());
    if dc.spec.cordoned {
        // Only while cordoned: a list of every volume is not free.
        let volumes = kube::Api::<roam_crds::VirtualVolume>::all(ctx.client.clone())
            .list(&Default::default())
            .await
            .map_err(|source| Error::ReadObject {
                kind: "VirtualVolume",
                name: "(all, for the cordon's progress)".into(),
                source: Box::new(source),
            })?;
        let (primaries, attached) = plan::primaries_in(&dc.name_any(), &volumes.items);
        status.primaries = Some(primaries);
        status.primaries_attached = Some(attached);
    }
    let was = dc
        .status
        .as_ref()
        .and_then(|s| conditions::get(&s.conditions, conditions::READY))
        .map(|c| c.status.clone());
    let now = conditions::get(&status.conditions, conditions::READY).cloned();
    if let Some(c) = &now
        && was.as_deref() != Some(c.status.as_str())
    {
        apply::event(&ctx, &dc, c.status != "True", &c.reason, c.message.clone()).await;
    }
    apply::status(&ctx, &dc, &status).await?;
    ctx.metrics.observe(CONTROLLER, start.elapsed());
    let ready = status.ready_storage_systems > 0;
    Ok(Requeue::requeue(if ready {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(3)
    }))
}

/// Requeue after a failed reconcile.
pub fn error_policy(dc: Arc<DataCenter>, err: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.error(CONTROLLER, err.metric_label());
    tracing::warn!(dc = %dc.name_any(), "reconcile failed: {err:#}");
    Requeue::requeue(Duration::from_secs(3))
}
