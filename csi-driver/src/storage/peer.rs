//! The replication service (replication.proto): the receiving side of every
//! link. Requests of one stream are checked and applied in order by the engine
//! ([`roam_engine::Volume::begin_peer`]); their durability waits run
//! concurrently, and replies go back in order. The first refusal ends the
//! stream with its status.

use std::pin::Pin;
use std::sync::Arc;

use futures::stream::FuturesOrdered;
use futures::{Stream, StreamExt};
use roam_engine::receive::ReplyFuture;
use roam_proto::replication::replication_server::Replication;
use roam_proto::replication::{PeerReply as ProtoReply, PeerRequest as ProtoRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use super::convert::{reply_to_proto, request_from_proto};
use super::error::StorageError;
use super::registry::Registry;

pub struct PeerService {
    pub registry: Arc<Registry>,
}

async fn begin(registry: &Registry, req: ProtoRequest) -> Result<ReplyFuture, Status> {
    let req = request_from_proto(req)?;
    let vol = registry.get(&req.volume_id).await?;
    vol.begin_peer(req)
        .await
        .map_err(|e| Status::from(StorageError::from(e)))
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<ProtoReply, Status>> + Send>>;

#[tonic::async_trait]
impl Replication for PeerService {
    type StreamStream = ReplyStream;

    #[instrument(skip_all)]
    async fn stream(
        &self,
        request: Request<Streaming<ProtoRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<ProtoReply, Status>>(64);
        let registry = self.registry.clone();
        tokio::spawn(async move {
            let mut pending = FuturesOrdered::new();
            let mut open = true;
            loop {
                tokio::select! {
                    msg = inbound.message(), if open => match msg {
                        Ok(Some(req)) => match begin(&registry, req).await {
                            Ok(fut) => pending.push_back(fut),
                            Err(status) => {
                                // Replies already due go first, then the refusal.
                                while let Some(r) = pending.next().await {
                                    let r = r.map(reply_to_proto).map_err(|e| Status::from(StorageError::from(e)));
                                    if tx.send(r).await.is_err() { return; }
                                }
                                tracing::warn!(code = ?status.code(), message = status.message(), "peer message refused");
                                let _ = tx.send(Err(status)).await;
                                return;
                            }
                        },
                        Ok(None) => open = false,
                        Err(status) => {
                            tracing::warn!(message = status.message(), "peer stream failed");
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    },
                    Some(r) = pending.next(), if !pending.is_empty() => {
                        let failed = r.is_err();
                        let r = r.map(reply_to_proto).map_err(|e| Status::from(StorageError::from(e)));
                        if tx.send(r).await.is_err() || failed { return; }
                    }
                    else => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[instrument(skip_all)]
    async fn call(&self, request: Request<ProtoRequest>) -> Result<Response<ProtoReply>, Status> {
        let fut = begin(&self.registry, request.into_inner()).await?;
        let reply = fut.await.map_err(|e| Status::from(StorageError::from(e)))?;
        Ok(Response::new(reply_to_proto(reply)))
    }
}
