//! `roam-csi storage`: one storage system (claim 19) — the replicas of this
//! data center, the storage API for the operator, the host side and the admin
//! CLI, and the replication service for the other storage systems, on one
//! gRPC listener.
//!
//! Flags (stable; the test harnesses depend on them):
//! `--data-dir D` (one directory per replica), `--listen ADDR` (e.g.
//! `127.0.0.1:7100`), `--advertise ENDPOINT` (how peers reach this one, e.g.
//! `https://10.0.0.2:7100`), `--data-center DC`, `--node NODE`, and either
//! `--tls-cert/--tls-key/--tls-ca` (mTLS) or `--insecure` (plaintext).
//! `--ack-timeout-ms` sets how long a write waits for a secondary before the
//! failure policy applies. `--stage-volume V --stage-mount M` also serves
//! volume V to this host through the in-process frontend once it is primary
//! here and its group is in sync (see [`host_stage`]). `--metrics-listen`
//! serves per-volume metrics at /metrics (see [`metrics`]).

mod convert;
pub mod directory;
pub mod error;
mod host_stage;
pub mod kube_directory;
mod metrics;
mod peer;
mod registry;
mod service;

pub use registry::Registry;
mod transport;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use roam_engine::EngineConfig;
use roam_proto::replication::replication_server::ReplicationServer;
use roam_proto::storage::storage_server::StorageServer;

use crate::tls::TlsArgs;

/// `--directory kubernetes`: the directory is the Kubernetes API
/// ([`kube_directory`]).
pub const KUBERNETES_DIRECTORY: &str = "kubernetes";

/// Largest gRPC message accepted (a write or a replication batch plus framing).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

#[derive(Debug, clap::Args)]
pub struct StorageArgs {
    /// Directory holding one sub-directory per replica.
    #[arg(long, env = "ROAM_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:7100")]
    pub listen: SocketAddr,
    /// Endpoint other storage systems and clients use to reach this one.
    #[arg(long)]
    pub advertise: String,
    /// Data center this storage system belongs to.
    #[arg(long)]
    pub data_center: String,
    /// Node name (informational).
    #[arg(long, default_value = "")]
    pub node: String,
    /// How long a write waits for a secondary before the failure policy applies.
    #[arg(long, default_value_t = 10_000)]
    pub ack_timeout_ms: u64,
    /// How long a planned change of primary waits for the target to catch up.
    #[arg(long, default_value_t = 30_000)]
    pub transfer_timeout_ms: u64,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Serve per-volume metrics (Prometheus text) at /metrics on this address.
    /// The directory that records the in-sync set of every group this
    /// storage system is primary of and grants its lease: `kubernetes` for
    /// the groups' CopyVolumeGroups in the API server (in-cluster
    /// configuration or KUBECONFIG), or the URL of a `roam/directory.proto`
    /// service. With it, a primary acknowledges only while its lease holds
    /// and goes on without a member only once the directory recorded it out
    /// of sync; without it, records stay in each replica's metadata and no
    /// lease is held.
    #[arg(long)]
    pub directory: Option<String>,
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub stage: host_stage::HostStageArgs,
}

/// A storage system started in this process: its replicas, which a frontend
/// in the same process (the node plugin's) reaches without the network, and
/// the task that serves the gRPC listener until SIGTERM or Ctrl-C.
pub struct Started {
    pub registry: Arc<Registry>,
    pub serving: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Runs a storage system until it is told to stop. With `--stage-volume`,
/// also serves that volume to this host in process ([`host_stage`]) and
/// tears it down before the replicas are closed.
pub async fn run(args: StorageArgs) -> anyhow::Result<()> {
    let (Some(volume), Some(mount)) = (
        args.stage.stage_volume.clone(),
        args.stage.stage_mount.clone(),
    ) else {
        return start(args)
            .await?
            .serving
            .await
            .context("storage system task")?;
    };
    let fs_type = args.stage.stage_fs_type.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let started = start_until(args, async {
        let _ = stop_rx.await;
    })
    .await?;
    let registry = started.registry.clone();
    let staging = tokio::spawn(async move {
        host_stage::HostStage::wait_and_stage(registry, volume, mount, &fs_type)
            .await
            .inspect_err(|e| tracing::error!("in-process stage: {e:#}"))
    });
    terminate_signal().await;
    if staging.is_finished() {
        if let Ok(Ok(staged)) = staging.await
            && let Err(e) = staged.unstage().await
        {
            tracing::error!("in-process unstage: {e:#}");
        }
    } else {
        staging.abort();
    }
    let _ = stop_tx.send(());
    started.serving.await.context("storage system task")?
}

/// How long open calls may run once the storage system is told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Resolves at SIGTERM or Ctrl-C.
async fn terminate_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
    }
    tracing::info!("shutting down");
}

