//! The replication service (replication.proto): the receiving side of every
//! link. Requests of one stream are checked and applied in order by the engine
//! ([`roam_engine::Volume::begin_peer`]); replies go back in order, with the
//! replica's durable position pushed between them
//! ([`roam_engine::receive::ReplyQueue`]). The first refusal ends the stream
//! with its status.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use roam_engine::Volume;
use roam_engine::receive::ReplyQueue;
use roam_engine::transport::{PeerReply, PeerRequest};
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

fn status(e: roam_engine::error::EngineError) -> Status {
    Status::from(StorageError::from(e))
}

/// The request, decoded, and the replica it is for.
async fn addressed(
    registry: &Registry,
    req: ProtoRequest,
) -> Result<(Volume, PeerRequest), Status> {
    let req = request_from_proto(req)?;
    let vol = registry.get(&req.volume_id).await?;
    Ok((vol, req))
}

async fn begin(
    registry: &Registry,
    replies: &mut ReplyQueue,
    req: ProtoRequest,
) -> Result<(), Status> {
    let (vol, req) = addressed(registry, req).await?;
    replies.begin(&vol, req).await.map_err(status)
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
            let mut replies = ReplyQueue::default();
            let mut open = true;
            let to_proto =
                |r: roam_engine::error::Result<PeerReply>| r.map(reply_to_proto).map_err(status);
            loop {
                tokio::select! {
                    msg = inbound.message(), if open => match msg {
                        Ok(Some(req)) => {
                            if let Err(status) = begin(&registry, &mut replies, req).await {
                                // Replies already due go first, then the refusal.
                                while let Some(r) = replies.next_due().await {
                                    if tx.send(to_proto(r)).await.is_err() { return; }
                                }
                                tracing::warn!(code = ?status.code(), message = status.message(), "peer message refused");
                                let _ = tx.send(Err(status)).await;
                                return;
                            }
                        }
                        Ok(None) => open = false,
                        Err(status) => {
                            tracing::warn!(message = status.message(), "peer stream failed");
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    },
                    r = replies.next() => {
                        let failed = r.is_err();
                        if tx.send(to_proto(r)).await.is_err() || failed { return; }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[instrument(skip_all)]
    async fn call(&self, request: Request<ProtoRequest>) -> Result<Response<ProtoReply>, Status> {
        let (vol, req) = addressed(&self.registry, request.into_inner()).await?;
        let reply = vol.begin_peer(req).await.map_err(status)?;
        let reply = reply.await.map_err(status)?;
        Ok(Response::new(reply_to_proto(reply)))
    }
}
