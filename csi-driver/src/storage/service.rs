//! The storage system API (storage.proto) over the engine. Each handler
//! validates its request, finds the replica and delegates; engine errors map
//! to status codes in one place ([`super::error`]).
//!
//! What a caller of Write and Flush relies on (a Sync group):
//! - a Write or Flush completes only once every member of the in-sync set
//!   holds it (`MemberStatus.in_sync`), whether that member streams, is being
//!   copied to, or has not been heard from since this primary restarted;
//!   under Block a member never leaves the set, so with one unreachable
//!   Writes and Flushes fail with DEADLINE_EXCEEDED after the ack timeout;
//!   under Degrade it leaves the set (durably recorded first) after the ack
//!   timeout, and the Write completes;
//! - UNAVAILABLE with refusal `unavailable`: the replica failed a write or
//!   sync of its files (reopen the storage system to replay its journal), or
//!   its lease ran out; nothing is acknowledged until then;
//! - TransferPrimary fails with FAILED_PRECONDITION while any member of the
//!   in-sync set lacks a write, or when the target is not in the set; the old
//!   primary takes writes again unless the outcome is unknown (UNAVAILABLE).

use std::sync::Arc;

use bytes::Bytes;
use roam_proto::storage::storage_server::Storage;
use roam_proto::storage::*;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::{group_from_proto, snapshot_to_proto, status_to_proto};
use super::error::StorageError;
use super::registry::{Registry, validate_volume_id};

pub struct StorageService {
    pub registry: Arc<Registry>,
}

fn engine(e: roam_engine::EngineError) -> Status {
    Status::from(StorageError::from(e))
}

fn capacity(path: &std::path::Path) -> (u64, u64) {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let frag = s.fragment_size();
            (s.blocks() * frag, s.blocks_available() * frag)
        }
        Err(_) => (0, 0),
    }
}

#[tonic::async_trait]
impl Storage for StorageService {
    async fn get_info(
        &self,
        _req: Request<GetInfoRequest>,
    ) -> Result<Response<StorageInfo>, Status> {
        let r = &self.registry;
        let (capacity_bytes, free_bytes) = capacity(&r.root);
        Ok(Response::new(StorageInfo {
            data_center: r.data_center.clone(),
            node: r.node.clone(),
            endpoint: r.endpoint.clone(),
            capacity_bytes,
            free_bytes,
            ready: true,
        }))
    }

    #[instrument(skip_all, fields(volume = %req.get_ref().volume_id, size = req.get_ref().size_bytes))]
    async fn create_replica(
        &self,
        req: Request<CreateReplicaRequest>,
    ) -> Result<Response<ReplicaStatus>, Status> {
        let req = req.into_inner();
        let vol = self.registry.create(&req.volume_id, req.size_bytes).await?;
        Ok(Response::new(status_to_proto(&vol.status())))
    }

    #[instrument(skip_all, fields(volume = %req.get_ref().volume_id))]
    async fn delete_replica(
        &self,
        req: Request<DeleteReplicaRequest>,
    ) -> Result<Response<DeleteReplicaResponse>, Status> {
        self.registry.delete(&req.into_inner().volume_id).await?;
        Ok(Response::new(DeleteReplicaResponse {}))
    }

    #[instrument(skip_all, fields(volume = %req.get_ref().volume_id, size = req.get_ref().size_bytes))]
    async fn expand_replica(
        &self,
        req: Request<ExpandReplicaRequest>,
    ) -> Result<Response<ReplicaStatus>, Status> {
        let req = req.into_inner();
        let vol = self.registry.get(&req.volume_id).await?;
        vol.expand(req.size_bytes).await.map_err(engine)?;
        Ok(Response::new(status_to_proto(&vol.status())))
    }

    async fn get_replica(
        &self,
        req: Request<GetReplicaRequest>,
    ) -> Result<Response<ReplicaStatus>, Status> {
        let vol = self.registry.get(&req.into_inner().volume_id).await?;
        Ok(Response::new(status_to_proto(&vol.status())))
    }

    async fn list_replicas(
        &self,
        _req: Request<ListReplicasRequest>,
    ) -> Result<Response<ListReplicasResponse>, Status> {
        let replicas = self
            .registry
            .list()
            .await
            .iter()
            .map(|v| status_to_proto(&v.status()))
            .collect();
        Ok(Response::new(ListReplicasResponse { replicas }))
    }

    #[instrument(skip_all, fields(volume = %req.get_ref().volume_id))]
    async fn configure_group(
        &self,
        req: Request<ConfigureGroupRequest>,
    ) -> Result<Response<ReplicaStatus>, Status> {
        let req = req.into_inner();
        validate_volume_id(&req.volume_id)?;
        let Some(group) = req.group else {
            return Err(StorageError::InvalidField {
                field: "group",
                reason: "missing".into(),
            }
            .into());
        };
        let group = group_from_proto(&group)?;
        let vol = self.registry.get(&req.volume_id).await?;
        vol.configure(group).await.map_err(engine)?;
        Ok(Response::new(status_to_proto(&vol.status())))
    }

