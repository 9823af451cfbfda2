//! A block export: a volume's FUSE export and the loop device over its file.
//! This is what a raw block volume hands to a pod, and what a filesystem is
//! mounted from ([`super::StagedVolume`]).
//!
//! Expected flow: [`BlockExport::attach`] makes the FUSE directory a shared
//! mount point where it is not (see `propagation`), mounts the FUSE export
//! and attaches its file to a loop device; [`BlockExport::teardown`] detaches
//! the loop device, waits until the kernel has let go of the file, and only
//! then unmounts the FUSE export, joins its threads and removes the shared
//! mount point.
//!
//! Guarantees: teardown is the one place the stack comes apart, and it is
//! resumable. A step that fails (the loop device still held by another
//! process past the release timeout, the export still busy) leaves that step
//! and every later one tracked, so a second call (a retried NodeUnstage)
//! finishes the job; nothing is dropped on an error path with a mount left
//! behind. Dropping the export tears it down too, and logs what failed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tracing::error;

use super::error::FrontendError;
use super::fuse_export::{FuseExport, VOLUME_FILE_NAME};
use super::loop_device::{self, DEFAULT_RELEASE_TIMEOUT, LoopDevice};
use super::propagation::SharedMountPoint;
use super::target::BlockTarget;

/// The FUSE export and the loop device over it; see the module doc.
pub struct BlockExport {
    volume: String,
    target: Arc<dyn BlockTarget>,
    device: Option<LoopDevice>,
    fuse: Option<FuseExport>,
    /// Under the FUSE mount: see [`SharedMountPoint`]. Declared last, so
    /// that a drop releases it after the rest.
    fuse_dir: Option<SharedMountPoint>,
    release_timeout: Duration,
}

impl BlockExport {
    /// Mounts the FUSE export of `target` at `fuse_dir` (created if missing)
    /// and attaches its file to a loop device. Blocking; `runtime` serves the
    /// FUSE requests and must not be blocked by the caller meanwhile. A
    /// failure half way undoes the first half.
    pub fn attach(
        target: Arc<dyn BlockTarget>,
        runtime: Handle,
        fuse_dir: &Path,
    ) -> Result<Self, FrontendError> {
        std::fs::create_dir_all(fuse_dir).map_err(|source| FrontendError::CreateDir {
            path: fuse_dir.to_owned(),
            source,
        })?;
        let mut export = BlockExport {
            volume: target.volume_id().to_owned(),
            target: Arc::clone(&target),
            device: None,
            fuse: None,
            fuse_dir: None,
            release_timeout: DEFAULT_RELEASE_TIMEOUT,
        };
        export.fuse_dir = Some(SharedMountPoint::make(fuse_dir)?);
        let fuse = FuseExport::mount(target, fuse_dir, runtime)?;
        let file = fuse.volume_file();
        export.fuse = Some(fuse);
        export.device = Some(LoopDevice::attach(&file)?);
        Ok(export)
    }

    /// How long a teardown waits for the loop device to let go of the file
    /// (and for a busy export) before it gives up; default
    /// [`DEFAULT_RELEASE_TIMEOUT`].
    pub fn set_release_timeout(&mut self, timeout: Duration) {
        self.release_timeout = timeout;
    }

    /// The loop device, while attached.
    pub fn device(&self) -> Option<&Path> {
        self.device.as_ref().map(LoopDevice::path)
    }

    /// Grows the export to the size its target reports now: asks the target
    /// (the replica handle, the primary's storage system, or the file's
    /// length), makes the FUSE file show that size and sets the loop device's
    /// capacity to it. Returns the loop device's new size in bytes. A target
    /// that reports less than the exported size is refused with
    /// [`FrontendError::ShrinkRefused`] and nothing changes; no expansion in
    /// between makes it a no-op that returns the same size.
    pub async fn grow(&self) -> Result<u64, FrontendError> {
        let (Some(fuse), Some(device)) = (&self.fuse, &self.device) else {
            return Err(FrontendError::NotStaged {
                volume: self.volume.clone(),
            });
        };
        let volume = self.volume.clone();
        let new_size =
            self.target
                .refresh_size()
                .await
                .map_err(|source| FrontendError::QuerySize {
                    volume: volume.clone(),
                    source,
                })?;
        let size = fuse.size().clone();
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

    /// Whether the stack still carries I/O: the FUSE connection answers (a
    /// statfs of the volume file goes through it) and the loop device is still
    /// bound to that file. Blocking. A connection aborted (by hand, through
    /// `/sys/fs/fuse/connections/N/abort`) or a loop device detached under
    /// the volume's feet is [`FrontendError::ExportBroken`], with what was
    /// found.
    pub fn check_health(&self) -> Result<(), FrontendError> {
        let broken = |cause: String| FrontendError::ExportBroken {
            volume: self.volume.clone(),
            cause,
        };
        let (Some(fuse), Some(device)) = (&self.fuse, &self.device) else {
            return Err(broken("torn down".into()));
        };
        let file = fuse.volume_file();
        // statfs, not stat: the kernel answers a stat from its attribute
        // cache, while every statfs is a request to the export's server.
        nix::sys::statfs::statfs(&file)
            .map_err(|e| broken(format!("the FUSE export at {} fails: {e}", file.display())))?;
        if !device.holds_its_file() {
            return Err(broken(format!(
                "loop device {} no longer holds {}",
                device.path().display(),
                file.display()
            )));
        }
        Ok(())
    }

    /// Detaches the loop device, waits for the kernel to release the file,
    /// unmounts the FUSE export. Blocking. Resumable; see the module doc.
    pub fn teardown(&mut self) -> Result<(), FrontendError> {
        if let Some(device) = &mut self.device {
            device.detach(self.release_timeout)?;
            self.device = None;
        }
        if let Some(fuse) = &mut self.fuse {
            fuse.unmount(self.release_timeout)?;
            self.fuse = None;
        }
        if let Some(dir) = &mut self.fuse_dir {
            dir.release()?;
            self.fuse_dir = None;
        }
        Ok(())
    }
}

/// Clears what a process that died left of a block export at `fuse_dir`:
/// the loop device still attached to the export's file, then the FUSE mount
/// (dead: its server went with the process). Blocking. Nothing there is
/// success; so is a second call.
pub fn clear_dead_export(fuse_dir: &Path) -> Result<(), FrontendError> {
    if let Some(mut device) = LoopDevice::find_attached(&fuse_dir.join(VOLUME_FILE_NAME)) {
        device.detach(DEFAULT_RELEASE_TIMEOUT)?;
    }
    // The FUSE mount, then the shared bind mount under it, if there was one.
    for _ in 0..2 {
        match nix::mount::umount(fuse_dir) {
            Ok(()) => {}
            // EINVAL: not a mount point; ENOENT: no such directory.
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(FrontendError::UnmountFuse {
                    path: fuse_dir.to_owned(),
                    source: e.into(),
                });
            }
        }
    }
    Ok(())
}

impl Drop for BlockExport {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            error!(volume = %self.volume, "block export teardown: {e:#}");
        }
    }
}
