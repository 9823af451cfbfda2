//! What the node plugin holds for each staged volume.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use roam_engine::frontend::{
    BlockTarget, FrontendError, FsType, FuseExport, LoopDevice, StageOptions, StagedVolume,
    grow_export,
};
use tokio::runtime::Handle;
use tracing::error;

use super::params::PublishContext;

/// The export stack of one staged volume.
pub enum Stack {
    /// Mount mode: FUSE -> loop -> file system mounted at the staging path.
    Mounted(StagedVolume),
    /// Block mode: FUSE -> loop; the loop device is what pods get.
    Block(BlockStack),
}

impl Stack {
    pub fn device(&self) -> Option<PathBuf> {
        match self {
            Stack::Mounted(staged) => staged.device().map(Path::to_owned),
            Stack::Block(block) => block.device.as_ref().map(|d| d.path().to_owned()),
        }
    }

    /// Makes the export and its loop device show the size the volume has
    /// now (after an expansion); returns the device's size in bytes. The
    /// filesystem on it is the caller's to grow.
    pub async fn grow(&self) -> Result<u64, FrontendError> {
        match self {
            Stack::Mounted(staged) => staged.grow().await,
            Stack::Block(block) => block.grow().await,
        }
    }

    /// Tears the stack down in order.
    pub fn teardown(self) -> Result<(), FrontendError> {
        match self {
            Stack::Mounted(staged) => staged.unstage(),
            Stack::Block(mut block) => block.teardown(),
        }
    }
}

/// FUSE export and loop device, without a file system.
pub struct BlockStack {
    volume: String,
    target: Arc<dyn BlockTarget>,
    device: Option<LoopDevice>,
    fuse: Option<FuseExport>,
}

impl BlockStack {
    /// Blocking; see [`StagedVolume::stage`].
    pub fn stage(
        target: Arc<dyn BlockTarget>,
        runtime: Handle,
        fuse_dir: &Path,
    ) -> Result<Self, FrontendError> {
        std::fs::create_dir_all(fuse_dir).map_err(|source| FrontendError::CreateDir {
            path: fuse_dir.to_owned(),
            source,
        })?;
        let mut stack = BlockStack {
            volume: target.volume_id().to_owned(),
            target: target.clone(),
            device: None,
            fuse: None,
        };
        let fuse = FuseExport::mount(target, fuse_dir, runtime)?;
        let file = fuse.volume_file();
        stack.fuse = Some(fuse);
        stack.device = Some(LoopDevice::attach(&file)?);
        Ok(stack)
    }

    async fn grow(&self) -> Result<u64, FrontendError> {
        match (&self.fuse, &self.device) {
            (Some(fuse), Some(device)) => grow_export(&self.target, fuse, device).await,
            _ => Err(FrontendError::NotStaged {
                volume: self.volume.clone(),
            }),
        }
    }

    fn teardown(&mut self) -> Result<(), FrontendError> {
        let mut first = None;
        if let Some(device) = self.device.take()
            && let Err(e) = device.detach()
        {
            first.get_or_insert(e);
        }
        if let Some(fuse) = self.fuse.take()
            && let Err(e) = fuse.unmount()
        {
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for BlockStack {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            error!(volume = %self.volume, "block stack teardown: {e:#}");
        }
    }
}

/// Options of a mount-mode stage.
pub fn mount_options(
    fuse_dir: &Path,
    staging: &Path,
    fs_type: FsType,
    flags: &[String],
) -> StageOptions {
    StageOptions {
        fuse_dir: fuse_dir.to_owned(),
        mount_path: staging.to_owned(),
        fs_type,
        mount_options: flags.to_vec(),
    }
}

/// One staged volume.
pub struct Staged {
    pub staging_path: PathBuf,
    pub block: bool,
    pub fs_type: FsType,
    pub context: PublishContext,
    /// Target paths it is published at.
    pub targets: BTreeSet<PathBuf>,
    /// None only while the stack is being torn down.
    pub stack: Option<Stack>,
}