/// Opens the replicas and starts serving until SIGTERM or Ctrl-C; returns
/// once the replicas are open.
pub async fn start(args: StorageArgs) -> anyhow::Result<Started> {
    start_until(args, terminate_signal()).await
}

/// [`start`], serving until `shutdown` resolves.
pub async fn start_until(
    args: StorageArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Started> {
    let server_tls = args.tls.server_config()?;
    let client_tls = args.tls.client_config()?;
    if args.data_center.is_empty() {
        anyhow::bail!("--data-center must not be empty");
    }
    let config = EngineConfig {
        ack_timeout: Duration::from_millis(args.ack_timeout_ms),
        transfer_timeout: Duration::from_millis(args.transfer_timeout_ms),
        ..Default::default()
    };
    let directory: Option<Arc<dyn roam_engine::directory::Directory>> =
        match args.directory.as_deref() {
            Some(KUBERNETES_DIRECTORY) => Some(Arc::new(kube_directory::KubeDirectory::new(
                kube::Client::try_default()
                    .await
                    .context("--directory kubernetes: no Kubernetes configuration")?,
            ))),
            Some(endpoint) => Some(Arc::new(directory::GrpcDirectory::new(
                endpoint,
                client_tls.clone(),
            )?)),
            None => None,
        };
    let transport = Arc::new(transport::GrpcTransport::new(client_tls, MAX_MESSAGE_BYTES));
    let registry = Arc::new(
        registry::Registry::new(
            args.data_dir.clone(),
            args.data_center.clone(),
            args.node.clone(),
            args.advertise.clone(),
            config,
            transport,
        )
        .with_directory(directory),
    );
    let opened = registry.open_all().await?;
    tracing::info!(
        data_center = %args.data_center,
        listen = %args.listen,
        advertise = %args.advertise,
        replicas = opened,
        directory = args.directory.as_deref().unwrap_or("none"),
        tls = server_tls.is_some(),
        "storage system starting"
    );
    let storage = StorageServer::new(service::StorageService {
        registry: registry.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let replication = ReplicationServer::new(peer::PeerService {
        registry: registry.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut builder = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = server_tls {
        builder = builder.tls_config(tls).context("TLS configuration")?;
    }
    if let Some(metrics_listen) = args.metrics_listen {
        let registry = registry.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(metrics_listen, registry).await {
                tracing::error!("storage metrics: {e:#}");
            }
        });
    }
    let listen = args.listen;
    let serving_registry = registry.clone();
    let serving = tokio::spawn(async move {
        // A graceful shutdown waits for every open call, and a secondary
        // always has one: the primary's replication stream, which only ends
        // when the primary's storage system does. So once told to stop, the
        // server drains for SHUTDOWN_GRACE and then drops what is left (the
        // peer reconnects with backoff, as after any restart); the replicas
        // are closed, their journals synced, either way.
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown.await;
            let _ = stopping_tx.send(());
        };
        tokio::select! {
            served = builder
                .add_service(storage)
                .add_service(replication)
                .serve_with_shutdown(listen, shutdown) => {
                served.with_context(|| format!("serve on {listen}"))?;
            }
            () = async {
                if stopping_rx.await.is_ok() {
                    tokio::time::sleep(SHUTDOWN_GRACE).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!(
                    grace = ?SHUTDOWN_GRACE,
                    "calls still open at shutdown (a primary's replication stream); closing them"
                );
            }
        }
        serving_registry.close_all().await;
        Ok(())
    });
    Ok(Started { registry, serving })
}
