//! A storage system that also serves one of its volumes to this host, in
//! process: `roam-csi storage --stage-volume V --stage-mount M`.
//!
//! This is the path the node plugin takes when the primary is on the host's
//! node: the frontend (FUSE file -> loop -> filesystem) calls the replica's
//! handle directly ([`LocalTarget`]) instead of going through gRPC, while
//! the secondaries are real storage systems elsewhere. It lets benchmarks and
//! demonstrations measure that path without Kubernetes.
//!
//! Expected flow: once the server runs, wait until the volume exists here,
//! is primary, and every member of its group is in sync (the first full copy
//! is done); then stage it at the epoch it holds and print
//! `ready <mount path>` on stdout. [`HostStage::unstage`] tears it down
//! before the replicas are closed. Caveat: the staged target keeps the
//! epoch it started with, so after a change of primary its I/O fails (EIO),
//! as a host's would until it logs in again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use roam_engine::frontend::{BlockTarget, FsType, LocalTarget, StageOptions, StagedVolume};
use roam_engine::{MemberState, Role};
use tracing::{info, instrument};

use super::registry::Registry;

/// Which volume to stage, and where.
#[derive(Debug, Clone, clap::Args)]
pub struct HostStageArgs {
    /// Stage this volume on this host through the in-process frontend once
    /// it is primary here and its group is in sync.
    #[arg(long, requires = "stage_mount")]
    pub stage_volume: Option<String>,
    /// Where the staged volume's filesystem is mounted.
    #[arg(long)]
    pub stage_mount: Option<PathBuf>,
    /// ext4 or xfs.
    #[arg(long, default_value = "ext4")]
    pub stage_fs_type: String,
}

pub struct HostStage {
    staged: StagedVolume,
}

impl HostStage {
    /// Waits for the volume (see the module doc), then stages it.
    #[instrument(skip_all, fields(volume = %volume))]
    pub async fn wait_and_stage(
        registry: Arc<Registry>,
        volume: String,
        mount: PathBuf,
        fs_type: &str,
    ) -> anyhow::Result<Self> {
        let fs_type = FsType::parse(fs_type)
            .with_context(|| format!("--stage-fs-type {fs_type}: expected ext4 or xfs"))?;
        let handle = loop {
            if let Ok(handle) = registry.get(&volume).await {
                let status = handle.status();
                let in_sync = !status.members.is_empty()
                    && status
                        .members
                        .iter()
                        .all(|m| m.state == MemberState::InSync);
                if status.role == Role::Primary && status.group.is_some() && in_sync {
                    break handle;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let epoch = handle.epoch();
        let target: Arc<dyn BlockTarget> = Arc::new(LocalTarget::new(handle, epoch));
        let options = StageOptions {
            fuse_dir: mount.with_extension("fuse"),
            mount_path: mount.clone(),
            fs_type,
            mount_options: Vec::new(),
        };
        let runtime = tokio::runtime::Handle::current();
        let staged =
            tokio::task::spawn_blocking(move || StagedVolume::stage(target, runtime, &options))
                .await
                .context("stage task")?
                .with_context(|| format!("stage volume {volume}"))?;
        info!(epoch, mount = %mount.display(), "volume staged in process");
        println!("ready {}", mount.display());
        Ok(Self { staged })
    }

    /// Unmounts the filesystem, detaches the loop device, unmounts the FUSE
    /// export.
    pub async fn unstage(self) -> anyhow::Result<()> {
        tokio::task::spawn_blocking(move || self.staged.unstage())
            .await
            .context("unstage task")?
            .context("unstage")
    }
}
