//! The engine's [`Transport`] over gRPC: one HTTP/2 channel per peer endpoint
//! (kept and reused), one bidirectional `Replication.Stream` per link, so a
//! sender keeps many batches in flight on one connection.
//!
//! Pipeline of a link: engine requests -> bounded channel -> gRPC request
//! stream; gRPC reply stream -> task -> bounded channel -> engine. A refusal
//! from the peer arrives as the stream's status; its class travels in the
//! `roam-refusal` metadata.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use roam_engine::transport::{PeerLink, PeerReply, PeerRequest, Transport};
use roam_engine::{RefusalCode, TransportError};
use roam_proto::replication::replication_client::ReplicationClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use super::convert::{reply_from_proto, request_to_proto};
use super::error::REFUSAL_KEY;

pub struct GrpcTransport {
    tls: Option<ClientTlsConfig>,
    max_message_bytes: usize,
    channels: Mutex<HashMap<String, Channel>>,
}

impl GrpcTransport {
    pub fn new(tls: Option<ClientTlsConfig>, max_message_bytes: usize) -> Self {
        Self {
            tls,
            max_message_bytes,
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn channel(&self, endpoint: &str) -> Result<Channel, TransportError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(endpoint) {
            return Ok(c.clone());
        }
        let connect_err = |reason: String| TransportError::Connect {
            endpoint: endpoint.into(),
            reason,
        };
        let mut ep = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| connect_err(e.to_string()))?
            .connect_timeout(Duration::from_secs(3))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            ep = ep
                .tls_config(tls.clone())
                .map_err(|e| connect_err(e.to_string()))?;
        }
        let channel = ep.connect_lazy();
        channels.insert(endpoint.to_string(), channel.clone());
        Ok(channel)
    }

    fn client(&self, endpoint: &str) -> Result<ReplicationClient<Channel>, TransportError> {
        Ok(ReplicationClient::new(self.channel(endpoint)?)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }
}

/// Map a peer's status to the engine's transport error.
pub fn status_to_error(endpoint: &str, s: &Status) -> TransportError {
    let refusal = s
        .metadata()
        .get(REFUSAL_KEY)
        .and_then(|v| v.to_str().ok())
        .map(RefusalCode::from_name);
    match (refusal, s.code()) {
        (Some(code), _) => TransportError::Refused {
            endpoint: endpoint.into(),
            code,
            message: s.message().into(),
        },
        (None, Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded) => {
            TransportError::Connect {
                endpoint: endpoint.into(),
                reason: s.message().into(),
            }
        }
        (None, Code::NotFound) => TransportError::Refused {
            endpoint: endpoint.into(),
            code: RefusalCode::NotFound,
            message: s.message().into(),
        },
        // An answer without a refusal class (not from a Roam engine): what
        // the peer did is unknown.
        (None, _) => TransportError::Refused {
            endpoint: endpoint.into(),
            code: RefusalCode::Internal,
            message: s.message().into(),
        },
    }
}

#[async_trait]
impl Transport for GrpcTransport {
    async fn open(&self, endpoint: &str) -> Result<PeerLink, TransportError> {
        let mut client = self.client(endpoint)?;
        let (tx, req_rx) = mpsc::channel::<PeerRequest>(64);
        let outbound = ReceiverStream::new(req_rx).map(request_to_proto);
        let mut inbound = client
            .stream(outbound)
            .await
            .map_err(|s| status_to_error(endpoint, &s))?
            .into_inner();
        let (reply_tx, rx) = mpsc::channel(64);
        let endpoint = endpoint.to_string();
        tokio::spawn(async move {
            loop {
                let item = match inbound.message().await {
                    Ok(Some(reply)) => {
                        reply_from_proto(reply).map_err(|e| TransportError::Refused {
                            endpoint: endpoint.clone(),
                            code: RefusalCode::Invalid,
                            message: e.to_string(),
                        })
                    }
                    Ok(None) => Err(TransportError::StreamClosed {
                        endpoint: endpoint.clone(),
                    }),
                    Err(s) => Err(status_to_error(&endpoint, &s)),
                };
                let end = item.is_err();
                if reply_tx.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(PeerLink { tx, rx })
    }

    async fn call(&self, endpoint: &str, req: PeerRequest) -> Result<PeerReply, TransportError> {
        let mut client = self.client(endpoint)?;
        let reply = client
            .call(request_to_proto(req))
            .await
            .map_err(|s| status_to_error(endpoint, &s))?;
        reply_from_proto(reply.into_inner()).map_err(|e| TransportError::Refused {
            endpoint: endpoint.into(),
            code: RefusalCode::Invalid,
            message: e.to_string(),
        })
    }
}
