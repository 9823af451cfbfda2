//! Registration with the kubelet (the kubelet plugin registration API).
//!
//! The node plugin puts a socket named `roam.dev@kubelet.sock` in the
//! kubelet's `plugins_registry` directory and serves `Registration` on it: the kubelet
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
///
/// The `@` in the name is what lets the kubelet in. The kubelet dials this
/// socket by its path without setting an authority, so its gRPC client sends
/// the path, percent-encoded (`%2Fvar%2Flib%2Fkubelet%2F...`), as the HTTP/2
/// `:authority`. The HTTP stack under tonic accepts `%` only in the userinfo
/// part of an authority, the part before an `@`, and resets the stream with
/// PROTOCOL_ERROR otherwise. With an `@` in the file name, the encoded
/// directory becomes userinfo and `kubelet.sock` the host, which it accepts.
/// (The kubelet's CSI client sets the authority `localhost`, so the CSI
/// socket needs no such care.)
pub fn socket_path(registry_dir: &Path) -> PathBuf {
    registry_dir.join(format!("{}@kubelet.sock", roam_crds::DRIVER_NAME))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The authority the kubelet's gRPC client derives from a socket path:
    /// every byte outside RFC 3986's unreserved, sub-delims and `:[]@` is
    /// percent-encoded.
    fn authority_sent_for(path: &Path) -> String {
        let mut out = String::new();
        for b in path.to_str().unwrap().bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]@".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    #[test]
    fn registration_socket_path_is_an_authority_the_server_accepts() {
        for dir in [
            "/var/lib/kubelet/plugins_registry",
            "/srv/dc-a/kubelet/plugins_registry",
        ] {
            let sent = authority_sent_for(&socket_path(Path::new(dir)));
            assert!(
                http::uri::Authority::try_from(sent.as_str()).is_ok(),
                "{sent} is refused"
            );
        }
    }

    #[test]
    fn a_socket_name_without_an_at_sign_is_refused() {
        // Guards the reason for the `@`: if the HTTP stack ever starts to
        // accept this, the odd name can go.
        let sent = authority_sent_for(Path::new("/var/lib/kubelet/plugins_registry/roam.sock"));
        assert!(http::uri::Authority::try_from(sent.as_str()).is_err());
    }
}
