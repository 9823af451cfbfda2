//! The CSI Node RPCs. Each one validates its request first (naming the field
//! at fault), takes the per-volume guard, and delegates to the frontend and
//! to [`super::mount`].

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use roam_engine::Role as ReplicaRole;
use roam_engine::frontend::{
    BlockExport, BlockTarget, FrontendError, FsType, LocalTarget, RemoteTarget, StagedVolume,
    TargetError, clear_dead_export,
};
use roam_proto::csi::node_server::Node;
use roam_proto::csi::node_service_capability::{self, rpc};
use roam_proto::csi::volume_capability::access_mode::Mode;
use roam_proto::csi::volume_usage::Unit;
use roam_proto::csi::*;
use roam_proto::storage::storage_client::StorageClient;
use roam_proto::storage::{GetReplicaRequest, MemberState, Role};
use tokio::runtime::Handle;
use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use super::error::NodeError;
use super::mount;
use super::params::PublishContext;
use super::staged::{self, Stack, Staged};
use crate::csi_guard::InFlight;
use crate::csi_metrics::RpcObserver;
use crate::csi_validate::{Access, absolute_path, require, required_capability};

/// Who this node is.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Kubernetes node name; the CSI node id.
    pub node_name: String,
    /// Data center (value of `topology.kubernetes.io/zone`).
    pub data_center: String,
    /// Where FUSE exports are mounted (one directory per volume).
    pub state_dir: PathBuf,
    /// This node's storage system when it runs in this process.
    pub local_storage: Option<LocalStorage>,
    /// How to reach storage systems over the network.
    pub dialer: crate::tls::Dialer,
}

/// The storage system in this process, and the endpoint it is known by in
/// publish contexts.
#[derive(Clone)]
pub struct LocalStorage {
    pub endpoint: String,
    pub registry: Arc<crate::storage::Registry>,
}

impl std::fmt::Debug for LocalStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStorage")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

pub struct NodeService {
    config: NodeConfig,
    in_flight: InFlight,
    observer: RpcObserver,
    volumes: Arc<Mutex<HashMap<String, Staged>>>,
}

type Volumes = HashMap<String, Staged>;

impl NodeService {
    pub fn new(config: NodeConfig, observer: RpcObserver) -> Self {
        Self {
            config,
            in_flight: InFlight::default(),
            observer,
            volumes: Arc::default(),
        }
    }

    fn volumes(&self) -> std::sync::MutexGuard<'_, Volumes> {
        self.volumes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// FUSE mount point of a volume: the CSI id with `/` escaped.
    fn fuse_dir(&self, volume_id: &str) -> PathBuf {
        let name: String = volume_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.config.state_dir.join("fuse").join(name)
    }

