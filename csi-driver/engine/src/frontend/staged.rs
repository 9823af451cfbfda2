//! A staged volume: the whole export stack of one volume on one host, owned
//! by one value so that it is torn down in order and completely.
//!
//! Expected flow: [`StagedVolume::stage`] mounts the FUSE export, attaches
//! its file to a loop device, formats the device only if it holds nothing,
//! and mounts it; [`StagedVolume::unstage`] (or drop) unmounts the
//! filesystem (which writes itself out through the target), detaches the
//! loop device, and unmounts the FUSE export, joining its threads. A stage
//! that fails half way undoes what it had done before returning the error.
//!
//! Growing (NodeExpandVolume): once the volume behind the target was
//! expanded, [`StagedVolume::grow`] makes the FUSE file and then the loop
//! device show the new size. It never touches the filesystem: growing that
//! (resize2fs, xfs_growfs) is the caller's next step. A shrink is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::runtime::Handle;
use tracing::{error, instrument, warn};

use super::error::FrontendError;
use super::filesystem::{self, FsType};
use super::fuse_export::{ExportedSize, FuseExport};
use super::loop_device::{self, LoopDevice};
use super::target::BlockTarget;

/// Grows a FUSE export and the loop device over it to the size `target`
/// reports now; see [`StagedVolume::grow`]. Also for stacks without a
/// filesystem (raw block volumes).
pub async fn grow_export(
    target: &Arc<dyn BlockTarget>,
    fuse: &FuseExport,
    device: &LoopDevice,
) -> Result<u64, FrontendError> {
    let volume = target.volume_id().to_owned();
    let new_size = target
        .refresh_size()
        .await
        .map_err(|source| FrontendError::QuerySize {
            volume: volume.clone(),
            source,
        })?;
    let size: ExportedSize = fuse.size().clone();
    let device = device.path().to_owned();
    tokio::task::spawn_blocking(move || {
        size.grow(new_size)?;
        loop_device::set_capacity(&device)
    })
    .await
    .map_err(|e| FrontendError::ResizeTask {
        volume,
        cause: e.to_string(),
    })?
}

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
    target: Arc<dyn BlockTarget>,
    mount_path: PathBuf,
    mounted: bool,
    formatted: bool,
    loop_device: Option<LoopDevice>,
    fuse: Option<FuseExport>,
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
        for dir in [&options.fuse_dir, &options.mount_path] {
            std::fs::create_dir_all(dir).map_err(|source| FrontendError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        let mut staged = StagedVolume {
            volume: target.volume_id().to_owned(),
            target: Arc::clone(&target),
            mount_path: options.mount_path.clone(),
            mounted: false,
            formatted: false,
            loop_device: None,
            fuse: None,
        };
        let fuse = FuseExport::mount(target, &options.fuse_dir, runtime)?;
        let file = fuse.volume_file();
        staged.fuse = Some(fuse);
        let device = LoopDevice::attach(&file)?;
        let device_path = device.path().to_owned();
        staged.loop_device = Some(device);
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
        self.loop_device.as_ref().map(LoopDevice::path)
    }

    /// Grows the exported volume to the size its target reports now: asks
    /// the target (the replica handle, the primary's storage system via
    /// GetReplica, or the file's length), makes the FUSE file show that size
    /// and sets the loop device's capacity to it. Returns the loop device's
    /// new size in bytes. Does not touch the filesystem on it. A target that
    /// reports less than the exported size is refused with
    /// [`FrontendError::ShrinkRefused`] and nothing changes. Calling it again
    /// with no expansion in between is a no-op that returns the same size.
    #[instrument(skip_all, fields(volume = %self.volume))]
    pub async fn grow(&self) -> Result<u64, FrontendError> {
        let (Some(fuse), Some(device)) = (&self.fuse, &self.loop_device) else {
            return Err(FrontendError::NotStaged {
                volume: self.volume.clone(),
            });
        };
        grow_export(&self.target, fuse, device).await
    }

    /// Tears the stack down in order; the first error is returned after every
    /// later step was still tried.
    #[instrument(skip_all, fields(volume = %self.volume))]
    pub fn unstage(mut self) -> Result<(), FrontendError> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), FrontendError> {
        let mut first_error = None;
        if self.mounted {
            self.mounted = false;
            if let Err(e) = filesystem::unmount(&self.mount_path) {
                // Leave nothing mounted: detach lazily, the kernel finishes
                // once the last user is gone.
                warn!("{e:#}; unmounting lazily");
                let _ = std::process::Command::new("umount")
                    .arg("--lazy")
                    .arg(&self.mount_path)
                    .status();
                first_error.get_or_insert(e);
            }
        }
        if let Some(device) = self.loop_device.take()
            && let Err(e) = device.detach()
        {
            first_error.get_or_insert(e);
        }
        if let Some(fuse) = self.fuse.take()
            && let Err(e) = fuse.unmount()
        {
            first_error.get_or_insert(e);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for StagedVolume {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            error!(volume = %self.volume, "teardown: {e:#}");
        }
    }
}
