//! The CSI Controller RPCs. Each validates its request first (naming the
//! field at fault), takes the per-volume guard, and reads or writes
//! VirtualVolumes through the API server.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as KubeNode;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use roam_crds::{
    ATTACHED_NODE_ANNOTATION, CSI_NAME_ANNOTATION, CopyVolumeGroup, DataCenter, VirtualVolume,
    VolumePhase, ZONE_LABEL, datacenter, proximity, quantity,
};
use roam_proto::csi::controller_server::Controller;
use roam_proto::csi::controller_service_capability::{self, rpc};
use roam_proto::csi::*;
use serde_json::json;
use tonic::{Request, Response, Status};
use tracing::{debug, instrument};

use super::CTX_FS_TYPE;
use super::error::{ControllerError, Mismatch};
use super::login::{Login, login_state};
use super::params::{self, P_PVC_NAMESPACE};
use crate::csi_guard::InFlight;
use crate::csi_metrics::RpcObserver;
use crate::csi_validate::{parse_capability, require, required_capability};

/// VirtualVolume annotation: the placement parameters CreateVolume was
/// called with (sorted JSON), compared when the same name comes again.
pub const CSI_PARAMETERS_ANNOTATION: &str = "roam.dev/csi-parameters";

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Namespace of VirtualVolumes when the request names no PVC namespace.
    pub volume_namespace: String,
    /// Longest a call waits for the operator before DEADLINE_EXCEEDED.
    pub wait_timeout: Duration,
    /// Pause before reading again after a watch error (waits otherwise
    /// follow the watches of the volume and its group).
    pub poll_interval: Duration,
}

pub struct ControllerService {
    client: Client,
    config: ControllerConfig,
    in_flight: InFlight,
    observer: RpcObserver,
}

fn api_err(
    op: &'static str,
    kind: &'static str,
    name: &str,
) -> impl FnOnce(kube::Error) -> ControllerError {
    let name = name.to_owned();
    move |source| ControllerError::Api {
        op,
        kind,
        name,
        source,
    }
}

/// The zone value of a data center (its `spec.zone`, else its name).
fn zone_of(dc: &DataCenter) -> String {
    dc.spec
        .zone
        .clone()
        .or_else(|| dc.metadata.name.clone())
        .unwrap_or_default()
}

fn dc_named<'a>(dcs: &'a [DataCenter], name: &str) -> Option<&'a DataCenter> {
    dcs.iter()
        .find(|d| d.metadata.name.as_deref() == Some(name))
}

/// The CSI topology of a volume held in `member_dcs`: one zone segment for
/// each data center it can be used from ([`proximity::reachable_from`]).
fn reachable_topology(member_dcs: &[String], dcs: &[DataCenter]) -> Vec<Topology> {
    proximity::reachable_from(member_dcs, dcs)
        .iter()
        .map(|dc| Topology {
            segments: HashMap::from([(
                ZONE_LABEL.to_owned(),
                dc_named(dcs, dc).map_or_else(|| dc.clone(), zone_of),
            )]),
        })
        .collect()
}

/// CreateVolume: "the volume MUST be accessible from at least one of the
/// requisite topologies" (RESOURCE_EXHAUSTED otherwise). No requisite list
/// asks for nothing.
fn check_requisite(
    volume_id: &str,
    requirements: Option<&TopologyRequirement>,
    accessible: &[Topology],
) -> Result<(), Status> {
    let Some(requisite) = requirements.map(|r| &r.requisite).filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    let zone = |t: &Topology| t.segments.get(ZONE_LABEL).cloned();
    if requisite.iter().any(|r| {
        accessible
            .iter()
            .any(|a| zone(a).is_some() && zone(a) == zone(r))
    }) {
        return Ok(());
    }
    let names = |ts: &[Topology]| ts.iter().filter_map(zone).collect::<Vec<_>>().join(",");
    Err(ControllerError::RequisiteUnreachable {
        volume_id: volume_id.to_owned(),
        accessible: names(accessible),
        requisite: names(requisite),
    }
    .into())
}

fn volume_size(vv: &VirtualVolume) -> Result<u64, ControllerError> {
    quantity::parse_bytes(&vv.spec.size).map_err(|e| ControllerError::Size {
        name: vv.metadata.name.clone().unwrap_or_default(),
        size: vv.spec.size.0.clone(),
        cause: e.to_string(),
    })
}

