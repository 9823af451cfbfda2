//! The engine's [`Directory`] over gRPC (`roam/directory.proto`): how a
//! storage system started with `--directory` records the in-sync set of the
//! groups it is primary of and renews its lease, through the operator.
//!
//! Every call is bounded ([`CALL_TIMEOUT`]): an answer that does not come is
//! `Unreachable`, so a write waiting for a record fails instead of going on,
//! and a lease renewal that hangs lets the lease run out.

use std::time::Duration;

use async_trait::async_trait;
use roam_engine::directory::{Directory, DirectoryError};
use roam_proto::DIRECTORY_HELD_EPOCH_KEY;
use roam_proto::directory::directory_client::DirectoryClient;
use roam_proto::directory::{RecordMemberRequest, RenewLeaseRequest};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

/// Longest wait for one directory call. Shorter than any lease the
/// directory grants, so one lost answer leaves time for another renewal.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);

pub struct GrpcDirectory {
    endpoint: String,
    client: DirectoryClient<Channel>,
}

impl GrpcDirectory {
    /// A lazily connected client of the directory at `endpoint`.
    pub fn new(endpoint: &str, tls: Option<ClientTlsConfig>) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut ep = Endpoint::from_shared(endpoint.to_owned())
            .with_context(|| format!("directory endpoint {endpoint:?}"))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true);
        if let Some(tls) = tls {
            ep = ep
                .tls_config(tls)
                .with_context(|| format!("directory endpoint {endpoint}: TLS"))?;
        }
        Ok(Self {
            endpoint: endpoint.to_owned(),
            client: DirectoryClient::new(ep.connect_lazy()),
        })
    }

    fn error(&self, volume: &str, epoch: u64, s: &Status) -> DirectoryError {
        let held = s
            .metadata()
            .get(DIRECTORY_HELD_EPOCH_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match (s.code(), held) {
            (Code::FailedPrecondition, Some(held)) => DirectoryError::Superseded {
                volume: volume.into(),
                held,
                asked: epoch,
            },
            _ => DirectoryError::Unreachable {
                volume: volume.into(),
                reason: format!("{}: {:?}: {}", self.endpoint, s.code(), s.message()),
            },
        }
    }

    async fn record(
        &self,
        volume: &str,
        epoch: u64,
        member: &str,
        in_sync: bool,
    ) -> Result<(), DirectoryError> {
        let req = RecordMemberRequest {
            volume_id: volume.into(),
            epoch,
            member: member.into(),
        };
        let mut c = self.client.clone();
        let reply = if in_sync {
            c.record_in_sync(req).await
        } else {
            c.record_out_of_sync(req).await
        };
        reply.map(|_| ()).map_err(|s| self.error(volume, epoch, &s))
    }
}

#[async_trait]
impl Directory for GrpcDirectory {
    async fn record_out_of_sync(
        &self,
        volume: &str,
        epoch: u64,
        member: &str,
    ) -> Result<(), DirectoryError> {
        self.record(volume, epoch, member, false).await
    }

    async fn record_in_sync(
        &self,
        volume: &str,
        epoch: u64,
        member: &str,
    ) -> Result<(), DirectoryError> {
        self.record(volume, epoch, member, true).await
    }

    async fn renew_lease(
        &self,
        volume: &str,
        epoch: u64,
        holder: &str,
    ) -> Result<Duration, DirectoryError> {
        let reply = self
            .client
            .clone()
            .renew_lease(RenewLeaseRequest {
                volume_id: volume.into(),
                epoch,
                holder: holder.into(),
            })
            .await
            .map_err(|s| self.error(volume, epoch, &s))?;
        Ok(Duration::from_millis(reply.into_inner().lease_millis))
    }
}
