//! A staged volume: the whole export stack of one volume on one host, owned
//! by one value so that it is torn down in order and completely.
//!
//! Expected flow: [`StagedVolume::stage`] mounts the FUSE export, attaches
//! its file to a loop device (a [`BlockExport`]), formats the device only if
//! it holds nothing, and mounts it; [`StagedVolume::teardown`] (or
//! [`StagedVolume::unstage`], or drop) unmounts the filesystem (which writes
//! itself out through the target), then tears the block export down: detach
//! the loop device, wait until the kernel let go of the file, unmount the
//! FUSE export, join its threads. A stage that fails half way undoes what it
//! had done before returning the error. A teardown that fails keeps every
//! step not yet done, so calling it again finishes the job.
//!
//! Growing (NodeExpandVolume): once the volume behind the target was
//! expanded, [`StagedVolume::grow`] makes the FUSE file and then the loop
//! device show the new size. It never touches the filesystem: growing that
//! (resize2fs, xfs_growfs) is the caller's next step. A shrink is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tracing::{instrument, warn};

use super::error::FrontendError;
use super::export::BlockExport;
use super::filesystem::{self, FsType};
use super::propagation::SharedMountPoint;
use super::target::BlockTarget;

/// How to stage a volume.
#[derive(Debug, Clone)]
pub struct StageOptions {
    /// Directory for the FUSE export's mountpoint (created if missing).
    pub fuse_dir: PathBuf,
    /// Where the filesystem is mounted (created if missing).
    pub mount_path: PathBuf,
    pub fs_type: FsType,
    /// Extra mount options (`noatime` is always set).
    pub mount_options: Vec<String>,
}

/// The mounted stack; see the module doc.
pub struct StagedVolume {
    volume: String,
    mount_path: PathBuf,
    mounted: bool,
    formatted: bool,
    /// Under the filesystem's mount: see `propagation`.
    shared_mount_path: Option<SharedMountPoint>,
    export: BlockExport,
}

impl StagedVolume {
    /// Builds the stack. Blocking (it runs mount tools): call it from a
    /// blocking thread when inside an async context. `runtime` serves the
    /// FUSE requests and must not be blocked by the caller meanwhile.
    #[instrument(skip_all, fields(volume = target.volume_id(), path = %options.mount_path.display()))]
    pub fn stage(
        target: Arc<dyn BlockTarget>,
        runtime: Handle,
        options: &StageOptions,
    ) -> Result<Self, FrontendError> {
        std::fs::create_dir_all(&options.mount_path).map_err(|source| {
            FrontendError::CreateDir {
                path: options.mount_path.clone(),
                source,
            }
        })?;
        let volume = target.volume_id().to_owned();
        let export = BlockExport::attach(target, runtime, &options.fuse_dir)?;
        let device_path = export.device().unwrap_or(Path::new("")).to_owned();
        let mut staged = StagedVolume {
            volume,
            mount_path: options.mount_path.clone(),
            mounted: false,
            formatted: false,
            shared_mount_path: None,
            export,
        };
        staged.shared_mount_path = Some(SharedMountPoint::make(&options.mount_path)?);
        staged.formatted = filesystem::format_if_unformatted(&device_path, options.fs_type)?;
        if !staged.formatted && options.fs_type == FsType::Ext4 {
            filesystem::grow_ext4_before_mount(&device_path)?;
        }
        filesystem::mount(
            &device_path,
            &options.mount_path,
            options.fs_type,
            &options.mount_options,
        )?;
        staged.mounted = true;
        Ok(staged)
    }

    /// Whether staging formatted the device (false: it held the filesystem).
    pub fn formatted(&self) -> bool {
        self.formatted
    }

    pub fn mount_path(&self) -> &Path {
        &self.mount_path
    }

    /// The loop device the filesystem is mounted from.
    pub fn device(&self) -> Option<&Path> {
        self.export.device()
    }

    /// See [`BlockExport::check_health`]; the filesystem's own state is the
    /// kernel's to report (it goes read-only on I/O errors).
    pub fn check_health(&self) -> Result<(), FrontendError> {
        self.export.check_health()
    }

    /// See [`BlockExport::set_release_timeout`].
    pub fn set_release_timeout(&mut self, timeout: Duration) {
        self.export.set_release_timeout(timeout);
    }

    /// Grows the exported volume to the size its target reports now; see
    /// [`BlockExport::grow`]. Does not touch the filesystem on it.
    #[instrument(skip_all, fields(volume = %self.volume))]
    pub async fn grow(&self) -> Result<u64, FrontendError> {
        self.export.grow().await
    }

    /// Tears the stack down and consumes it. On an error the value is
    /// dropped, and dropping tries the rest once more (and logs what still
    /// fails); a caller that can retry later keeps the value and calls
    /// [`StagedVolume::teardown`] instead.
    #[instrument(skip_all, fields(volume = %self.volume))]
    pub fn unstage(mut self) -> Result<(), FrontendError> {
        self.teardown()
    }

    /// Tears the stack down in order: the filesystem, then the block export
    /// (which waits for the loop device to let go of its file). Blocking.
    /// Resumable: after an error, calling it again goes on from the step
    /// that failed; after success it is a no-op.
    #[instrument(skip_all, fields(volume = %self.volume))]
    pub fn teardown(&mut self) -> Result<(), FrontendError> {
        self.unmount_filesystem();
        if let Some(shared) = &mut self.shared_mount_path {
            shared.release()?;
            self.shared_mount_path = None;
        }
        self.export.teardown()
    }

    fn unmount_filesystem(&mut self) {
        if !self.mounted {
            return;
        }
        if let Err(e) = filesystem::unmount(&self.mount_path) {
            // Leave nothing mounted: detach lazily, the kernel finishes once
            // the last user is gone. Until then the loop device stays held,
            // which the export's teardown waits for, or reports.
            warn!("{e:#}; unmounting lazily");
            let _ = std::process::Command::new("umount")
                .arg("--lazy")
                .arg(&self.mount_path)
                .status();
        }
        self.mounted = false;
    }
}

impl Drop for StagedVolume {
    /// The filesystem first (its shared mount point's own drop follows);
    /// the export's own drop then tears it down.
    fn drop(&mut self) {
        self.unmount_filesystem();
    }
}