fn annotation<'a>(vv: &'a VirtualVolume, key: &str) -> Option<&'a str> {
    vv.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// The CSI view of a VirtualVolume.
fn csi_volume(
    vv: &VirtualVolume,
    group: Option<&CopyVolumeGroup>,
    dcs: &[DataCenter],
) -> Result<Volume, ControllerError> {
    let namespace = vv.metadata.namespace.clone().unwrap_or_default();
    let name = vv.metadata.name.clone().unwrap_or_default();
    let mut volume_context = HashMap::new();
    if let Some(fs) = vv.spec.fs_type {
        let fs = match fs {
            roam_crds::FsType::Ext4 => "ext4",
            roam_crds::FsType::Xfs => "xfs",
        };
        volume_context.insert(CTX_FS_TYPE.to_owned(), fs.to_owned());
    }
    // Claim 5: usable from every data center with a route to a replica,
    // not only from those that hold one.
    let accessible_topology = group
        .map(|g| reachable_topology(&g.member_dcs(), dcs))
        .unwrap_or_default();
    Ok(Volume {
        capacity_bytes: volume_size(vv)? as i64,
        volume_id: roam_crds::csi_volume_id(&namespace, &name),
        volume_context,
        content_source: None,
        accessible_topology,
    })
}

/// Wakes a waiting call whenever the VirtualVolume or the CopyVolumeGroup
/// of one name changes (the operator writes both as it works), instead of
/// reading them again on a timer. The watches start before the caller's
/// first read, so no change between that read and the wait is missed.
struct Changes {
    events: futures::stream::BoxStream<'static, bool>,
    retry_after: Duration,
}

impl Changes {
    fn watch(client: &Client, ns: &str, name: &str, retry_after: Duration) -> Self {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let volumes = watcher(
            Api::<VirtualVolume>::namespaced(client.clone(), ns),
            cfg.clone(),
        )
        .default_backoff()
        .map(|e| e.is_ok());
        let groups = watcher(Api::<CopyVolumeGroup>::namespaced(client.clone(), ns), cfg)
            .default_backoff()
            .map(|e| e.is_ok());
        Self {
            events: futures::stream::select(volumes, groups).boxed(),
            retry_after,
        }
    }

    /// Waits for the next change; `false` once `deadline` has passed.
    async fn next_before(&mut self, deadline: Instant) -> bool {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::from_std(deadline);
        match tokio::time::timeout_at(deadline, self.events.next()).await {
            Ok(Some(true)) => true,
            // A watch error: read again a little later (the watcher
            // reconnects with backoff meanwhile); a closed stream the same.
            Ok(Some(false) | None) => {
                tokio::time::sleep_until(
                    deadline.min(tokio::time::Instant::now() + self.retry_after),
                )
                .await;
                tokio::time::Instant::now() < deadline
            }
            Err(_) => false,
        }
    }
}

impl ControllerService {
    pub fn new(client: Client, config: ControllerConfig, observer: RpcObserver) -> Self {
        Self {
            client,
            config,
            in_flight: InFlight::default(),
            observer,
        }
    }

