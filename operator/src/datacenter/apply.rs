//! DataCenter I/O: probe storage systems, write the status, record events.

use std::collections::BTreeMap;

use futures::future::join_all;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType},
};
use roam_crds::{DataCenter, DataCenterStatus, OPERATOR_MANAGER};
use serde_json::json;

use super::plan::Probe;
use crate::{context::Context, error::Error, storage};

/// GetInfo probes per storage system and reconcile; the smallest round-trip
/// time counts (scheduling delays only ever add to a measurement).
const RTT_SAMPLES: usize = 3;

/// GetInfo on every endpoint, concurrently, timing each.
pub async fn probe_all(endpoints: Vec<String>) -> BTreeMap<String, Result<Probe, String>> {
    let calls = endpoints.into_iter().map(|ep| async move {
        let mut best: Option<Probe> = None;
        for _ in 0..RTT_SAMPLES {
            let start = std::time::Instant::now();
            match storage::get_info(&ep).await {
                Ok(i) => {
                    let rtt_millis = start.elapsed().as_secs_f64() * 1000.0;
                    if best.as_ref().is_none_or(|b| rtt_millis < b.rtt_millis) {
                        best = Some(Probe {
                            data_center: i.data_center,
                            ready: i.ready,
                            capacity_bytes: i.capacity_bytes,
                            free_bytes: i.free_bytes,
                            rtt_millis,
                        });
                    }
                }
                Err(e) if best.is_none() => return (ep, Err(e.to_string())),
                Err(_) => break,
            }
        }
        let r = best.ok_or_else(|| "no probe ran".to_string());
        (ep, r)
    });
    join_all(calls).await.into_iter().collect()
}

/// Write the status when it changed. The plan keeps the recorded round-trip
/// times unless a measurement differs meaningfully (`plan::settle_rtt`), so
/// a new RTT is written on its own, and jitter is not.
pub async fn status(
    ctx: &Context,
    dc: &DataCenter,
    status: &DataCenterStatus,
) -> Result<(), Error> {
    if dc.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<DataCenter> = Api::all(ctx.client.clone());
    let body = json!({"apiVersion": "roam.dev/v1alpha1", "kind": "DataCenter", "status": status});
    api.patch_status(
        &dc.name_any(),
        &PatchParams::apply(OPERATOR_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::WriteObject {
        kind: "DataCenter",
        name: dc.name_any(),
        source: Box::new(source),
    })
}

/// Record an Event on the DataCenter.
pub async fn event(ctx: &Context, dc: &DataCenter, warning: bool, reason: &str, note: String) {
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: "Probe".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &dc.object_ref(&())).await {
        tracing::warn!("recording event {reason}: {e:#}");
    }
}
