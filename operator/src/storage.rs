//! The operator's client of the storage system API (storage.proto): one
//! cached channel per endpoint, a deadline on every call, and sorts failures into "unreachable" (the
//! storage system did not answer) and "refused" (it answered with an error),
//! which the plans treat differently.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex, OnceLock},
    time::Duration,
};

use roam_proto::storage::{
    ConfigureGroupRequest, CreateReplicaRequest, DeleteReplicaRequest, ExpandReplicaRequest,
    GetInfoRequest, GetReplicaRequest, GroupSpec, PromoteRequest, ReplicaStatus, StorageInfo,
    TransferPrimaryRequest, storage_client::StorageClient,
};
use roam_proto::tls::Dialer;
use tonic::transport::Channel;

use crate::error::StorageError;

/// Time allowed to connect to a storage system.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for a quick call (GetInfo, GetReplica, Create, Configure, Delete).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a change of primary (drains an Async backlog).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);

/// One lazily connected channel per endpoint, shared by every reconcile
/// (tonic reconnects it when the storage system comes back).
static CHANNELS: LazyLock<Mutex<HashMap<String, Channel>>> = LazyLock::new(Default::default);

/// How storage systems are dialed (mutual TLS or plaintext), set once at
/// start-up; plaintext until then.
static DIALER: OnceLock<Dialer> = OnceLock::new();

/// Sets how every later call dials storage systems. Call it once, before
/// the first call; a second call changes nothing.
pub fn dial_with(dialer: Dialer) {
    let _ = DIALER.set(dialer);
}

fn connect_cached(endpoint: &str) -> Result<StorageClient<Channel>, StorageError> {
    let mut channels = CHANNELS.lock().map_err(|_| StorageError::Unreachable {
        endpoint: endpoint.into(),
        reason: "channel cache poisoned".into(),
    })?;
    if let Some(c) = channels.get(endpoint) {
        return Ok(StorageClient::new(c.clone()));
    }
    let channel = DIALER
        .get_or_init(Dialer::default)
        .endpoint(endpoint)
        .map_err(|e| StorageError::BadEndpoint {
            endpoint: endpoint.into(),
            reason: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_lazy();
    channels.insert(endpoint.to_string(), channel.clone());
    Ok(StorageClient::new(channel))
}

async fn connect(endpoint: &str) -> Result<StorageClient<Channel>, StorageError> {
    connect_cached(endpoint)
}

/// Run one call with a deadline; a call that does not finish in time counts
/// as the storage system being unreachable.
async fn within<T>(
    endpoint: &str,
    timeout: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r.map(|r| r.into_inner()),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer from {endpoint} within {timeout:?}"
        ))),
    }
}

fn classify(endpoint: &str, op: &'static str, status: tonic::Status) -> StorageError {
    use tonic::Code;
    let code = status.code();
    let unreachable = matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
    ) || (code == Code::Unknown && status.message().contains("transport"));
    if unreachable {
        return StorageError::Unreachable {
            endpoint: endpoint.into(),
            reason: status.message().into(),
        };
    }
    if code == Code::NotFound {
        return StorageError::NotFound {
            endpoint: endpoint.into(),
            op,
        };
    }
    StorageError::Refused {
        endpoint: endpoint.into(),
        op,
        code: format!("{code:?}"),
        message: status.message().into(),
    }
}

/// GetInfo.
pub async fn get_info(endpoint: &str) -> Result<StorageInfo, StorageError> {
    let mut c = connect(endpoint).await?;
    within(endpoint, CALL_TIMEOUT, c.get_info(GetInfoRequest {}))
        .await
        .map_err(|s| classify(endpoint, "GetInfo", s))
}

/// GetReplica; `Ok(None)` when the storage system holds no such replica.
pub async fn get_replica(
    endpoint: &str,
    volume_id: &str,
) -> Result<Option<ReplicaStatus>, StorageError> {
    let mut c = connect(endpoint).await?;
    let req = GetReplicaRequest {
        volume_id: volume_id.into(),
    };
    match within(endpoint, CALL_TIMEOUT, c.get_replica(req)).await {
        Ok(r) => Ok(Some(r)),
        Err(s) => match classify(endpoint, "GetReplica", s) {
            StorageError::NotFound { .. } => Ok(None),
            e => Err(e),
        },
    }
}

/// CreateReplica (idempotent by volume id).
pub async fn create_replica(
    endpoint: &str,
    volume_id: &str,
    size_bytes: u64,
) -> Result<ReplicaStatus, StorageError> {
    let mut c = connect(endpoint).await?;
    let req = CreateReplicaRequest {
        volume_id: volume_id.into(),
        size_bytes,
    };
    within(endpoint, CALL_TIMEOUT, c.create_replica(req))
        .await
        .map_err(|s| classify(endpoint, "CreateReplica", s))
}

/// ExpandReplica.
pub async fn expand_replica(
    endpoint: &str,
    volume_id: &str,
    size_bytes: u64,
) -> Result<ReplicaStatus, StorageError> {
    let mut c = connect(endpoint).await?;
    let req = ExpandReplicaRequest {
        volume_id: volume_id.into(),
        size_bytes,
    };
    within(endpoint, CALL_TIMEOUT, c.expand_replica(req))
        .await
        .map_err(|s| classify(endpoint, "ExpandReplica", s))
}

/// DeleteReplica (deleting a missing one succeeds).
pub async fn delete_replica(endpoint: &str, volume_id: &str) -> Result<(), StorageError> {
    let mut c = connect(endpoint).await?;
    let req = DeleteReplicaRequest {
        volume_id: volume_id.into(),
    };
    match within(endpoint, CALL_TIMEOUT, c.delete_replica(req)).await {
        Ok(_) => Ok(()),
        Err(s) => match classify(endpoint, "DeleteReplica", s) {
            StorageError::NotFound { .. } => Ok(()),
            e => Err(e),
        },
    }
}

/// ConfigureGroup.
pub async fn configure_group(
    endpoint: &str,
    volume_id: &str,
    group: GroupSpec,
) -> Result<ReplicaStatus, StorageError> {
    let mut c = connect(endpoint).await?;
    let req = ConfigureGroupRequest {
        volume_id: volume_id.into(),
        group: Some(group),
    };
    within(endpoint, CALL_TIMEOUT, c.configure_group(req))
        .await
        .map_err(|s| classify(endpoint, "ConfigureGroup", s))
}

/// TransferPrimary, sent to the current primary.
pub async fn transfer_primary(
    endpoint: &str,
    volume_id: &str,
    target: &str,
    new_epoch: u64,
) -> Result<ReplicaStatus, StorageError> {
    let mut c = connect(endpoint).await?;
    let req = TransferPrimaryRequest {
        volume_id: volume_id.into(),
        target: target.into(),
        new_epoch,
    };
    within(endpoint, TRANSFER_TIMEOUT, c.transfer_primary(req))
        .await
        .map_err(|s| classify(endpoint, "TransferPrimary", s))
}

/// Promote, sent to a secondary when the primary is gone.
pub async fn promote(
    endpoint: &str,
    volume_id: &str,
    new_epoch: u64,
) -> Result<ReplicaStatus, StorageError> {
    let mut c = connect(endpoint).await?;
    let req = PromoteRequest {
        volume_id: volume_id.into(),
        new_epoch,
    };
    within(endpoint, CALL_TIMEOUT, c.promote(req))
        .await
        .map_err(|s| classify(endpoint, "Promote", s))
}