    fn volumes(&self, namespace: &str) -> Api<VirtualVolume> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn groups(&self, namespace: &str) -> Api<CopyVolumeGroup> {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn data_centers(&self) -> Result<Vec<DataCenter>, ControllerError> {
        Api::<DataCenter>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(api_err("list", "DataCenter", "*"))
    }

    async fn get_volume(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<VirtualVolume>, ControllerError> {
        self.volumes(ns).get_opt(name).await.map_err(api_err(
            "get",
            "VirtualVolume",
            &format!("{ns}/{name}"),
        ))
    }

    async fn get_group(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<CopyVolumeGroup>, ControllerError> {
        self.groups(ns).get_opt(name).await.map_err(api_err(
            "get",
            "CopyVolumeGroup",
            &format!("{ns}/{name}"),
        ))
    }

    /// The VirtualVolume of a CSI volume id, or NOT_FOUND.
    async fn existing(&self, volume_id: &str) -> Result<(String, String, VirtualVolume), Status> {
        let volume_id = volume_id.to_owned();
        let Some((ns, name)) = params::split_volume_id(&volume_id) else {
            return Err(ControllerError::MalformedVolumeId { volume_id }.into());
        };
        match self.get_volume(ns, name).await? {
            Some(vv) => Ok((ns.to_owned(), name.to_owned(), vv)),
            None => Err(ControllerError::VolumeNotFound { volume_id }.into()),
        }
    }

    #[instrument(skip_all, fields(volume = %req.name))]
    async fn create(&self, req: CreateVolumeRequest) -> Result<Volume, Status> {
        let csi_name = require("name", &req.name)?.to_owned();
        if req.volume_capabilities.is_empty() {
            return Err(ControllerError::MissingField {
                field: "volume_capabilities",
            }
            .into());
        }
        for (i, cap) in req.volume_capabilities.iter().enumerate() {
            let (_, supported) = parse_capability(&format!("volume_capabilities[{i}]"), cap)?;
            if !supported {
                return Err(ControllerError::MultiNodeAccess {
                    field: format!("volume_capabilities[{i}]"),
                }
                .into());
            }
        }
        if req.volume_content_source.is_some() {
            return Err(ControllerError::ContentSource.into());
        }
        let size = params::size_for(req.capacity_range.as_ref())?;
        let namespace = req
            .parameters
            .get(P_PVC_NAMESPACE)
            .filter(|ns| !ns.is_empty())
            .cloned()
            .unwrap_or_else(|| self.config.volume_namespace.clone());
        let name = params::object_name(&csi_name);
        let volume_id = roam_crds::csi_volume_id(&namespace, &name);
        let _guard = self.in_flight.try_acquire(&volume_id)?;
        let placement = params::placement_parameters(&req.parameters);
        let placement_json = serde_json::to_string(&placement).unwrap_or_default();

        match self.get_volume(&namespace, &name).await? {
            Some(existing) if existing.metadata.deletion_timestamp.is_some() => {
                return Err(ControllerError::BeingDeleted { volume_id }.into());
            }
            Some(existing) => {
                // "If a volume corresponding to the specified volume name
                // already exists, is accessible from accessibility_requirements,
                // and is compatible with the specified capacity_range,
                // volume_capabilities, parameters ... the Plugin MUST reply
                // 0 OK"; otherwise ALREADY_EXISTS.
                let same_name = annotation(&existing, CSI_NAME_ANNOTATION) == Some(&csi_name);
                let same_params =
                    annotation(&existing, CSI_PARAMETERS_ANNOTATION) == Some(&placement_json);
                let existing_size = volume_size(&existing)?;
                if !same_name
                    || !same_params
                    || !params::size_satisfies(existing_size, req.capacity_range.as_ref())
                {
                    return Err(ControllerError::AlreadyExists {
                        volume_id,
                        mismatch: Box::new(Mismatch {
                            existing_name: annotation(&existing, CSI_NAME_ANNOTATION)
                                .unwrap_or("")
                                .to_owned(),
                            existing_size,
                            existing_parameters: annotation(&existing, CSI_PARAMETERS_ANNOTATION)
                                .unwrap_or("{}")
                                .to_owned(),
                            name: csi_name,
                            size,
                            parameters: placement_json,
                        }),
                    }
                    .into());
                }
            }
            None => {
                let dcs = self.data_centers().await?;
                let spec = params::volume_spec(&req.parameters, size, dcs.len() as u32)?;
                // Refuse before creating anything when the placement is named.
                if let Some(named) = &spec.data_centers {
                    check_requisite(
                        &volume_id,
                        req.accessibility_requirements.as_ref(),
                        &reachable_topology(named, &dcs),
                    )?;
                }
                let vv = VirtualVolume {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace.clone()),
                        annotations: Some(BTreeMap::from([
                            (CSI_NAME_ANNOTATION.to_owned(), csi_name.clone()),
                            (CSI_PARAMETERS_ANNOTATION.to_owned(), placement_json.clone()),
                        ])),
                        ..Default::default()
                    },
                    spec,
                    status: None,
                };
                match self
                    .volumes(&namespace)
                    .create(&PostParams::default(), &vv)
                    .await
                {
                    Ok(_) => {}
                    // Lost a race with another creator of the same name:
                    // the CO retries and the branch above compares.
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        return Err(ControllerError::CreatedConcurrently { volume_id }.into());
                    }
                    Err(e) => {
                        return Err(api_err("create", "VirtualVolume", &volume_id)(e).into());
                    }
                }
            }
        }
        let volume = self.wait_ready(&namespace, &name).await?;
        check_requisite(
            &volume_id,
            req.accessibility_requirements.as_ref(),
            &volume.accessible_topology,
        )?;
        Ok(volume)
    }

