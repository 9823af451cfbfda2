//! `kubectl roam cordon|uncordon DC`: drain a data center of primaries, or
//! let it hold them again. Writes only `spec.cordoned` of the DataCenter;
//! the operator does the moving (planned relocations) and counts what is
//! left in the DataCenter's status, which `--wait` follows.

use std::time::Duration;

use futures::StreamExt;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use roam_crds::DataCenter;
use serde::Serialize;

use crate::error::{Error, api};

/// What a cordon left, as printed.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drain {
    pub data_center: String,
    pub cordoned: bool,
    /// Primaries still in the data center (known once the operator counted).
    pub primaries: Option<u32>,
    /// Of those, the ones waiting for their pod to stop.
    pub primaries_attached: Option<u32>,
}

impl Drain {
    pub fn table(&self) -> String {
        let verb = if self.cordoned {
            "cordoned"
        } else {
            "uncordoned"
        };
        match (self.cordoned, self.primaries, self.primaries_attached) {
            (true, Some(left), Some(attached)) => format!(
                "datacenter/{} {verb}: {left} primaries left, {attached} of them wait for \
                 their pod to stop\n",
                self.data_center
            ),
            _ => format!("datacenter/{} {verb}\n", self.data_center),
        }
    }
}

/// Sets `spec.cordoned`; with a `wait` above zero, then waits until every
/// primary left is one whose volume is attached (those move when their pod
/// stops).
pub async fn set(
    client: &Client,
    dc: &str,
    cordoned: bool,
    wait: Duration,
) -> Result<Drain, Error> {
    let dcs: Api<DataCenter> = Api::all(client.clone());
    let patch = serde_json::json!({ "spec": { "cordoned": cordoned } });
    dcs.patch(dc, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api("patch", "DataCenter", "", dc))?;
    let drain_of = |status: roam_crds::DataCenterStatus| {
        let drained = matches!(
            (status.primaries, status.primaries_attached),
            (Some(left), Some(attached)) if left <= attached
        );
        let drain = Drain {
            data_center: dc.to_owned(),
            cordoned,
            primaries: status.primaries,
            primaries_attached: status.primaries_attached,
        };
        (drain, drained)
    };
    if !cordoned || wait.is_zero() {
        let status = dcs
            .get(dc)
            .await
            .map_err(api("get", "DataCenter", "", dc))?
            .status
            .unwrap_or_default();
        return Ok(drain_of(status).0);
    }
    // Follow the operator's count on a watch until it says drained.
    let cfg = watcher::Config::default().fields(&format!("metadata.name={dc}"));
    let mut stream = watcher(dcs.clone(), cfg).applied_objects().boxed();
    let deadline = tokio::time::Instant::now() + wait;
    let mut last = drain_of(Default::default()).0;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) | Ok(None) => {
                return Err(Error::DrainTimeout {
                    data_center: dc.to_owned(),
                    waited: wait,
                    state: last.table().trim_end().to_owned(),
                });
            }
            Ok(Some(Err(_))) => continue, // the watcher re-lists on its own after an error
            Ok(Some(Ok(found))) => {
                let (drain, drained) = drain_of(found.status.unwrap_or_default());
                if drained {
                    return Ok(drain);
                }
                last = drain;
            }
        }
    }
}
