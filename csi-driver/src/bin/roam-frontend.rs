//! roam-frontend: stage one volume on this host through the FUSE -> loop ->
//! filesystem stack and hold it until SIGTERM or SIGINT, then tear it down.
//! Used by the benchmarks and for poking at a storage system by hand.
//!
//! The volume is remote (`--endpoint`, the primary's storage system, with
//! `--epoch`), a replica of this process (`--local-dir`: the engine's journal
//! and real volume in-process, a group of one, as when the primary is on the
//! host's node), or a plain local file (`--file`, no engine at all: the
//! frontend's own ceiling). Prints `ready <mount path>` once mounted.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use roam_engine::backend::ReplicaDir;
use roam_engine::frontend::{
    BlockTarget, FileTarget, FsType, LocalTarget, RemoteTarget, StageOptions, StagedVolume,
};
use roam_engine::transport::local::LocalTransport;
use roam_engine::{EngineConfig, GroupSpec, Volume};

/// Data center name of an in-process replica.
const LOCAL_DC: &str = "local";
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser, Debug)]
#[command(about = "Stage a Roam volume (FUSE file -> loop -> filesystem) until signalled")]
struct Args {
    /// Volume id.
    #[arg(long)]
    volume: String,
    /// Where the filesystem is mounted.
    #[arg(long)]
    mount: PathBuf,
    /// Directory for the FUSE export's mountpoint.
    #[arg(long)]
    work: PathBuf,
    /// Storage system endpoint of the primary (http://host:port).
    #[arg(long, conflicts_with = "file")]
    endpoint: Option<String>,
    /// Epoch to send with every request (remote volumes).
    #[arg(long, default_value_t = 1)]
    epoch: u64,
    /// A plain file to serve instead of a storage system.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Directory of an in-process replica (created if missing), primary of a
    /// group of one.
    #[arg(long)]
    local_dir: Option<PathBuf>,
    /// Size of the file volume in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    size: u64,
    /// ext4 or xfs.
    #[arg(long, default_value = "ext4")]
    fs_type: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        // Colour codes only for a terminal: logs collected by the kubelet stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let Some(fs_type) = FsType::parse(&args.fs_type) else {
        bail!("--fs-type {}: expected ext4 or xfs", args.fs_type);
    };
    let target: Arc<dyn BlockTarget> = match (&args.endpoint, &args.file, &args.local_dir) {
        (None, None, Some(dir)) => Arc::new(local_replica(dir, &args.volume, args.size).await?),
        (Some(endpoint), None, None) => Arc::new(
            RemoteTarget::connect(endpoint, &args.volume, args.epoch)
                .await
                .context("connect to the storage system")?,
        ),
        (None, Some(file), None) => Arc::new(
            FileTarget::open(&args.volume, file, args.size)
                .with_context(|| format!("open {}", file.display()))?,
        ),
        _ => bail!("give exactly one of --endpoint, --file and --local-dir"),
    };
    let options = StageOptions {
        fuse_dir: args.work.join("fuse"),
        mount_path: args.mount.clone(),
        fs_type,
        mount_options: Vec::new(),
    };
    let runtime = tokio::runtime::Handle::current();
    let staged =
        tokio::task::spawn_blocking(move || StagedVolume::stage(target, runtime, &options))
            .await
            .context("stage task")??;
    println!("ready {}", args.mount.display());
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tokio::task::spawn_blocking(move || staged.unstage())
        .await
        .context("unstage task")??;
    Ok(())
}

/// Opens (creating when new) a replica in `dir` and makes it the primary of a
/// group of one at epoch 1.
async fn local_replica(
    dir: &std::path::Path,
    volume: &str,
    size: u64,
) -> anyhow::Result<LocalTarget> {
    let replica = ReplicaDir::new(dir, volume);
    if !replica.exists() {
        replica
            .create_replica(volume, LOCAL_DC, size)
            .with_context(|| format!("create replica in {}", dir.display()))?;
    }
    let files = replica.files().context("open replica files")?;
    let transport = Arc::new(LocalTransport::default());
    let handle = Volume::open(volume, files, transport, EngineConfig::default())
        .await
        .context("open replica")?;
    let group = GroupSpec::sole_member(LOCAL_DC);
    handle
        .configure(group)
        .await
        .context("configure group of one")?;
    Ok(LocalTarget::new(handle, 1))
}