    /// Checks the frontend of every staged volume every `interval` and
    /// exports the result per volume (`roam_csi_node_frontend_healthy`), so
    /// that a broken export shows before the kubelet next asks for
    /// NodeGetVolumeStats. Runs until the process ends.
    pub async fn watch_frontends(self: Arc<Self>, interval: Duration) {
        let mut exported = BTreeSet::new();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let volumes = Arc::clone(&self.volumes);
            // Off the async threads: each check stats through a FUSE export.
            let checked = tokio::task::spawn_blocking(move || {
                let volumes = volumes.lock().unwrap_or_else(PoisonError::into_inner);
                volumes
                    .iter()
                    .filter_map(|(id, staged)| {
                        let stack = staged.stack.as_ref()?;
                        let (ns, name) = crate::controller::params::split_volume_id(id)?;
                        Some((
                            roam_crds::real_volume_id(ns, name),
                            stack.check_health().is_ok(),
                        ))
                    })
                    .collect::<Vec<_>>()
            })
            .await;
            match checked {
                Ok(checked) => exported = self.observer.frontends_checked(&checked, &exported),
                Err(e) => tracing::warn!("frontend health check task: {e}"),
            }
        }
    }

    /// Tears down every staged volume (process shutdown).
    pub fn shutdown(&self) {
        let drained: Vec<(String, Staged)> = self.volumes().drain().collect();
        for (volume, mut staged) in drained {
            if let Err(e) = staged.tear_down() {
                tracing::error!(volume, "teardown at shutdown: {e:#}");
            }
        }
    }

    #[instrument(skip_all, fields(volume = %req.volume_id))]
    async fn stage(&self, req: NodeStageVolumeRequest) -> Result<(), Status> {
        let volume_id = require("volume_id", &req.volume_id)?.to_owned();
        let staging = PathBuf::from(absolute_path(
            "staging_target_path",
            &req.staging_target_path,
        )?);
        let access = required_capability(
            "volume_capability",
            req.volume_capability.as_ref(),
            tonic::Code::FailedPrecondition,
        )?;
        let context = PublishContext::parse(&req.publish_context)?;
        let _guard = self.in_flight.try_acquire(&volume_id)?;

        let (block, fs_type, flags) = match &access {
            Access::Block => (true, FsType::Ext4, Vec::new()),
            Access::Mount {
                fs_type,
                mount_flags,
            } => {
                let from_context = req
                    .volume_context
                    .get(crate::controller::CTX_FS_TYPE)
                    .and_then(|f| FsType::parse(f));
                (
                    false,
                    fs_type.or(from_context).unwrap_or(FsType::Ext4),
                    mount_flags.clone(),
                )
            }
        };

        if let Some(existing) = self.volumes().get(&volume_id) {
            // "If this RPC failed, or the CO does not know if it failed or
            // not, it MAY choose to call NodeStageVolume again": the same
            // call is a no-op, an incompatible one is ALREADY_EXISTS.
            if existing.staging_path == staging && existing.block == block {
                return Ok(());
            }
            return Err(Status::already_exists(format!(
                "volume {volume_id} is already staged at {} ({}); refusing to stage it at {} ({})",
                existing.staging_path.display(),
                if existing.block { "block" } else { "mount" },
                staging.display(),
                if block { "block" } else { "mount" },
            )));
        }

        let target = self
            .connect(&context)
            .await
            .map_err(|source| NodeError::Connect {
                volume: context.volume_id.clone(),
                endpoint: context.storage_endpoint.clone(),
                source: Box::new(source),
            })?;
        let fuse_dir = self.fuse_dir(&volume_id);
        // What a plugin that died left of this volume's export is dead:
        // clear it first.
        self.clear_dead_export(&volume_id, "NodeStageVolume")
            .await?;
        let runtime = Handle::current();
        let staging_for_task = staging.clone();
        let volume_for_err = volume_id.clone();
        let stack = tokio::task::spawn_blocking(move || {
            if block {
                BlockExport::attach(target, runtime, &fuse_dir).map(Stack::Block)
            } else {
                let options = staged::mount_options(&fuse_dir, &staging_for_task, fs_type, &flags);
                StagedVolume::stage(target, runtime, &options).map(|s| {
                    info!(formatted = s.formatted(), "file system ready");
                    Stack::Mounted(s)
                })
            }
        })
        .await
        .map_err(|e| NodeError::Join {
            rpc: "NodeStageVolume",
            cause: e.to_string(),
        })?
        .map_err(|source| NodeError::Stage {
            volume: volume_for_err,
            path: staging.clone(),
            source: Box::new(source),
        })?;
        self.volumes().insert(
            volume_id,
            Staged {
                staging_path: staging,
                block,
                fs_type,
                context,
                targets: BTreeSet::new(),
                stack: Some(stack),
            },
        );
        Ok(())
    }

    #[instrument(skip_all, fields(volume = %req.volume_id))]
    async fn unstage(&self, req: NodeUnstageVolumeRequest) -> Result<(), Status> {
        let volume_id = require("volume_id", &req.volume_id)?.to_owned();
        let staging = PathBuf::from(absolute_path(
            "staging_target_path",
            &req.staging_target_path,
        )?);
        let _guard = self.in_flight.try_acquire(&volume_id)?;
        let taken = {
            let mut volumes = self.volumes();
            match volumes.get(&volume_id) {
                Some(s) if s.staging_path == staging => volumes.remove(&volume_id),
                _ => None,
            }
        };
        let Some(mut staged) = taken else {
            // Not staged by this process (an earlier run of it died): make
            // sure nothing is left mounted or attached.
            mount::unmount_if_mounted(&staging)?;
            return Ok(self
                .clear_dead_export(&volume_id, "NodeUnstageVolume")
                .await?);
        };
        let (staged, result) = tokio::task::spawn_blocking(move || {
            let result = staged.tear_down();
            (staged, result)
        })
        .await
        .map_err(|e| NodeError::Join {
            rpc: "NodeUnstageVolume",
            cause: e.to_string(),
        })?;
        if result.is_err() {
            // "If this RPC failed [...] the CO MAY call NodeUnstageVolume
            // again": keep what is left tracked so that the retry finishes
            // the job instead of finding nothing to tear down.
            self.volumes().insert(volume_id, staged);
        }
        Ok(result?)
    }

    #[instrument(skip_all, fields(volume = %req.volume_id))]
    async fn publish(&self, req: NodePublishVolumeRequest) -> Result<(), Status> {
        let volume_id = require("volume_id", &req.volume_id)?.to_owned();
        let target = PathBuf::from(absolute_path("target_path", &req.target_path)?);
        let staging = PathBuf::from(absolute_path(
            "staging_target_path",
            &req.staging_target_path,
        )?);
        let access = required_capability(
            "volume_capability",
            req.volume_capability.as_ref(),
            tonic::Code::FailedPrecondition,
        )?;
        let readonly = req.readonly
            || req
                .volume_capability
                .as_ref()
                .and_then(|c| c.access_mode.as_ref())
                .is_some_and(|m| m.mode == Mode::SingleNodeReaderOnly as i32);
        let _guard = self.in_flight.try_acquire(&volume_id)?;

        let (source, block) = {
            let volumes = self.volumes();
            let staged = volumes.get(&volume_id).ok_or_else(|| {
                Status::failed_precondition(format!(
                    "volume {volume_id} is not staged on node {}; call NodeStageVolume first",
                    self.config.node_name
                ))
            })?;
            if staged.staging_path != staging {
                return Err(Status::failed_precondition(format!(
                    "volume {volume_id} is staged at {}, not at staging_target_path {}",
                    staged.staging_path.display(),
                    staging.display()
                )));
            }
            if staged.block != access.is_block() {
                return Err(Status::failed_precondition(format!(
                    "volume {volume_id} was staged for {} access; volume_capability asks for {}",
                    if staged.block { "block" } else { "mount" },
                    if access.is_block() { "block" } else { "mount" },
                )));
            }
            let source = if staged.block {
                staged
                    .stack
                    .as_ref()
                    .and_then(Stack::device)
                    .ok_or_else(|| Status::internal(format!("volume {volume_id} has no device")))?
            } else {
                staged.staging_path.clone()
            };
            (source, staged.block)
        };

        // "Creation of target_path is the responsibility of the SP."
        let created = if block {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&target)
                .map(drop)
        } else {
            std::fs::create_dir_all(&target)
        };
        created.map_err(|source| NodeError::CreateTarget {
            path: target.clone(),
            source,
        })?;
        mount::bind(&source, &target, readonly)?;
        if let Some(staged) = self.volumes().get_mut(&volume_id) {
            staged.targets.insert(target);
        }
        Ok(())
    }

    #[instrument(skip_all, fields(volume = %req.volume_id))]
    async fn unpublish(&self, req: NodeUnpublishVolumeRequest) -> Result<(), Status> {
        let volume_id = require("volume_id", &req.volume_id)?.to_owned();
        let target = PathBuf::from(absolute_path("target_path", &req.target_path)?);
        let _guard = self.in_flight.try_acquire(&volume_id)?;
        mount::unmount_if_mounted(&target)?;
        // "The SP MUST delete the file or directory it created at this path."
        let removed = match std::fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir(&target),
            Ok(_) => std::fs::remove_file(&target),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        removed.map_err(|source| NodeError::RemoveTarget {
            path: target.clone(),
            source,
        })?;
        if let Some(staged) = self.volumes().get_mut(&volume_id) {
            staged.targets.remove(&target);
        }
        Ok(())
    }

    /// The staged volume whose staging or target path is `path`, with what
    /// the stats and expansion need: (block, device, mount path, fs type,
    /// publish context).
    /// The block target for a publish context. When the primary is this
    /// node's own storage system, running in this process, the frontend
    /// calls its replica directly: no gRPC, no copy through a socket. Else
    /// the primary's storage system is reached over gRPC (claim 12).
    async fn connect(&self, context: &PublishContext) -> Result<Arc<dyn BlockTarget>, TargetError> {
        if let Some(local) = &self.config.local_storage
            && local.endpoint == context.storage_endpoint
        {
            // A context naming this storage system for a replica it does not
            // hold is stale: the host must log in again.
            let volume = local.registry.get(&context.volume_id).await.map_err(|e| {
                TargetError::StaleEpoch {
                    volume: context.volume_id.clone(),
                    epoch: context.epoch,
                    cause: e.to_string(),
                }
            })?;
            if volume.role() != ReplicaRole::Primary || volume.epoch() != context.epoch {
                return Err(TargetError::StaleEpoch {
                    volume: context.volume_id.clone(),
                    epoch: context.epoch,
                    cause: format!(
                        "this node's replica is {:?} at epoch {}",
                        volume.role(),
                        volume.epoch()
                    ),
                });
            }
            return Ok(Arc::new(LocalTarget::new(volume, context.epoch)));
        }
        let unreachable = |cause: String| TargetError::Connect {
            volume: context.volume_id.clone(),
            endpoint: context.storage_endpoint.clone(),
            cause,
        };
        let channel = self
            .config
            .dialer
            .endpoint(&context.storage_endpoint)
            .map_err(|e| unreachable(format!("{e:#}")))?
            .connect()
            .await
            .map_err(|e| unreachable(format!("{e:#}")))?;
        let remote = RemoteTarget::over(channel, &context.volume_id, context.epoch).await?;
        Ok(Arc::new(remote))
    }

    fn lookup(
        &self,
        volume_id: &str,
        path: &Path,
    ) -> Result<(bool, Option<PathBuf>, PathBuf, FsType, PublishContext), Status> {
        let volumes = self.volumes();
        let staged = volumes.get(volume_id).ok_or_else(|| {
            Status::not_found(format!(
                "volume {volume_id} is not staged on node {}",
                self.config.node_name
            ))
        })?;
        if staged.staging_path != path && !staged.targets.contains(path) {
            return Err(Status::not_found(format!(
                "volume {volume_id} is neither staged nor published at {}",
                path.display()
            )));
        }
        Ok((
            staged.block,
            staged.stack.as_ref().and_then(Stack::device),
            staged.staging_path.clone(),
            staged.fs_type,
            staged.context.clone(),
        ))
    }

    /// Clears what an earlier run of this plugin left of a volume's export
    /// (a loop device, dead FUSE mounts), off the async threads.
    async fn clear_dead_export(&self, volume_id: &str, rpc: &'static str) -> Result<(), NodeError> {
        let fuse_dir = self.fuse_dir(volume_id);
        tokio::task::spawn_blocking(move || clear_dead_export(&fuse_dir))
            .await
            .map_err(|e| NodeError::Join {
                rpc,
                cause: e.to_string(),
            })?
            .map_err(|source| NodeError::Unstage {
                volume: volume_id.to_owned(),
                source: Box::new(source),
            })
    }

    /// The staged stack's health check, off the async threads (it stats
    /// through the FUSE export): None when it carries I/O.
    async fn frontend_broken(&self, volume_id: &str) -> Option<FrontendError> {
        let volumes = Arc::clone(&self.volumes);
        let volume = volume_id.to_owned();
        tokio::task::spawn_blocking(move || {
            let volumes = volumes.lock().unwrap_or_else(PoisonError::into_inner);
            volumes
                .get(&volume)
                .and_then(|staged| staged.stack.as_ref())
                .and_then(|stack| stack.check_health().err())
        })
        .await
        .unwrap_or_else(|e| {
            Some(FrontendError::ExportBroken {
                volume: volume_id.to_owned(),
                cause: format!("health check task: {e}"),
            })
        })
    }

    #[instrument(skip_all, fields(volume = %req.volume_id))]
    async fn stats(
        &self,
        req: NodeGetVolumeStatsRequest,
    ) -> Result<NodeGetVolumeStatsResponse, Status> {
        let volume_id = require("volume_id", &req.volume_id)?.to_owned();
        let path = PathBuf::from(require("volume_path", &req.volume_path)?);
        let (block, device, _, _, context) = match self.lookup(&volume_id, &path) {
            Ok(found) => found,
            Err(not_staged) => {
                // Not staged by this process at all, yet its export is
                // mounted: an earlier run of this plugin staged it, and the
                // export died with that process. (Staged here but asked at
                // another path stays NOT_FOUND.)
                let ours = self.volumes().contains_key(&volume_id);
                if !ours && mount::is_mount_point(&self.fuse_dir(&volume_id)).unwrap_or(false) {
                    return Ok(NodeGetVolumeStatsResponse {
                        usage: Vec::new(),
                        volume_condition: Some(VolumeCondition {
                            abnormal: true,
                            message: format!(
                                "volume {volume_id} was staged by an earlier run of the node \
                                 plugin on {}, and its export ended with it; restart the pod \
                                 to stage the volume again",
                                self.config.node_name
                            ),
                        }),
                    });
                }
                return Err(not_staged);
            }
        };
        if let Some(broken) = self.frontend_broken(&volume_id).await {
            // The filesystem (or the device) can't be asked for its usage
            // any more: say why, and nothing else.
            return Ok(NodeGetVolumeStatsResponse {
                usage: Vec::new(),
                volume_condition: Some(VolumeCondition {
                    abnormal: true,
                    message: format!("{broken:#}; restart the pod to stage the volume again"),
                }),
            });
        }
        let usage = if block {
            let device = device.ok_or_else(|| Status::internal("no device"))?;
            let size = mount::device_size(&device)? as i64;
            vec![VolumeUsage {
                total: size,
                unit: Unit::Bytes as i32,
                ..Default::default()
            }]
        } else {
            let u = mount::fs_usage(&path)?;
            vec![
                VolumeUsage {
                    available: u.bytes_available as i64,
                    total: u.bytes_total as i64,
                    used: u.bytes_used as i64,
                    unit: Unit::Bytes as i32,
                },
                VolumeUsage {
                    available: u.inodes_free as i64,
                    total: u.inodes_total as i64,
                    used: u.inodes_used as i64,
                    unit: Unit::Inodes as i32,
                },
            ]
        };
        Ok(NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(volume_condition(&context, &self.config.dialer).await),
        })
    }

    #[instrument(skip_all, fields(volume = %req.volume_id))]
    async fn expand(&self, req: NodeExpandVolumeRequest) -> Result<i64, Status> {
        let volume_id = require("volume_id", &req.volume_id)?.to_owned();
        let path = PathBuf::from(require("volume_path", &req.volume_path)?);
        let _guard = self.in_flight.try_acquire(&volume_id)?;
        let (block, _, staging, fs_type, _) = self.lookup(&volume_id, &path)?;
        // The guard keeps every other call on this volume out, so the stack
        // can leave the table while it grows (the table's lock is not held
        // across the wait for the storage system).
        let stack = self
            .volumes()
            .get_mut(&volume_id)
            .and_then(|staged| staged.stack.take())
            .ok_or_else(|| Status::internal(format!("volume {volume_id} has no export stack")))?;
        let grown = stack.grow().await;
        let device = stack.device();
        if let Some(staged) = self.volumes().get_mut(&volume_id) {
            staged.stack = Some(stack);
        }
        let size = grown.map_err(|source| NodeError::Expand {
            volume: volume_id.clone(),
            source: Box::new(source),
        })?;
        if !block {
            let device = device.ok_or_else(|| Status::internal("no device"))?;
            tokio::task::spawn_blocking(move || {
                mount::grow_filesystem(&device, &staging, fs_type.name())
            })
            .await
            .map_err(|e| NodeError::Join {
                rpc: "NodeExpandVolume",
                cause: e.to_string(),
            })??;
        }
        if let Some(range) = &req.capacity_range
            && range.required_bytes > 0
            && (size as i64) < range.required_bytes
        {
            return Err(Status::out_of_range(format!(
                "volume {volume_id} is {size} bytes after growing; capacity_range.required_bytes \
                 asks for {} (was ControllerExpandVolume called?)",
                range.required_bytes
            )));
        }
        Ok(size as i64)
    }
}

