//! `kubectl roam cordon|uncordon DC`: drain a data center of primaries, or
//! let it hold them again. Writes only `spec.cordoned` of the DataCenter;
//! the operator does the moving (planned relocations) and counts what is
//! left in the DataCenter's status, which `--wait` follows.

use std::time::{Duration, Instant};

use kube::{
    Api, Client,
    api::{Patch, PatchParams},
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
    let deadline = Instant::now() + wait;
    loop {
        let status = dcs
            .get(dc)
            .await
            .map_err(api("get", "DataCenter", "", dc))?
            .status
            .unwrap_or_default();
        let drain = Drain {
            data_center: dc.to_owned(),
            cordoned,
            primaries: status.primaries,
            primaries_attached: status.primaries_attached,
        };
        let drained = matches!(
            (status.primaries, status.primaries_attached),
            (Some(left), Some(attached)) if left <= attached
        );
        if !cordoned || wait.is_zero() || drained {
            return Ok(drain);
        }
        if Instant::now() >= deadline {
            return Err(Error::DrainTimeout {
                data_center: dc.to_owned(),
                waited: wait,
                state: drain.table().trim_end().to_owned(),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
