//! A block target on the primary's storage system, reached over gRPC (claim
//! 12: the host's read and write request issue processes, used when the
//! primary is on another node).
//!
//! Every request carries the epoch the host logged in with. A storage system
//! that holds a newer epoch, or is no longer primary, answers
//! FAILED_PRECONDITION: the target then fails the I/O with
//! [`TargetError::StaleEpoch`] (EIO to the kernel) and never retries it
//! elsewhere on its own, so a fenced old primary can't take a write.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use roam_proto::storage::storage_client::StorageClient;
use roam_proto::storage::{FlushRequest, GetReplicaRequest, ReadRequest, WriteRequest};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::target::{BlockTarget, TargetError, check_range};

/// Largest gRPC message accepted from the storage system: a 1 MiB read and
/// its framing, with room to spare.
const MAX_MESSAGE_BYTES: usize = 8 << 20;

pub struct RemoteTarget {
    client: StorageClient<Channel>,
    volume: String,
    epoch: u64,
    size: AtomicU64,
}

impl RemoteTarget {
    /// Connects over plain HTTP/2 (`http://host:port`) and asks the storage
    /// system for the replica's size.
    pub async fn connect(endpoint: &str, volume: &str, epoch: u64) -> Result<Self, TargetError> {
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| connect_error(volume, endpoint, &e.to_string()))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| connect_error(volume, endpoint, &format!("{e:#}")))?;
        Self::over(channel, volume, epoch).await
    }

    /// Uses an existing channel (for example one set up with mTLS).
    pub async fn over(channel: Channel, volume: &str, epoch: u64) -> Result<Self, TargetError> {
        let client = StorageClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let target = Self {
            client,
            volume: volume.to_owned(),
            epoch,
            size: AtomicU64::new(0),
        };
        target.refresh_size().await?;
        Ok(target)
    }

    /// The epoch this target sends with every request.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn stale_or(&self, status: &Status, other: impl FnOnce(String) -> TargetError) -> TargetError {
        let cause = format!("{}: {}", status.code(), status.message());
        if status.code() == Code::FailedPrecondition {
            TargetError::StaleEpoch {
                volume: self.volume.clone(),
                epoch: self.epoch,
                cause,
            }
        } else {
            other(cause)
        }
    }
}

fn connect_error(volume: &str, endpoint: &str, cause: &str) -> TargetError {
    TargetError::Connect {
        volume: volume.to_owned(),
        endpoint: endpoint.to_owned(),
        cause: cause.to_owned(),
    }
}

#[async_trait]
impl BlockTarget for RemoteTarget {
    fn volume_id(&self) -> &str {
        &self.volume
    }

    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Asks the primary's storage system (GetReplica).
    async fn refresh_size(&self) -> Result<u64, TargetError> {
        let status = self
            .client
            .clone()
            .get_replica(GetReplicaRequest {
                volume_id: self.volume.clone(),
            })
            .await
            .map_err(|s| TargetError::QuerySize {
                volume: self.volume.clone(),
                cause: format!("GetReplica: {}: {}", s.code(), s.message()),
            })?
            .into_inner();
        self.size.store(status.size_bytes, Ordering::Release);
        Ok(status.size_bytes)
    }

    async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, TargetError> {
        check_range(&self.volume, "read", offset, u64::from(len), self.size())?;
        let request = ReadRequest {
            volume_id: self.volume.clone(),
            epoch: self.epoch,
            offset,
            length: len,
        };
        let reply = self.client.clone().read(request).await.map_err(|s| {
            self.stale_or(&s, |cause| TargetError::Read {
                volume: self.volume.clone(),
                offset,
                len: u64::from(len),
                cause,
            })
        })?;
        let data = reply.into_inner().data;
        if data.len() != len as usize {
            return Err(TargetError::Read {
                volume: self.volume.clone(),
                offset,
                len: u64::from(len),
                cause: format!("storage system returned {} bytes", data.len()),
            });
        }
        Ok(data)
    }

    async fn write_at(&self, offset: u64, data: Vec<u8>, fua: bool) -> Result<(), TargetError> {
        let len = data.len() as u64;
        check_range(&self.volume, "write", offset, len, self.size())?;
        let request = WriteRequest {
            volume_id: self.volume.clone(),
            epoch: self.epoch,
            offset,
            data,
            fua,
        };
        self.client.clone().write(request).await.map_err(|s| {
            self.stale_or(&s, |cause| TargetError::Write {
                volume: self.volume.clone(),
                offset,
                len,
                cause,
            })
        })?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), TargetError> {
        let request = FlushRequest {
            volume_id: self.volume.clone(),
            epoch: self.epoch,
        };
        self.client.clone().flush(request).await.map_err(|s| {
            self.stale_or(&s, |cause| TargetError::Flush {
                volume: self.volume.clone(),
                cause,
            })
        })?;
        Ok(())
    }
}
