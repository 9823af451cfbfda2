//! CSI Identity service, served by both `roam-csi controller` and
//! `roam-csi node`.
//!
//! Probe reports readiness, not liveness: the node plugin is ready once its
//! own storage system answers GetInfo with `ready`, the controller once the
//! Kubernetes API server answers. Until then Probe succeeds with
//! `ready = false`, as the specification asks of a plugin that is "still
//! initializing, but is otherwise perfectly healthy".

use roam_proto::csi::identity_server::Identity;
use roam_proto::csi::plugin_capability::{self, service, volume_expansion};
use roam_proto::csi::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse,
};
use roam_proto::storage::GetInfoRequest;
use roam_proto::storage::storage_client::StorageClient;
use tonic::{Request, Response, Status};

use crate::csi_metrics::RpcObserver;

/// What Probe checks.
#[derive(Clone)]
pub enum Readiness {
    /// The storage system at this endpoint (node mode).
    StorageSystem {
        endpoint: String,
        dialer: crate::tls::Dialer,
    },
    /// The Kubernetes API server (controller mode).
    ApiServer { client: kube::Client },
}

impl Readiness {
    async fn ready(&self) -> bool {
        match self {
            Readiness::StorageSystem { endpoint, dialer } => {
                let Ok(endpoint) = dialer.endpoint(endpoint) else {
                    return false;
                };
                let Ok(mut client) = StorageClient::connect(endpoint).await else {
                    return false;
                };
                matches!(client.get_info(GetInfoRequest {}).await, Ok(info) if info.get_ref().ready)
            }
            Readiness::ApiServer { client } => client.apiserver_version().await.is_ok(),
        }
    }
}

pub struct IdentityService {
    readiness: Readiness,
    observer: RpcObserver,
}

impl IdentityService {
    pub fn new(readiness: Readiness, observer: RpcObserver) -> Self {
        Self {
            readiness,
            observer,
        }
    }
}

fn service_capability(kind: service::Type) -> PluginCapability {
    PluginCapability {
        r#type: Some(plugin_capability::Type::Service(
            plugin_capability::Service {
                r#type: kind as i32,
            },
        )),
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    /// "The name MUST follow domain name notation format": `roam.dev`, the
    /// same name as the CSIDriver object.
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        self.observer
            .observe("GetPluginInfo", "", async {
                Ok(Response::new(GetPluginInfoResponse {
                    name: roam_crds::DRIVER_NAME.to_owned(),
                    vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
                    manifest: Default::default(),
                }))
            })
            .await
    }

    /// Controller service, topology (volumes are placed by data center) and
    /// online expansion.
    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        self.observer
            .observe("GetPluginCapabilities", "", async {
                Ok(Response::new(GetPluginCapabilitiesResponse {
                    capabilities: vec![
                        service_capability(service::Type::ControllerService),
                        service_capability(service::Type::VolumeAccessibilityConstraints),
                        PluginCapability {
                            r#type: Some(plugin_capability::Type::VolumeExpansion(
                                plugin_capability::VolumeExpansion {
                                    r#type: volume_expansion::Type::Online as i32,
                                },
                            )),
                        },
                    ],
                }))
            })
            .await
    }

    /// Succeeds while healthy; `ready` is false until the storage system
    /// (node) or the API server (controller) answers.
    async fn probe(
        &self,
        _request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        self.observer
            .observe("Probe", "", async {
                Ok(Response::new(ProbeResponse {
                    ready: Some(self.readiness.ready().await),
                }))
            })
            .await
    }
}