    #[instrument(skip_all, fields(volume = %req.get_ref().volume_id, target = %req.get_ref().target, new_epoch = req.get_ref().new_epoch))]
    async fn transfer_primary(
        &self,
        req: Request<TransferPrimaryRequest>,
    ) -> Result<Response<ReplicaStatus>, Status> {
        let req = req.into_inner();
        if req.target.is_empty() {
            return Err(StorageError::InvalidField {
                field: "target",
                reason: "empty".into(),
            }
            .into());
        }
        let vol = self.registry.get(&req.volume_id).await?;
        vol.transfer_primary(&req.target, req.new_epoch)
            .await
            .map_err(engine)?;
        Ok(Response::new(status_to_proto(&vol.status())))
    }

    #[instrument(skip_all, fields(volume = %req.get_ref().volume_id, new_epoch = req.get_ref().new_epoch))]
    async fn promote(
        &self,
        req: Request<PromoteRequest>,
    ) -> Result<Response<ReplicaStatus>, Status> {
        let req = req.into_inner();
        let vol = self.registry.get(&req.volume_id).await?;
        vol.promote(req.new_epoch).await.map_err(engine)?;
        Ok(Response::new(status_to_proto(&vol.status())))
    }

    async fn read(&self, req: Request<ReadRequest>) -> Result<Response<ReadResponse>, Status> {
        let req = req.into_inner();
        let vol = self.registry.get(&req.volume_id).await?;
        let data = vol
            .read_at_epoch(req.epoch, req.offset, u64::from(req.length))
            .await
            .map_err(engine)?;
        Ok(Response::new(ReadResponse {
            data: data.to_vec(),
        }))
    }

    async fn write(&self, req: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        let req = req.into_inner();
        let vol = self.registry.get(&req.volume_id).await?;
        let seq = vol
            .write_at_epoch(Some(req.epoch), req.offset, Bytes::from(req.data), req.fua)
            .await
            .map_err(engine)?;
        Ok(Response::new(WriteResponse { seq }))
    }

    async fn flush(&self, req: Request<FlushRequest>) -> Result<Response<FlushResponse>, Status> {
        let req = req.into_inner();
        let vol = self.registry.get(&req.volume_id).await?;
        let durable_seq = vol.flush_at_epoch(Some(req.epoch)).await.map_err(engine)?;
        Ok(Response::new(FlushResponse { durable_seq }))
    }

    async fn read_replica(
        &self,
        req: Request<ReadRequest>,
    ) -> Result<Response<ReadResponse>, Status> {
        let req = req.into_inner();
        let vol = self.registry.get(&req.volume_id).await?;
        let data = vol
            .read(req.offset, u64::from(req.length))
            .await
            .map_err(engine)?;
        Ok(Response::new(ReadResponse {
            data: data.to_vec(),
        }))
    }

    #[instrument(skip_all, fields(volume = %req.get_ref().volume_id, snapshot = %req.get_ref().name))]
    async fn create_snapshot(
        &self,
        req: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let req = req.into_inner();
        let vol = self.registry.get(&req.volume_id).await?;
        let taken = vol.create_snapshot(&req.name).await.map_err(engine)?;
        Ok(Response::new(CreateSnapshotResponse {
            snapshot: Some(snapshot_to_proto(&taken.info)),
            repeat: taken.repeat,
            members: taken.members,
            missing: taken
                .missing
                .into_iter()
                .map(|(data_center, reason)| SnapshotMissing {
                    data_center,
                    reason,
                })
                .collect(),
        }))
    }

    #[instrument(skip_all, fields(volume = %req.get_ref().volume_id, snapshot = %req.get_ref().name))]
    async fn delete_snapshot(
        &self,
        req: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let req = req.into_inner();
        // No replica here: nothing of it is held, so nothing to delete.
        let vol = match self.registry.get(&req.volume_id).await {
            Ok(vol) => vol,
            Err(StorageError::ReplicaNotFound { .. }) => {
                return Ok(Response::new(DeleteSnapshotResponse { deleted: false }));
            }
            Err(e) => return Err(e.into()),
        };
        let deleted = vol.delete_snapshot(&req.name).await.map_err(engine)?;
        Ok(Response::new(DeleteSnapshotResponse { deleted }))
    }

    async fn list_snapshots(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let req = req.into_inner();
        let vol = self.registry.get(&req.volume_id).await?;
        Ok(Response::new(ListSnapshotsResponse {
            snapshots: vol.snapshots().iter().map(snapshot_to_proto).collect(),
        }))
    }

    async fn read_snapshot(
        &self,
        req: Request<ReadSnapshotRequest>,
    ) -> Result<Response<ReadResponse>, Status> {
        let req = req.into_inner();
        let vol = self.registry.get(&req.volume_id).await?;
        let data = vol
            .read_snapshot(&req.name, req.offset, req.length)
            .await
            .map_err(engine)?;
        Ok(Response::new(ReadResponse {
            data: data.to_vec(),
        }))
    }
}