    /// Waits until the operator reports the volume Ready (or Degraded:
    /// usable) and its group exists.
    async fn wait_ready(&self, ns: &str, name: &str) -> Result<Volume, Status> {
        let deadline = Instant::now() + self.config.wait_timeout;
        let volume_id = roam_crds::csi_volume_id(ns, name);
        let mut changes = Changes::watch(&self.client, ns, name, self.config.poll_interval);
        loop {
            let vv = self.get_volume(ns, name).await?.ok_or_else(|| {
                ControllerError::DeletedWhileCreating {
                    volume_id: volume_id.clone(),
                }
            })?;
            let phase = vv.status.as_ref().map(|s| s.phase).unwrap_or_default();
            match phase {
                VolumePhase::Ready | VolumePhase::Degraded | VolumePhase::Relocating => {
                    if let Some(group) = self.get_group(ns, name).await? {
                        let dcs = self.data_centers().await?;
                        return Ok(csi_volume(&vv, Some(&group), &dcs)?);
                    }
                }
                VolumePhase::Failed => {
                    let why = vv
                        .status
                        .as_ref()
                        .map(|s| {
                            s.conditions
                                .iter()
                                .filter(|c| c.status != "True" || c.type_ == "PlacementFailed")
                                .map(|c| format!("{}: {}", c.type_, c.message))
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                        .unwrap_or_default();
                    return Err(ControllerError::PlacementFailed { volume_id, why }.into());
                }
                _ => {}
            }
            if !changes.next_before(deadline).await {
                return Err(ControllerError::NotReady {
                    volume_id,
                    waited: self.config.wait_timeout,
                    phase: phase.as_str(),
                }
                .into());
            }
        }
    }

    #[instrument(skip_all, fields(volume = %req.volume_id))]
    async fn delete(&self, req: DeleteVolumeRequest) -> Result<(), Status> {
        let volume_id = require("volume_id", &req.volume_id)?.to_owned();
        let _guard = self.in_flight.try_acquire(&volume_id)?;
        // A malformed id names no volume: nothing to delete.
        let Some((ns, name)) = params::split_volume_id(&volume_id) else {
            return Ok(());
        };
        match self
            .volumes(ns)
            .delete(name, &DeleteParams::foreground())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_err("delete", "VirtualVolume", &volume_id)(e).into()),
        }
    }

