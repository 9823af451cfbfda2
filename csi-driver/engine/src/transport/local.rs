//! In-process transport: endpoints are names in a table of volumes.
//! Endpoints can be taken down to simulate an unreachable data center.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::{PeerLink, PeerReply, PeerRequest, Transport};
use crate::error::TransportError;
use crate::receive::ReplyQueue;
use crate::volume::Volume;
use async_trait::async_trait;
use tokio::sync::mpsc;

#[derive(Default, Clone)]
pub struct LocalTransport {
    inner: Arc<Mutex<LocalNet>>,
}

#[derive(Default)]
struct LocalNet {
    volumes: HashMap<(String, String), Volume>,
    down: HashSet<String>,
}

impl LocalTransport {
    pub fn register(&self, endpoint: &str, volume: Volume) {
        let mut net = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        net.volumes
            .insert((endpoint.to_string(), volume.id().to_string()), volume);
    }
    pub fn unregister(&self, endpoint: &str, volume_id: &str) {
        let mut net = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        net.volumes
            .remove(&(endpoint.to_string(), volume_id.to_string()));
    }
    /// Make `endpoint` unreachable (`down`) or reachable again.
    pub fn set_down(&self, endpoint: &str, down: bool) {
        let mut net = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if down {
            net.down.insert(endpoint.to_string());
        } else {
            net.down.remove(endpoint);
        }
    }
    fn lookup(&self, endpoint: &str, volume_id: &str) -> Result<Volume, TransportError> {
        let net = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if net.down.contains(endpoint) {
            return Err(TransportError::Connect {
                endpoint: endpoint.into(),
                reason: "down".into(),
            });
        }
        net.volumes
            .get(&(endpoint.to_string(), volume_id.to_string()))
            .cloned()
            .ok_or_else(|| TransportError::Refused {
                endpoint: endpoint.into(),
                code: crate::error::RefusalCode::NotFound,
                message: format!("volume {volume_id} not found"),
            })
    }
    fn is_down(&self, endpoint: &str) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .down
            .contains(endpoint)
    }
}

fn refused(endpoint: &str, e: crate::error::EngineError) -> TransportError {
    TransportError::Refused {
        endpoint: endpoint.into(),
        code: e.refusal_code(),
        message: e.to_string(),
    }
}

#[async_trait]
impl Transport for LocalTransport {
    async fn open(&self, endpoint: &str) -> Result<PeerLink, TransportError> {
        if self.is_down(endpoint) {
            return Err(TransportError::Connect {
                endpoint: endpoint.into(),
                reason: "down".into(),
            });
        }
        let (tx, mut req_rx) = mpsc::channel::<PeerRequest>(64);
        let (reply_tx, rx) = mpsc::channel(64);
        let this = self.clone();
        let endpoint = endpoint.to_string();
        tokio::spawn(async move {
            let mut replies = ReplyQueue::default();
            loop {
                tokio::select! {
                    req = req_rx.recv() => {
                        let Some(req) = req else { break };
                        let vol = match this.lookup(&endpoint, &req.volume_id) {
                            Ok(v) => v,
                            Err(e) => { let _ = reply_tx.send(Err(e)).await; break; }
                        };
                        if let Err(e) = replies.begin(&vol, req).await {
                            let _ = reply_tx.send(Err(refused(&endpoint, e))).await;
                            break;
                        }
                    }
                    reply = replies.next() => {
                        if this.is_down(&endpoint) {
                            break;
                        }
                        let reply = reply.map_err(|e| refused(&endpoint, e));
                        let failed = reply.is_err();
                        if reply_tx.send(reply).await.is_err() || failed {
                            break;
                        }
                    }
                }
            }
        });
        Ok(PeerLink { tx, rx })
    }

    async fn call(&self, endpoint: &str, req: PeerRequest) -> Result<PeerReply, TransportError> {
        let vol = self.lookup(endpoint, &req.volume_id)?;
        let fut = vol
            .begin_peer(req)
            .await
            .map_err(|e| refused(endpoint, e))?;
        fut.await.map_err(|e| refused(endpoint, e))
    }
}
