//! What the node plugin holds for each staged volume.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use roam_engine::frontend::{BlockExport, FrontendError, FsType, StageOptions, StagedVolume};

use super::error::NodeError;
use super::mount;
use super::params::PublishContext;

/// The export stack of one staged volume.
pub enum Stack {
    /// Mount mode: FUSE -> loop -> file system mounted at the staging path.
    Mounted(StagedVolume),
    /// Block mode: FUSE -> loop; the loop device is what pods get.
    Block(BlockExport),
}

impl Stack {
    pub fn device(&self) -> Option<PathBuf> {
        match self {
            Stack::Mounted(staged) => staged.device().map(Path::to_owned),
            Stack::Block(export) => export.device().map(Path::to_owned),
        }
    }

    /// Makes the export and its loop device show the size the volume has
    /// now (after an expansion); returns the device's size in bytes. The
    /// filesystem on it is the caller's to grow.
    pub async fn grow(&self) -> Result<u64, FrontendError> {
        match self {
            Stack::Mounted(staged) => staged.grow().await,
            Stack::Block(export) => export.grow().await,
        }
    }

    /// See [`BlockExport::check_health`]. Blocking.
    pub fn check_health(&self) -> Result<(), FrontendError> {
        match self {
            Stack::Mounted(staged) => staged.check_health(),
            Stack::Block(export) => export.check_health(),
        }
    }

    /// Tears the stack down in order. Blocking. Resumable: after an error
    /// the stack keeps what is not torn down yet, and a second call (a
    /// retried NodeUnstageVolume) finishes the job.
    pub fn teardown(&mut self) -> Result<(), FrontendError> {
        match self {
            Stack::Mounted(staged) => staged.teardown(),
            Stack::Block(export) => export.teardown(),
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

impl Staged {
    /// Unmounts the targets still published, then tears the stack down: the
    /// one teardown of a staged volume, for NodeUnstageVolume and for
    /// process shutdown. Blocking. Resumable: whatever fails stays here, and
    /// a second call goes on from there.
    pub fn tear_down(&mut self) -> Result<(), NodeError> {
        while let Some(target) = self.targets.first().cloned() {
            mount::unmount_if_mounted(&target)?;
            self.targets.remove(&target);
        }
        if let Some(stack) = &mut self.stack {
            stack.teardown().map_err(|source| NodeError::Unstage {
                volume: self.context.volume_id.clone(),
                source: Box::new(source),
            })?;
            self.stack = None;
        }
        Ok(())
    }
}
