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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refusal_with_the_held_epoch_is_superseded_anything_else_unreachable() {
        let d = GrpcDirectory::new("http://127.0.0.1:9", None).expect("client");
        let mut s = Status::failed_precondition("newer epoch");
        s.metadata_mut()
            .insert(DIRECTORY_HELD_EPOCH_KEY, "7".parse().expect("metadata"));
        assert!(matches!(
            d.error("v", 5, &s),
            DirectoryError::Superseded {
                held: 7,
                asked: 5,
                ..
            }
        ));
        // Without the held epoch, or with any other code, nothing may be
        // assumed recorded: the caller must not go on.
        for s in [
            Status::failed_precondition("no epoch said"),
            Status::unavailable("down"),
            Status::deadline_exceeded("slow"),
        ] {
            assert!(matches!(
                d.error("v", 5, &s),
                DirectoryError::Unreachable { .. }
            ));
        }
    }

    #[tokio::test]
    async fn a_directory_that_does_not_answer_is_unreachable_within_the_call_bound() {
        // Accepts connections and never answers, as a partitioned peer's
        // half-open connection would.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let d = GrpcDirectory::new(&format!("http://{addr}"), None).expect("client");
        let started = std::time::Instant::now();
        let renewed = d.renew_lease("v", 1, "dc-a").await;
        assert!(
            matches!(renewed, Err(DirectoryError::Unreachable { .. })),
            "{renewed:?}"
        );
        let recorded = d.record_out_of_sync("v", 1, "dc-b").await;
        assert!(
            matches!(recorded, Err(DirectoryError::Unreachable { .. })),
            "{recorded:?}"
        );
        // Each call gives up at CALL_TIMEOUT (connecting is bounded too).
        assert!(
            started.elapsed() < CALL_TIMEOUT * 5,
            "two calls took {:?}",
            started.elapsed()
        );
        silent.abort();
    }
}
