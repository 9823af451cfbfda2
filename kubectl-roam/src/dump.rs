//! `kubectl roam dump`: one gzipped tarball a user attaches to a bug report:
//! every Roam object (DataCenters, VirtualVolumes, CopyVolumeGroups), the
//! Kubernetes objects of driver `roam.dev` (CSIDriver, StorageClasses,
//! PersistentVolumes, VolumeAttachments, CSIStorageCapacities), the Nodes,
//! the Events of Roam's namespace and of Roam objects everywhere, and the
//! last log lines of every container of every pod in Roam's namespace (the
//! previous run's too, when a container restarted).
//!
//! What cannot be read (RBAC, a pod without logs) is written into
//! `errors.txt` in the bundle instead of failing the whole dump.

use std::io::Write;

use flate2::{Compression, write::GzEncoder};
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Event, Node, PersistentVolume, Pod},
    storage::v1::{CSIDriver, CSIStorageCapacity, StorageClass, VolumeAttachment},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, LogParams},
};
use roam_crds::{CopyVolumeGroup, DRIVER_NAME, DataCenter, GROUP, VirtualVolume};
use serde::Serialize;

use crate::error::Error;

/// What to collect.
pub struct DumpOptions {
    /// Namespace of Roam's own pods.
    pub roam_namespace: String,
    /// Log lines per container.
    pub tail: i64,
}

/// Files of the bundle, in order.
struct Bundle {
    files: Vec<(String, Vec<u8>)>,
    errors: Vec<String>,
}

impl Bundle {
    fn yaml<T: Serialize>(&mut self, path: &str, items: &[T]) {
        match serde_yaml::to_string(items) {
            Ok(s) => self.files.push((path.into(), s.into_bytes())),
            Err(e) => self.errors.push(format!("{path}: {e}")),
        }
    }
}

async fn list<K>(api: Api<K>, what: &str, bundle: &mut Bundle) -> Vec<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            bundle.errors.push(format!("list {what}: {e}"));
            vec![]
        }
    }
}

/// Collect everything and return the gzipped tarball's bytes.
pub async fn collect(client: &Client, opts: &DumpOptions) -> Result<Vec<u8>, Error> {
    let mut b = Bundle {
        files: vec![],
        errors: vec![],
    };
    let c = client.clone();
    let dcs = list(Api::<DataCenter>::all(c.clone()), "datacenters", &mut b).await;
    b.yaml("objects/datacenters.yaml", &dcs);
    let vvs = list(
        Api::<VirtualVolume>::all(c.clone()),
        "virtualvolumes",
        &mut b,
    )
    .await;
    b.yaml("objects/virtualvolumes.yaml", &vvs);
    let cvgs = list(
        Api::<CopyVolumeGroup>::all(c.clone()),
        "copyvolumegroups",
        &mut b,
    )
    .await;
    b.yaml("objects/copyvolumegroups.yaml", &cvgs);

    let drivers: Vec<CSIDriver> = list(Api::all(c.clone()), "csidrivers", &mut b)
        .await
        .into_iter()
        .filter(|d: &CSIDriver| d.name_any() == DRIVER_NAME)
        .collect();
    b.yaml("objects/csidrivers.yaml", &drivers);
    let classes: Vec<StorageClass> = list(Api::all(c.clone()), "storageclasses", &mut b)
        .await
        .into_iter()
        .filter(|s: &StorageClass| s.provisioner == DRIVER_NAME)
        .collect();
    b.yaml("objects/storageclasses.yaml", &classes);
    let pvs: Vec<PersistentVolume> = list(Api::all(c.clone()), "persistentvolumes", &mut b)
        .await
        .into_iter()
        .filter(|pv: &PersistentVolume| crate::target::volume_of_pv(pv).is_some())
        .collect();
    b.yaml("objects/persistentvolumes.yaml", &pvs);
    let vas: Vec<VolumeAttachment> = list(Api::all(c.clone()), "volumeattachments", &mut b)
        .await
        .into_iter()
        .filter(|va: &VolumeAttachment| va.spec.attacher == DRIVER_NAME)
        .collect();
    b.yaml("objects/volumeattachments.yaml", &vas);
    let caps: Vec<CSIStorageCapacity> = list(Api::all(c.clone()), "csistoragecapacities", &mut b)
        .await
        .into_iter()
        .filter(|s: &CSIStorageCapacity| {
            classes
                .iter()
                .any(|c| Some(c.name_any()) == Some(s.storage_class_name.clone()))
        })
        .collect();
    b.yaml("objects/csistoragecapacities.yaml", &caps);
    let nodes = list(Api::<Node>::all(c.clone()), "nodes", &mut b).await;
    b.yaml("objects/nodes.yaml", &nodes);
    let ns = &opts.roam_namespace;
    let leases = list(Api::<Lease>::namespaced(c.clone(), ns), "leases", &mut b).await;
    b.yaml("objects/leases.yaml", &leases);
    let pods = list(Api::<Pod>::namespaced(c.clone(), ns), "pods", &mut b).await;
    b.yaml("objects/pods.yaml", &pods);

    let events: Vec<Event> = list(Api::<Event>::all(c.clone()), "events", &mut b)
        .await
        .into_iter()
        .filter(|e: &Event| {
            e.namespace().as_deref() == Some(ns.as_str())
                || e.involved_object
                    .api_version
                    .as_deref()
                    .is_some_and(|v| v.starts_with(&format!("{GROUP}/")))
        })
        .collect();
    b.yaml("events.yaml", &events);

    let pod_api = Api::<Pod>::namespaced(c.clone(), ns);
    for p in &pods {
        let name = p.name_any();
        let statuses = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        let containers: Vec<String> = p
            .spec
            .as_ref()
            .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        for container in containers {
            let restarted = statuses
                .iter()
                .any(|s| s.name == container && s.restart_count > 0);
            for previous in [false, true] {
                if previous && !restarted {
                    continue;
                }
                let lp = LogParams {
                    container: Some(container.clone()),
                    tail_lines: Some(opts.tail),
                    timestamps: true,
                    previous,
                    ..Default::default()
                };
                let path = format!(
                    "logs/{name}/{container}{}.log",
                    if previous { ".previous" } else { "" }
                );
                match pod_api.logs(&name, &lp).await {
                    Ok(text) => b.files.push((path, text.into_bytes())),
                    Err(e) => b.errors.push(format!("{path}: {e}")),
                }
            }
        }
    }
    let errors = b.errors.join("\n");
    if !errors.is_empty() {
        b.files
            .push(("errors.txt".into(), format!("{errors}\n").into_bytes()));
    }
    pack(&b.files)
}

/// A gzipped tar of `files` under one top directory.
fn pack(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, Error> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let io = |source| Error::Write {
        path: "<tarball>".into(),
        source,
    };
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(now);
        h.set_cksum();
        tar.append_data(&mut h, format!("roam-dump/{path}"), data.as_slice())
            .map_err(io)?;
    }
    let mut gz = tar.into_inner().map_err(io)?;
    gz.flush().map_err(io)?;
    gz.finish().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tarball_holds_every_file() {
        let bytes = pack(&[
            ("a.yaml".into(), b"x: 1\n".to_vec()),
            ("logs/p/c.log".into(), b"line\n".to_vec()),
        ])
        .unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["roam-dump/a.yaml", "roam-dump/logs/p/c.log"]);
    }
}
