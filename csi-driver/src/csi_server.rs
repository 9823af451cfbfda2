//! Wiring of `roam-csi controller` and `roam-csi node`: flags, the gRPC
//! server on the CSI endpoint (a unix socket, or TCP for tests), the
//! `/metrics` endpoint, and in node mode the announcement of this node's
//! storage system on its Node object.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Node as KubeNode;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use roam_proto::csi::controller_server::ControllerServer;
use roam_proto::csi::identity_server::IdentityServer;
use roam_proto::csi::node_server::NodeServer;
use serde_json::json;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;
use tracing::{info, warn};

use crate::controller::{ControllerConfig, ControllerService};
use crate::csi_metrics::{RpcObserver, serve_metrics};
use crate::identity::{IdentityService, Readiness};
use crate::node::{NodeConfig, NodeService};

/// Flags of `roam-csi controller`.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    /// CSI endpoint: `unix:///path/csi.sock` or `tcp://127.0.0.1:10000`.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub csi_endpoint: String,
    /// Namespace for VirtualVolumes when the request names no PVC namespace.
    #[arg(long, default_value = "roam-system")]
    pub volume_namespace: String,
    /// Longest CreateVolume/ControllerPublishVolume wait for the operator.
    #[arg(long, default_value = "120", value_name = "SECONDS")]
    pub wait_timeout: u64,
    /// Address of the Prometheus `/metrics` endpoint (empty: none).
    #[arg(long, default_value = "")]
    pub metrics_listen: String,
}

/// Flags of `roam-csi node`.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// CSI endpoint: `unix:///path/csi.sock` or `tcp://127.0.0.1:10001`.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub csi_endpoint: String,
    /// Kubernetes node name (the CSI node id).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// This node's data center; read from the Node's
    /// `topology.kubernetes.io/zone` label when not given.
    #[arg(long, env = "ROAM_DATA_CENTER")]
    pub data_center: Option<String>,
    /// Endpoint URL of this node's storage system, announced on the Node
    /// object (`roam.dev/storage-endpoint`) and probed for readiness.
    #[arg(long, env = "ROAM_STORAGE_ENDPOINT")]
    pub storage_endpoint: String,
    /// Run this node's storage system in this process, with its replicas in
    /// this directory (otherwise it runs as `roam-csi storage` elsewhere).
    #[arg(long, env = "ROAM_DATA_DIR")]
    pub storage_data_dir: Option<PathBuf>,
    /// Address the in-process storage system listens on.
    #[arg(long, default_value = "0.0.0.0:7100")]
    pub storage_listen: String,
    /// The in-process storage system's directory (its `--directory`):
    /// `kubernetes` records every group's in-sync set and primary lease in
    /// its CopyVolumeGroup, which is what keeps a cut-off primary from
    /// acknowledging beside a promoted one.
    #[arg(long, env = "ROAM_STORAGE_DIRECTORY")]
    pub storage_directory: Option<String>,
    /// How this node reaches storage systems (its frontend's remote target,
    /// health and volume conditions), and how its in-process storage system
    /// serves: mutual TLS, or an explicit `--insecure`.
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    /// Where FUSE exports are mounted.
    #[arg(long, default_value = "/run/roam/csi")]
    pub state_dir: PathBuf,
    /// Address of the Prometheus `/metrics` endpoint (empty: none).
    #[arg(long, default_value = "")]
    pub metrics_listen: String,
    /// Address of the embedded storage system's per-volume `/metrics`
    /// (`roam_storage_*`; empty: none).
    #[arg(long, default_value = "")]
    pub storage_metrics_listen: String,
    /// Do not annotate the Node object even when a kubeconfig is found
    /// (nor report broken frontends on VirtualVolumes).
    #[arg(long)]
    pub no_announce: bool,
    /// Seconds between two health checks of every staged volume's frontend;
    /// a broken one is reported on its VirtualVolume.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub health_interval: u64,
    /// The kubelet's plugin registry directory; when set, the plugin
    /// registers itself with the kubelet through a socket there.
    #[arg(long)]
    pub registration_dir: Option<PathBuf>,
    /// Path of the CSI socket as the kubelet sees it (registration).
    #[arg(long, default_value = "/var/lib/kubelet/plugins/roam.dev/csi.sock")]
    pub kubelet_registration_path: String,
}