/// Condition of a staged volume as its primary's storage system reports it:
/// abnormal while the primary is unreachable, fenced, no longer primary, or
/// a secondary is not in sync.
async fn volume_condition(
    context: &PublishContext,
    dialer: &crate::tls::Dialer,
) -> VolumeCondition {
    let abnormal = |message: String| VolumeCondition {
        abnormal: true,
        message,
    };
    let endpoint = match dialer.endpoint(&context.storage_endpoint) {
        Ok(e) => e
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(2)),
        Err(e) => return abnormal(format!("bad storage endpoint: {e:#}")),
    };
    let replica = async {
        let mut client = StorageClient::connect(endpoint)
            .await
            .map_err(|e| e.to_string())?;
        client
            .get_replica(GetReplicaRequest {
                volume_id: context.volume_id.clone(),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| {
                format!(
                    "{}: {}",
                    crate::csi_metrics::code_name(s.code()),
                    s.message()
                )
            })
    };
    let replica = match replica.await {
        Ok(r) => r,
        Err(e) => {
            return abnormal(format!(
                "primary storage system {} unreachable: {e}",
                context.storage_endpoint
            ));
        }
    };
    if replica.role != Role::Primary as i32 || replica.epoch != context.epoch {
        return abnormal(format!(
            "the primary moved: {} holds epoch {} as {:?}, logged in at epoch {}",
            context.storage_endpoint,
            replica.epoch,
            Role::try_from(replica.role).unwrap_or(Role::Unspecified),
            context.epoch
        ));
    }
    if replica.fenced {
        return abnormal("the primary is fenced (change of primary in progress)".into());
    }
    let behind: Vec<String> = replica
        .members
        .iter()
        .filter(|m| m.state != MemberState::InSync as i32)
        .map(|m| {
            format!(
                "{} {:?} (lag {} bytes)",
                m.data_center,
                MemberState::try_from(m.state).unwrap_or(MemberState::Unspecified),
                m.lag_bytes
            )
        })
        .collect();
    if !behind.is_empty() {
        return abnormal(format!("group degraded: {}", behind.join(", ")));
    }
    VolumeCondition {
        abnormal: false,
        message: format!(
            "primary in {} at epoch {}, {} secondaries in sync",
            context.data_center,
            replica.epoch,
            replica.members.len()
        ),
    }
}

