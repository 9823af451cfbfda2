//! Loop devices: a file shown as a block device (`losetup`, direct I/O so the
//! loop driver does not keep a second page cache over the FUSE file).

use std::path::{Path, PathBuf};
use std::process::Command;

use tracing::{info, warn};

use super::error::FrontendError;

/// An attached loop device. Detach with [`LoopDevice::detach`]; dropping it
/// detaches too.
#[derive(Debug)]
pub struct LoopDevice {
    device: Option<PathBuf>,
}

impl LoopDevice {
    /// Attaches `file` to the first free loop device, with direct I/O.
    pub fn attach(file: &Path) -> Result<Self, FrontendError> {
        let output = losetup(&["--find", "--show", "--direct-io=on"], file)?;
        if !output.status.success() {
            return Err(FrontendError::AttachLoop {
                file: file.to_owned(),
                cause: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        let device = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if device.as_os_str().is_empty() {
            return Err(FrontendError::AttachLoop {
                file: file.to_owned(),
                cause: "losetup printed no device".into(),
            });
        }
        info!(device = %device.display(), file = %file.display(), "loop device attached");
        Ok(Self {
            device: Some(device),
        })
    }

    /// The device node, e.g. `/dev/loop3`.
    pub fn path(&self) -> &Path {
        self.device.as_deref().unwrap_or(Path::new(""))
    }

    /// Makes the device's capacity follow its file's current size; see
    /// [`set_capacity`].
    pub fn set_capacity(&self) -> Result<u64, FrontendError> {
        set_capacity(self.path())
    }

    pub fn detach(mut self) -> Result<(), FrontendError> {
        self.detach_inner()
    }

    fn detach_inner(&mut self) -> Result<(), FrontendError> {
        let Some(device) = self.device.take() else {
            return Ok(());
        };
        let output = losetup(&["--detach"], &device)?;
        if !output.status.success() {
            return Err(FrontendError::DetachLoop {
                device,
                cause: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        info!(device = %device.display(), "loop device detached");
        Ok(())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Err(e) = self.detach_inner() {
            warn!("{e:#}");
        }
    }
}

/// Makes loop device `device`'s capacity follow its file's current size
/// (`losetup --set-capacity`, the LOOP_SET_CAPACITY ioctl) and returns the
/// device's size in bytes as the block layer now reports it.
pub fn set_capacity(device: &Path) -> Result<u64, FrontendError> {
    let output = losetup(&["--set-capacity"], device)?;
    if !output.status.success() {
        return Err(FrontendError::SetLoopCapacity {
            device: device.to_owned(),
            cause: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    size_bytes(device)
}

/// A block device's size in bytes (`/sys/block/<name>/size`, in 512-byte
/// sectors).
pub fn size_bytes(device: &Path) -> Result<u64, FrontendError> {
    let name = device.file_name().unwrap_or_default().to_string_lossy();
    let sysfs = format!("/sys/block/{name}/size");
    let fail = |cause: String| FrontendError::SetLoopCapacity {
        device: device.to_owned(),
        cause,
    };
    let text = std::fs::read_to_string(&sysfs).map_err(|e| fail(format!("read {sysfs}: {e}")))?;
    let sectors: u64 = text
        .trim()
        .parse()
        .map_err(|e| fail(format!("{sysfs} holds {:?}: {e}", text.trim())))?;
    Ok(sectors * 512)
}

/// Runs `losetup <flags> <path>` and returns what it printed; whether it
/// succeeded is the caller's to judge.
fn losetup(flags: &[&str], path: &Path) -> Result<std::process::Output, FrontendError> {
    Command::new("losetup")
        .args(flags)
        .arg(path)
        .output()
        .map_err(|source| FrontendError::Spawn {
            program: "losetup".into(),
            source,
        })
}
