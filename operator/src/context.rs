//! What every reconcile shares: the client, the caches, the event recorder,
//! the metrics and the scope this operator acts on.

use std::sync::Arc;

use k8s_openapi::api::{
    core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod},
    storage::v1::VolumeAttachment,
};
use kube::{Client, runtime::events::Recorder, runtime::reflector::Store};
use roam_crds::DataCenter;

use crate::metrics::Metrics;

/// Read-only caches kept by reflectors.
#[derive(Clone)]
pub struct Stores {
    pub nodes: Store<Node>,
    pub data_centers: Store<DataCenter>,
    pub pods: Store<Pod>,
    pub pvcs: Store<PersistentVolumeClaim>,
    pub pvs: Store<PersistentVolume>,
    pub attachments: Store<VolumeAttachment>,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub stores: Stores,
}

impl Context {
    /// The DataCenters this operator manages.
    pub fn data_centers(&self) -> Vec<DataCenter> {
        self.stores
            .data_centers
            .state()
            .iter()
            .map(|d| (**d).clone())
            .collect()
    }
}
