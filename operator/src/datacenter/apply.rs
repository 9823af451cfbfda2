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

/// GetInfo on every endpoint, concurrently, timing each.
pub async fn probe_all(endpoints: Vec<String>) -> BTreeMap<String, Result<Probe, String>> {
    let calls = endpoints.into_iter().map(|ep| async move {
        let start = std::time::Instant::now();
        let r = storage::get_info(&ep).await.map(|i| Probe {
            data_center: i.data_center,
            ready: i.ready,
            capacity_bytes: i.capacity_bytes,
            free_bytes: i.free_bytes,
            rtt_millis: start.elapsed().as_secs_f64() * 1000.0,
        });
        (ep, r.map_err(|e| e.to_string()))
    });
    join_all(calls).await.into_iter().collect()
}

/// Write the status when it changed.
pub async fn status(
    ctx: &Context,
    dc: &DataCenter,
    status: &DataCenterStatus,
) -> Result<(), Error> {
    // The probe's RTT changes every time; writing it alone would trigger the
    // next reconcile at once (a hot loop). It is refreshed with any other change.
    let without_rtt = |s: &DataCenterStatus| {
        let mut s = s.clone();
        s.storage_systems
            .iter_mut()
            .for_each(|x| x.rtt_millis = None);
        s
    };
    if dc.status.as_ref().map(without_rtt) == Some(without_rtt(status)) {
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