fn node_capability(kind: rpc::Type) -> NodeServiceCapability {
    NodeServiceCapability {
        r#type: Some(node_service_capability::Type::Rpc(
            node_service_capability::Rpc {
                r#type: kind as i32,
            },
        )),
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    /// "This RPC is called by the CO prior to the volume being consumed by
    /// any workloads on the node by NodePublishVolume"; it MUST be
    /// idempotent, and a volume already staged at the same path with the same
    /// capability MUST succeed.
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume = req.volume_id.clone();
        self.observer
            .observe("NodeStageVolume", &volume, async {
                self.stage(req)
                    .await
                    .map(|()| Response::new(NodeStageVolumeResponse {}))
            })
            .await
    }

    /// "This RPC MUST undo the work by the corresponding NodeStageVolume";
    /// unstaging a volume that is not staged succeeds.
    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume = req.volume_id.clone();
        self.observer
            .observe("NodeUnstageVolume", &volume, async {
                self.unstage(req)
                    .await
                    .map(|()| Response::new(NodeUnstageVolumeResponse {}))
            })
            .await
    }

    /// "The SP SHALL place the block device at target_path" (block) or "the
    /// mounted directory at target_path" (mount); "Indicates SP MUST publish
    /// the volume in readonly mode" when `readonly` is set.
    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume = req.volume_id.clone();
        self.observer
            .observe("NodePublishVolume", &volume, async {
                self.publish(req)
                    .await
                    .map(|()| Response::new(NodePublishVolumeResponse {}))
            })
            .await
    }

    /// "The SP MUST delete the file or directory it created at this path";
    /// a target that is already gone succeeds.
    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume = req.volume_id.clone();
        self.observer
            .observe("NodeUnpublishVolume", &volume, async {
                self.unpublish(req)
                    .await
                    .map(|()| Response::new(NodeUnpublishVolumeResponse {}))
            })
            .await
    }

    /// Usage through statvfs (bytes and inodes; the device size in block
    /// mode). "This field MUST be specified if the VOLUME_CONDITION node
    /// capability is supported": the condition is abnormal while the group
    /// is degraded or the primary moved.
    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let req = request.into_inner();
        let volume = req.volume_id.clone();
        self.observer
            .observe("NodeGetVolumeStats", &volume, async {
                self.stats(req).await.map(Response::new)
            })
            .await
    }

    /// Grows the loop device and the file system (resize2fs, xfs_growfs).
    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        let volume = req.volume_id.clone();
        self.observer
            .observe("NodeExpandVolume", &volume, async {
                self.expand(req).await.map(|capacity_bytes| {
                    Response::new(NodeExpandVolumeResponse { capacity_bytes })
                })
            })
            .await
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        self.observer
            .observe("NodeGetCapabilities", "", async {
                Ok(Response::new(NodeGetCapabilitiesResponse {
                    capabilities: vec![
                        node_capability(rpc::Type::StageUnstageVolume),
                        node_capability(rpc::Type::GetVolumeStats),
                        node_capability(rpc::Type::ExpandVolume),
                        node_capability(rpc::Type::VolumeCondition),
                    ],
                }))
            })
            .await
    }

    /// "The CO SHALL set this field to match the node ID returned by
    /// NodeGetInfo": the Kubernetes node name, with the node's data center
    /// as its `topology.kubernetes.io/zone`.
    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        self.observer
            .observe("NodeGetInfo", "", async {
                Ok(Response::new(NodeGetInfoResponse {
                    node_id: self.config.node_name.clone(),
                    max_volumes_per_node: 0,
                    accessible_topology: Some(Topology {
                        segments: HashMap::from([(
                            roam_crds::ZONE_LABEL.to_owned(),
                            self.config.data_center.clone(),
                        )]),
                    }),
                }))
            })
            .await
    }
}
