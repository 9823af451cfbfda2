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
//! failure policy applies.

mod convert;
pub mod error;
mod peer;
mod registry;
mod service;
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
}

pub async fn run(args: StorageArgs) -> anyhow::Result<()> {
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
    let transport = Arc::new(transport::GrpcTransport::new(client_tls, MAX_MESSAGE_BYTES));
    let registry = Arc::new(registry::Registry::new(
        args.data_dir.clone(),
        args.data_center.clone(),
        args.node.clone(),
        args.advertise.clone(),
        config,
        transport,
    ));
    let opened = registry.open_all().await?;
    tracing::info!(
        data_center = %args.data_center,
        listen = %args.listen,
        advertise = %args.advertise,
        replicas = opened,
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
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
        }
        tracing::info!("shutting down");
    };
    builder
        .add_service(storage)
        .add_service(replication)
        .serve_with_shutdown(args.listen, shutdown)
        .await
        .with_context(|| format!("serve on {}", args.listen))?;
    registry.close_all().await;
    Ok(())
}