enum Listener {
    Unix(UnixListenerStream),
    Tcp(TcpListenerStream),
}

async fn listen(endpoint: &str) -> anyhow::Result<Listener> {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // A socket left by an earlier run would make bind fail.
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
        let listener = tokio::net::UnixListener::bind(&path)
            .with_context(|| format!("binding {}", path.display()))?;
        return Ok(Listener::Unix(UnixListenerStream::new(listener)));
    }
    if let Some(addr) = endpoint.strip_prefix("tcp://") {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        return Ok(Listener::Tcp(TcpListenerStream::new(listener)));
    }
    bail!("CSI endpoint {endpoint:?} must start with unix:// or tcp://")
}

fn start_metrics(listen: &str, observer: &RpcObserver) -> anyhow::Result<()> {
    if listen.is_empty() {
        return Ok(());
    }
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("--metrics-listen {listen:?}"))?;
    let observer = observer.clone();
    tokio::spawn(async move {
        if let Err(e) = serve_metrics(addr, observer).await {
            warn!("metrics endpoint: {e:#}");
        }
    });
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!("no SIGTERM handler: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    info!("shutting down");
}

/// `roam-csi controller`: Identity + Controller services.
pub async fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    let observer = RpcObserver::new("");
    start_metrics(&args.metrics_listen, &observer)?;
    let identity = IdentityService::new(
        Readiness::ApiServer {
            client: client.clone(),
        },
        observer.clone(),
    );
    let controller = ControllerService::new(
        client,
        ControllerConfig {
            volume_namespace: args.volume_namespace,
            wait_timeout: Duration::from_secs(args.wait_timeout),
            poll_interval: Duration::from_millis(250),
        },
        observer,
    );
    let router = Server::builder()
        .add_service(IdentityServer::new(identity))
        .add_service(ControllerServer::new(controller));
    info!(endpoint = %args.csi_endpoint, "CSI controller listening");
    // On SIGTERM stop at once: open CO connections would hold a graceful
    // shutdown forever, and every call is idempotent, so the CO retries.
    tokio::select! {
        served = async {
            match listen(&args.csi_endpoint).await? {
                Listener::Unix(s) => router.serve_with_incoming(s).await?,
                Listener::Tcp(s) => router.serve_with_incoming(s).await?,
            }
            anyhow::Ok(())
        } => served?,
        () = shutdown_signal() => {}
    }
    Ok(())
}

/// The Kubernetes client of a node plugin; None with `--no-announce` or
/// without a Kubernetes configuration (tests without a cluster).
async fn node_client(args: &NodeArgs) -> Option<Client> {
    if args.no_announce {
        return None;
    }
    match Client::try_default().await {
        Ok(c) => Some(c),
        Err(e) => {
            info!("no Kubernetes configuration ({e}); not announcing the storage system");
            None
        }
    }
}

/// Writes `roam.dev/storage-endpoint` on this node's Node object and returns
/// the node's zone label. None when there is no such Node.
async fn announce(client: &Client, args: &NodeArgs) -> Option<String> {
    let nodes: Api<KubeNode> = Api::all(client.clone());
    let patch = json!({"metadata": {"annotations": {
        roam_crds::STORAGE_ENDPOINT_ANNOTATION: args.storage_endpoint,
    }}});
    match nodes
        .patch(
            &args.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(node) => {
            info!(node = %args.node_name, endpoint = %args.storage_endpoint, "storage system announced");
            node.metadata
                .labels
                .and_then(|l| l.get(roam_crds::ZONE_LABEL).cloned())
        }
        Err(e) => {
            warn!(node = %args.node_name, "announcing the storage system: {e}");
            None
        }
    }
}

/// The storage system's own flags, filled from the node's.
#[derive(clap::Parser)]
struct EmbeddedStorage {
    #[command(flatten)]
    args: crate::storage::StorageArgs,
}

