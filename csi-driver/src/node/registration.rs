//! Registration with the kubelet (the kubelet plugin registration API).
//!
//! The node plugin puts a socket named `roam.dev-reg.sock` in the kubelet's
//! `plugins_registry` directory and serves `Registration` on it: the kubelet
//! notices the socket, asks GetInfo for the CSI endpoint (as the kubelet sees
//! it) and then calls the CSI node service there. This is the job the
//! upstream node-driver-registrar sidecar does; Roam does it in-process so
//! that the node plugin needs no sidecar.

use std::path::{Path, PathBuf};

use anyhow::Context;
use roam_proto::pluginregistration::registration_server::{Registration, RegistrationServer};
use roam_proto::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};
use tracing::{error, info};

struct Registrar {
    csi_endpoint: String,
}

#[tonic::async_trait]
impl Registration for Registrar {
    async fn get_info(
        &self,
        _request: Request<InfoRequest>,
    ) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(PluginInfo {
            r#type: "CSIPlugin".to_owned(),
            name: roam_crds::DRIVER_NAME.to_owned(),
            endpoint: self.csi_endpoint.clone(),
            supported_versions: vec!["1.0.0".to_owned()],
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        if status.plugin_registered {
            info!("registered with the kubelet");
        } else {
            error!("the kubelet refused the registration: {}", status.error);
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// Path of the registration socket in `registry_dir`.
pub fn socket_path(registry_dir: &Path) -> PathBuf {
    registry_dir.join(format!("{}-reg.sock", roam_crds::DRIVER_NAME))
}

/// Serves the registration socket until the process ends. `csi_endpoint`
/// is the CSI socket path as the kubelet sees it.
pub async fn serve(registry_dir: PathBuf, csi_endpoint: String) -> anyhow::Result<()> {
    let path = socket_path(&registry_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding {}", path.display()))?;
    info!(socket = %path.display(), endpoint = %csi_endpoint, "kubelet registration socket ready");
    tonic::transport::Server::builder()
        .add_service(RegistrationServer::new(Registrar { csi_endpoint }))
        .serve_with_incoming(UnixListenerStream::new(listener))
        .await?;
    Ok(())
}
