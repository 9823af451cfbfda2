//! The health reporter: tells the directory when a frontend on this node
//! stops carrying I/O, and when it carries I/O again.
//!
//! Every interval it asks the node service for its frontend faults
//! ([`NodeService::frontend_faults`]) and writes each change as the
//! VirtualVolume's fault annotation of this node
//! ([`roam_crds::frontend::fault_annotation`]): set when a fault appears,
//! removed when it is gone. The operator turns those into the volume's
//! `FrontendHealthy` and `Ready` conditions and Events. The same faults are
//! served as `roam_csi_node_frontend_healthy`, so an alert sees them without the
//! API server.
//!
//! Guarantees: a fault is reported within one interval of the check that
//! finds it, and a report this node wrote is removed once its volume is
//! healthy or gone, also one written by an earlier run of the plugin (the
//! first round lists the reports on every VirtualVolume). A write that
//! fails is retried the next round.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use roam_crds::VirtualVolume;
use roam_crds::frontend::{FrontendFault as Report, fault_annotation};
use serde_json::json;
use tracing::{info, warn};

use super::service::{FrontendFault, NodeService};
use crate::csi_metrics::RpcObserver;

/// Runs until the process ends.
pub async fn report(
    node: Arc<NodeService>,
    node_name: String,
    client: Option<Client>,
    observer: RpcObserver,
    interval: Duration,
) {
    let key = fault_annotation(&node_name);
    // Volume id -> the fault reported for it (None: written by an earlier
    // run, to be removed unless the fault is still there).
    let mut reported: BTreeMap<String, Option<FrontendFault>> = BTreeMap::new();
    let mut listed = client.is_none();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !listed && let Some(client) = &client {
            match reports_of(client, &key).await {
                Ok(volumes) => {
                    reported.extend(volumes.into_iter().map(|v| (v, None)));
                    listed = true;
                }
                Err(e) => warn!("listing this node's frontend reports: {e}"),
            }
        }
        let faults = node.frontend_faults().await;
        observer.set_frontend_health(&node.staged_volumes(), &faults.keys().cloned().collect());
        let Some(client) = &client else {
            continue;
        };
        for (volume, fault) in &faults {
            if reported.get(volume).and_then(Option::as_ref) == Some(fault) {
                continue;
            }
            warn!(
                volume,
                reason = fault.reason,
                "frontend broken: {}",
                fault.message
            );
            let value = serde_json::to_string(&Report {
                reason: fault.reason.to_owned(),
                message: fault.message.clone(),
                since: Timestamp::now().to_string(),
            })
            .unwrap_or_default();
            match annotate(client, volume, &key, Some(value)).await {
                Ok(()) => {
                    reported.insert(volume.clone(), Some(fault.clone()));
                }
                Err(e) => warn!(volume, "reporting a broken frontend: {e}"),
            }
        }
        let healed: Vec<String> = reported
            .keys()
            .filter(|v| !faults.contains_key(*v))
            .cloned()
            .collect();
        for volume in healed {
            match annotate(client, &volume, &key, None).await {
                Ok(()) => {
                    info!(volume, "frontend report removed");
                    reported.remove(&volume);
                }
                Err(e) => warn!(volume, "removing a frontend report: {e}"),
            }
        }
    }
}

/// CSI volume ids of the VirtualVolumes carrying this node's report.
async fn reports_of(client: &Client, key: &str) -> Result<Vec<String>, kube::Error> {
    let all: Api<VirtualVolume> = Api::all(client.clone());
    Ok(all
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter(|vv| vv.annotations().contains_key(key))
        .map(|vv| roam_crds::csi_volume_id(&vv.namespace().unwrap_or_default(), &vv.name_any()))
        .collect())
}

/// Sets (Some) or removes (None) the annotation on the volume's
/// VirtualVolume. A volume that is gone needs no report removed.
async fn annotate(
    client: &Client,
    volume_id: &str,
    key: &str,
    value: Option<String>,
) -> Result<(), kube::Error> {
    let Some((namespace, name)) = volume_id.split_once('/') else {
        return Ok(());
    };
    let api: Api<VirtualVolume> = Api::namespaced(client.clone(), namespace);
    let patch = json!({"metadata": {"annotations": {key: value}}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 && e.reason == "NotFound" => Ok(()),
        Err(e) => Err(e),
    }
}