fn embedded_storage(
    args: &NodeArgs,
    data_dir: &std::path::Path,
    data_center: &str,
) -> anyhow::Result<crate::storage::StorageArgs> {
    use clap::Parser;
    let mut argv = vec![
        "storage".to_owned(),
        "--data-dir".to_owned(),
        data_dir.to_string_lossy().into_owned(),
        "--listen".to_owned(),
        args.storage_listen.clone(),
        "--advertise".to_owned(),
        args.storage_endpoint.clone(),
        "--data-center".to_owned(),
        data_center.to_owned(),
        "--node".to_owned(),
        args.node_name.clone(),
    ];
    if !args.storage_metrics_listen.is_empty() {
        argv.extend([
            "--metrics-listen".to_owned(),
            args.storage_metrics_listen.clone(),
        ]);
    }
    if let Some(directory) = &args.storage_directory {
        argv.extend(["--directory".to_owned(), directory.clone()]);
    }
    argv.extend(args.tls.to_args());
    Ok(EmbeddedStorage::try_parse_from(argv)
        .context("storage system flags")?
        .args)
}

/// `roam-csi node`: Identity + Node services for this node, and (with
/// `--storage-data-dir`) its storage system; the storage system is reached
/// at `--storage-endpoint`.
pub async fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    let client = node_client(&args).await;
    let zone = match &client {
        Some(client) => announce(client, &args).await,
        None => None,
    };
    let data_center = match args.data_center.clone().or(zone) {
        Some(dc) => dc,
        None => bail!(
            "this node's data center is unknown: pass --data-center or label Node {} with {}",
            args.node_name,
            roam_crds::ZONE_LABEL
        ),
    };
    let dialer = args.tls.dialer()?;
    let mut local_storage = None;
    if let Some(dir) = args.storage_data_dir.clone() {
        let storage = embedded_storage(&args, &dir, &data_center)?;
        let started = crate::storage::start(storage).await?;
        local_storage = Some(crate::node::LocalStorage {
            endpoint: args.storage_endpoint.clone(),
            registry: started.registry,
        });
        tokio::spawn(async move {
            match started.serving.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("storage system stopped: {e:#}"),
                Err(e) => tracing::error!("storage system task: {e}"),
            }
        });
    }
    let observer = RpcObserver::new(&args.node_name);
    start_metrics(&args.metrics_listen, &observer)?;
    let identity = IdentityService::new(
        Readiness::StorageSystem {
            endpoint: args.storage_endpoint.clone(),
            dialer: dialer.clone(),
        },
        observer.clone(),
    );
    let node = std::sync::Arc::new(NodeService::new(
        NodeConfig {
            node_name: args.node_name.clone(),
            data_center,
            state_dir: args.state_dir.clone(),
            local_storage,
            dialer,
        },
        observer.clone(),
    ));
    tokio::spawn(crate::node::health::report(
        node.clone(),
        args.node_name.clone(),
        client,
        observer.clone(),
        Duration::from_secs(args.health_interval),
    ));
    let router = Server::builder()
        .add_service(IdentityServer::new(identity))
        .add_service(NodeServer::from_arc(node.clone()));
    if let Some(dir) = args.registration_dir.clone() {
        let endpoint = args.kubelet_registration_path.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::node::registration::serve(dir, endpoint).await {
                warn!("kubelet registration: {e:#}");
            }
        });
    }
    info!(endpoint = %args.csi_endpoint, node = %args.node_name, "CSI node listening");
    let listener = listen(&args.csi_endpoint).await?;
    let served = tokio::select! {
        served = async {
            match listener {
                Listener::Unix(s) => router.serve_with_incoming(s).await,
                Listener::Tcp(s) => router.serve_with_incoming(s).await,
            }
        } => served,
        () = shutdown_signal() => Ok(()),
    };
    // Leave no mount, loop device or FUSE thread behind.
    tokio::task::spawn_blocking(move || node.shutdown()).await?;
    served?;
    Ok(())
}
