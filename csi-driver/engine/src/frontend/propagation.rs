//! Mount propagation for the export stack's mount points.
//!
//! A mount namespace made while a volume is staged (`ip netns exec`, a
//! systemd service with private mounts, `unshare --propagation slave`) starts
//! with copies of every mount, the FUSE export and the filesystem on the loop
//! device among them. A copy of the filesystem keeps the loop device open,
//! and so the volume's file busy, for as long as that namespace lives, and no
//! teardown can wait that out. When the mount a copy was made from sits on a
//! shared mount, the copy is its slave and goes away with the unmount here.
//! On a Kubernetes node the kubelet's directory and the plugin's own are
//! shared already; elsewhere (a host whose `/` is private) [`SharedMountPoint`]
//! makes the mount point a shared mount of its own first: a bind mount of the
//! directory onto itself, marked shared, that the export is mounted on and
//! that teardown removes after it.

use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use tracing::debug;

use super::error::FrontendError;

/// A directory that is a shared mount point for as long as this lives; see
/// the module doc.
#[derive(Debug)]
pub struct SharedMountPoint {
    path: PathBuf,
    /// Whether this made a bind mount of its own (and so removes it).
    bound: bool,
}

impl SharedMountPoint {
    /// Makes `path` (an existing directory) a shared mount point, unless the
    /// mount it lies on propagates already. Blocking.
    pub fn make(path: &Path) -> Result<Self, FrontendError> {
        let fail = |e: nix::Error| FrontendError::MakeShared {
            path: path.to_owned(),
            source: e.into(),
        };
        if lies_on_shared_mount(path) {
            return Ok(Self {
                path: path.to_owned(),
                bound: false,
            });
        }
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(fail)?;
        let shared = Self {
            path: path.to_owned(),
            bound: true,
        };
        mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .map_err(fail)?;
        debug!(path = %path.display(), "made a shared mount point");
        Ok(shared)
    }

    /// Removes the bind mount this made, once whatever was mounted on it is
    /// gone. Resumable; a no-op after success.
    pub fn release(&mut self) -> Result<(), FrontendError> {
        if !self.bound {
            return Ok(());
        }
        match nix::mount::umount(&self.path) {
            // EINVAL: not a mount point any more (removed by hand).
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {
                self.bound = false;
                Ok(())
            }
            Err(e) => Err(FrontendError::MakeShared {
                path: self.path.clone(),
                source: e.into(),
            }),
        }
    }
}

impl Drop for SharedMountPoint {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!("{e:#}");
        }
    }
}

/// Whether the mount that `path` lies on (the longest mount point above or
/// at it in /proc/self/mountinfo) has shared propagation.
fn lies_on_shared_mount(path: &Path) -> bool {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = Path::new(*fields.get(4)?);
            // Optional fields run from the seventh to the "-" separator.
            let shared = fields
                .iter()
                .skip(6)
                .take_while(|f| **f != "-")
                .any(|f| f.starts_with("shared:"));
            path.starts_with(point)
                .then_some((point.as_os_str().len(), shared))
        })
        // The last of equally long ones is the one on top.
        .max_by_key(|(len, _)| *len)
        .is_some_and(|(_, shared)| shared)
}