    #[instrument(skip_all, fields(volume = %req.volume_id, node = %req.node_id))]
    async fn publish(
        &self,
        req: ControllerPublishVolumeRequest,
    ) -> Result<HashMap<String, String>, Status> {
        let volume_id = require("volume_id", &req.volume_id)?.to_owned();
        let node_id = require("node_id", &req.node_id)?.to_owned();
        required_capability(
            "volume_capability",
            req.volume_capability.as_ref(),
            tonic::Code::FailedPrecondition,
        )?;
        let _guard = self.in_flight.try_acquire(&volume_id)?;
        let (ns, name, vv) = self.existing(&volume_id).await?;
        let node = Api::<KubeNode>::all(self.client.clone())
            .get_opt(&node_id)
            .await
            .map_err(api_err("get", "Node", &node_id))?
            .ok_or_else(|| ControllerError::NodeNotFound {
                node_id: node_id.clone(),
            })?;
        if let Some(other) = annotation(&vv, ATTACHED_NODE_ANNOTATION)
            && other != node_id
        {
            return Err(ControllerError::PublishedElsewhere {
                volume_id,
                other: other.to_owned(),
            }
            .into());
        }
        let dcs = self.data_centers().await?;
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let wanted_dc = datacenter::data_center_of_node(&labels, &dcs).ok_or_else(|| {
            ControllerError::NodeWithoutDataCenter {
                node_id: node_id.clone(),
                label: ZONE_LABEL,
                value: labels
                    .get(ZONE_LABEL)
                    .map_or("<unset>", String::as_str)
                    .to_owned(),
            }
        })?;
        if annotation(&vv, ATTACHED_NODE_ANNOTATION) != Some(&node_id) {
            let patch = json!({"metadata": {"annotations": {ATTACHED_NODE_ANNOTATION: node_id}}});
            self.volumes(&ns)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_err("annotate", "VirtualVolume", &volume_id))?;
        }
        // Claim 13: wait until the primary is in the wanted data center (or
        // the nearest one holding a replica), then hand over its details.
        let deadline = Instant::now() + self.config.wait_timeout;
        let mut changes = Changes::watch(&self.client, &ns, &name, self.config.poll_interval);
        loop {
            let vv = self.get_volume(&ns, &name).await?.ok_or_else(|| {
                ControllerError::DeletedWhilePublishing {
                    volume_id: volume_id.clone(),
                }
            })?;
            let group = self.get_group(&ns, &name).await?;
            let dcs = self.data_centers().await?;
            match login_state(&vv, group.as_ref(), &wanted_dc, &dcs) {
                Login::Done(context) => return Ok(context.to_map()),
                Login::Waiting(why) => {
                    debug!(%why, "waiting for the primary to move");
                    if !changes.next_before(deadline).await {
                        return Err(ControllerError::PrimaryNotMoved {
                            volume_id,
                            wanted_dc,
                            waited: self.config.wait_timeout,
                            why,
                        }
                        .into());
                    }
                }
            }
        }
    }

    #[instrument(skip_all, fields(volume = %req.volume_id, node = %req.node_id))]
    async fn unpublish(&self, req: ControllerUnpublishVolumeRequest) -> Result<(), Status> {
        let volume_id = require("volume_id", &req.volume_id)?.to_owned();
        let _guard = self.in_flight.try_acquire(&volume_id)?;
        let Some((ns, name)) = params::split_volume_id(&volume_id) else {
            return Ok(());
        };
        let Some(vv) = self.get_volume(ns, name).await? else {
            return Ok(());
        };
        let attached = annotation(&vv, ATTACHED_NODE_ANNOTATION);
        if attached.is_some() && (req.node_id.is_empty() || attached == Some(&req.node_id)) {
            let patch = json!({"metadata": {"annotations": {ATTACHED_NODE_ANNOTATION: null}}});
            match self
                .volumes(ns)
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(api_err("annotate", "VirtualVolume", &volume_id)(e).into()),
            }
        }
        Ok(())
    }

    async fn validate(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, Status> {
        let volume_id = require("volume_id", &req.volume_id)?.to_owned();
        if req.volume_capabilities.is_empty() {
            return Err(ControllerError::MissingField {
                field: "volume_capabilities",
            }
            .into());
        }
        let mut unsupported = Vec::new();
        for (i, cap) in req.volume_capabilities.iter().enumerate() {
            let (_, supported) = parse_capability(&format!("volume_capabilities[{i}]"), cap)?;
            if !supported {
                unsupported.push(format!("volume_capabilities[{i}]"));
            }
        }
        self.existing(&volume_id).await?;
        if !unsupported.is_empty() {
            return Ok(ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: format!(
                    "{}: Roam volumes are published to one node at a time",
                    unsupported.join(", ")
                ),
            });
        }
        Ok(ValidateVolumeCapabilitiesResponse {
            confirmed: Some(validate_volume_capabilities_response::Confirmed {
                volume_context: req.volume_context,
                volume_capabilities: req.volume_capabilities,
                parameters: req.parameters,
            }),
            message: String::new(),
        })
    }

    async fn list(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse, Status> {
        if req.max_entries < 0 {
            return Err(ControllerError::NegativeMaxEntries {
                max_entries: req.max_entries,
            }
            .into());
        }
        let mut volumes = Api::<VirtualVolume>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(api_err("list", "VirtualVolume", "*"))?
            .items;
        // Volumes this driver provisioned; one being deleted is gone for the
        // CO (DeleteVolume returned).
        volumes.retain(|v| {
            v.metadata.deletion_timestamp.is_none() && annotation(v, CSI_NAME_ANNOTATION).is_some()
        });
        volumes.sort_by_key(|v| {
            (
                v.metadata.namespace.clone().unwrap_or_default(),
                v.metadata.name.clone().unwrap_or_default(),
            )
        });
        let start = if req.starting_token.is_empty() {
            0
        } else {
            match req.starting_token.parse::<usize>() {
                Ok(n) if n <= volumes.len() => n,
                _ => {
                    return Err(ControllerError::BadStartingToken {
                        token: req.starting_token,
                    }
                    .into());
                }
            }
        };
        let end = if req.max_entries == 0 {
            volumes.len()
        } else {
            (start + req.max_entries as usize).min(volumes.len())
        };
        let dcs = self.data_centers().await?;
        let groups: HashMap<(String, String), CopyVolumeGroup> =
            Api::<CopyVolumeGroup>::all(self.client.clone())
                .list(&ListParams::default())
                .await
                .map_err(api_err("list", "CopyVolumeGroup", "*"))?
                .items
                .into_iter()
                .map(|g| {
                    let key = (
                        g.metadata.namespace.clone().unwrap_or_default(),
                        g.metadata.name.clone().unwrap_or_default(),
                    );
                    (key, g)
                })
                .collect();
        let mut entries = Vec::with_capacity(end - start);
        for vv in &volumes[start..end] {
            let key = (
                vv.metadata.namespace.clone().unwrap_or_default(),
                vv.metadata.name.clone().unwrap_or_default(),
            );
            entries.push(list_volumes_response::Entry {
                volume: Some(csi_volume(vv, groups.get(&key), &dcs)?),
                status: None,
            });
        }
        Ok(ListVolumesResponse {
            entries,
            next_token: if end < volumes.len() {
                end.to_string()
            } else {
                String::new()
            },
        })
    }

    async fn capacity(&self, req: GetCapacityRequest) -> Result<GetCapacityResponse, Status> {
        for (i, cap) in req.volume_capabilities.iter().enumerate() {
            let (_, supported) = parse_capability(&format!("volume_capabilities[{i}]"), cap)?;
            if !supported {
                return Ok(GetCapacityResponse::default());
            }
        }
        let wanted_zone = req
            .accessible_topology
            .as_ref()
            .and_then(|t| t.segments.get(ZONE_LABEL))
            .cloned();
        let wanted_dcs: Option<Vec<String>> = req
            .parameters
            .get(params::P_DATA_CENTERS)
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
        let available: u64 = self
            .data_centers()
            .await?
            .iter()
            .filter(|dc| wanted_zone.as_ref().is_none_or(|z| *z == zone_of(dc)))
            .filter(|dc| {
                wanted_dcs.as_ref().is_none_or(|names| {
                    dc.metadata.name.as_ref().is_some_and(|n| names.contains(n))
                })
            })
            .flat_map(|dc| {
                dc.ready_storage()
                    .into_iter()
                    .map(|s| s.free_bytes)
                    .collect::<Vec<_>>()
            })
            .sum();
        Ok(GetCapacityResponse {
            available_capacity: available.min(i64::MAX as u64) as i64,
            maximum_volume_size: None,
            minimum_volume_size: None,
        })
    }

    #[instrument(skip_all, fields(volume = %req.volume_id))]
    async fn expand(
        &self,
        req: ControllerExpandVolumeRequest,
    ) -> Result<ControllerExpandVolumeResponse, Status> {
        let volume_id = require("volume_id", &req.volume_id)?.to_owned();
        let range = req
            .capacity_range
            .as_ref()
            .ok_or(ControllerError::MissingField {
                field: "capacity_range",
            })?;
        let wanted = params::size_for(Some(range))?;
        let _guard = self.in_flight.try_acquire(&volume_id)?;
        let (ns, name, vv) = self.existing(&volume_id).await?;
        let current = volume_size(&vv)?;
        if wanted < current {
            if params::size_satisfies(current, Some(range)) {
                return Ok(ControllerExpandVolumeResponse {
                    capacity_bytes: current as i64,
                    node_expansion_required: true,
                });
            }
            return Err(ControllerError::Shrink {
                volume_id,
                current,
                wanted,
            }
            .into());
        }
        if wanted > current {
            let patch = json!({"spec": {"size": wanted.to_string()}});
            self.volumes(&ns)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_err("resize", "VirtualVolume", &volume_id))?;
        }
        let deadline = Instant::now() + self.config.wait_timeout;
        let mut changes = Changes::watch(&self.client, &ns, &name, self.config.poll_interval);
        loop {
            let vv = self.get_volume(&ns, &name).await?.ok_or_else(|| {
                ControllerError::DeletedWhileExpanding {
                    volume_id: volume_id.clone(),
                }
            })?;
            let reported = vv.status.as_ref().map_or(0, |s| s.size_bytes);
            if reported >= wanted {
                return Ok(ControllerExpandVolumeResponse {
                    capacity_bytes: reported as i64,
                    node_expansion_required: true,
                });
            }
            if !changes.next_before(deadline).await {
                return Err(ControllerError::NotGrown {
                    volume_id,
                    reported,
                    wanted,
                }
                .into());
            }
        }
    }
}

