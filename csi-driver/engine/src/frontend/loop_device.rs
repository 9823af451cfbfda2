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
        let output = Command::new("losetup")
            .args(["--find", "--show", "--direct-io=on"])
            .arg(file)
            .output()
            .map_err(|source| FrontendError::Spawn {
                program: "losetup".into(),
                source,
            })?;
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

    pub fn detach(mut self) -> Result<(), FrontendError> {
        self.detach_inner()
    }

    fn detach_inner(&mut self) -> Result<(), FrontendError> {
        let Some(device) = self.device.take() else {
            return Ok(());
        };
        let output = Command::new("losetup")
            .arg("--detach")
            .arg(&device)
            .output()
            .map_err(|source| FrontendError::Spawn {
                program: "losetup".into(),
                source,
            })?;
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