fn controller_capability(kind: rpc::Type) -> ControllerServiceCapability {
    ControllerServiceCapability {
        r#type: Some(controller_service_capability::Type::Rpc(
            controller_service_capability::Rpc {
                r#type: kind as i32,
            },
        )),
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    /// "This operation MUST be idempotent. If a volume corresponding to the
    /// specified volume name already exists, is accessible from
    /// accessibility_requirements, and is compatible with the specified
    /// capacity_range, volume_capabilities, parameters and
    /// mutable_parameters in the CreateVolumeRequest, the Plugin MUST reply
    /// 0 OK with the corresponding CreateVolumeResponse."
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume = req.name.clone();
        self.observer
            .observe("CreateVolume", &volume, async {
                self.create(req)
                    .await
                    .map(|v| Response::new(CreateVolumeResponse { volume: Some(v) }))
            })
            .await
    }

    /// "If a volume corresponding to the specified volume_id does not exist
    /// or the artifacts associated with the volume do not exist anymore, the
    /// Plugin MUST reply 0 OK."
    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume = req.volume_id.clone();
        self.observer
            .observe("DeleteVolume", &volume, async {
                self.delete(req)
                    .await
                    .map(|()| Response::new(DeleteVolumeResponse {}))
            })
            .await
    }

    /// The log-in (claim 13). "SP MUST ensure the CO can use the published
    /// volume as described": returns only once the primary is in the node's
    /// data center (or the nearest one with a replica), with its storage
    /// endpoint, real volume id and epoch as the publish context.
    async fn controller_publish_volume(
        &self,
        request: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume = req.volume_id.clone();
        self.observer
            .observe("ControllerPublishVolume", &volume, async {
                self.publish(req).await.map(|publish_context| {
                    Response::new(ControllerPublishVolumeResponse { publish_context })
                })
            })
            .await
    }

    /// "If the value is set, the SP MUST unpublish the volume from the
    /// specified node. If the value is unset, the SP MUST unpublish the
    /// volume from all nodes it is published to."
    async fn controller_unpublish_volume(
        &self,
        request: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume = req.volume_id.clone();
        self.observer
            .observe("ControllerUnpublishVolume", &volume, async {
                self.unpublish(req)
                    .await
                    .map(|()| Response::new(ControllerUnpublishVolumeResponse {}))
            })
            .await
    }

    /// "This call SHALL return 'confirmed' only if all the volume
    /// capabilities specified below are supported"; NOT_FOUND when the
    /// volume does not exist.
    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let req = request.into_inner();
        let volume = req.volume_id.clone();
        self.observer
            .observe("ValidateVolumeCapabilities", &volume, async {
                self.validate(req).await.map(Response::new)
            })
            .await
    }

    /// "If the actual number of entries is more than this number, the Plugin
    /// MUST set next_token"; an unknown starting_token is ABORTED.
    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let req = request.into_inner();
        self.observer
            .observe("ListVolumes", "", async {
                self.list(req).await.map(Response::new)
            })
            .await
    }

    /// Free space of the ready storage systems in the data centers that
    /// match the topology (and `dataCenters` parameter).
    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let req = request.into_inner();
        self.observer
            .observe("GetCapacity", "", async {
                self.capacity(req).await.map(Response::new)
            })
            .await
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        self.observer
            .observe("ControllerGetCapabilities", "", async {
                Ok(Response::new(ControllerGetCapabilitiesResponse {
                    capabilities: vec![
                        controller_capability(rpc::Type::CreateDeleteVolume),
                        controller_capability(rpc::Type::PublishUnpublishVolume),
                        controller_capability(rpc::Type::ListVolumes),
                        controller_capability(rpc::Type::GetCapacity),
                        controller_capability(rpc::Type::ExpandVolume),
                    ],
                }))
            })
            .await
    }

    /// Grows the VirtualVolume's size; "never shrink": a smaller size that
    /// the current one does not satisfy is OUT_OF_RANGE.
    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume = req.volume_id.clone();
        self.observer
            .observe("ControllerExpandVolume", &volume, async {
                self.expand(req).await.map(Response::new)
            })
            .await
    }
}
