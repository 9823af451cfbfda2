//! Loop devices: a file shown as a block device (`losetup`, direct I/O so the
//! loop driver does not keep a second page cache over the FUSE file).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::error::FrontendError;

/// How often a teardown looks again whether the kernel let go.
const RELEASE_POLL: Duration = Duration::from_millis(10);

/// An attached loop device. Detach with [`LoopDevice::detach`]; dropping it
/// detaches too.
#[derive(Debug)]
pub struct LoopDevice {
    /// None once detached and released.
    device: Option<PathBuf>,
    /// The backing file, as the caller named it.
    file: PathBuf,
    /// The backing file as sysfs names it (the kernel's own path for it),
    /// read right after the attach: what "still holds the file" compares.
    backing: String,
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
        let backing = backing_file(&device).unwrap_or_else(|| file.to_string_lossy().into_owned());
        Ok(Self {
            device: Some(device),
            file: file.to_owned(),
            backing,
        })
    }

    /// The loop device still attached to `file` by an earlier process (one
    /// that died without tearing its stack down), found through sysfs;
    /// None when no device holds it.
    pub fn find_attached(file: &Path) -> Option<Self> {
        let wanted = file.to_string_lossy();
        let entries = std::fs::read_dir("/sys/block").ok()?;
        entries
            .filter_map(Result::ok)
            .map(|entry| Path::new("/dev").join(entry.file_name()))
            .find(|device| backing_file(device).is_some_and(|backing| backing == wanted))
            .map(|device| Self {
                backing: wanted.into_owned(),
                device: Some(device),
                file: file.to_owned(),
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

    /// Detaches the device and waits, up to `timeout`, until the kernel has
    /// really let go of the backing file.
    ///
    /// `losetup --detach` of a device that someone still has open (udev,
    /// blkid, a monitoring agent, a pod) only marks it for autoclear: the
    /// kernel drops its reference to the file when the last opener closes
    /// the device. Until then the file is busy, so whatever is under it (the
    /// FUSE export) cannot be unmounted. Resumable: after an error the
    /// device stays tracked and a second call goes on where the first
    /// stopped; after success it is a no-op.
    pub fn detach(&mut self, timeout: Duration) -> Result<(), FrontendError> {
        let Some(device) = self.device.clone() else {
            return Ok(());
        };
        if self.holds_file(&device) && loop_attr(&device, "autoclear").as_deref() != Some("1") {
            let output = losetup(&["--detach"], &device)?;
            // It may have let go between the look and the call.
            if !output.status.success() && self.holds_file(&device) {
                return Err(FrontendError::DetachLoop {
                    device,
                    cause: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                });
            }
        }
        let deadline = Instant::now() + timeout;
        while self.holds_file(&device) {
            if Instant::now() >= deadline {
                return Err(FrontendError::LoopNotReleased {
                    holders: holders(&device),
                    device,
                    file: self.file.clone(),
                    waited: timeout,
                });
            }
            std::thread::sleep(RELEASE_POLL);
        }
        info!(device = %device.display(), "loop device detached and released");
        self.device = None;
        Ok(())
    }

    /// Whether the device is attached and still bound to its backing file.
    pub fn holds_its_file(&self) -> bool {
        self.device
            .as_deref()
            .is_some_and(|device| self.holds_file(device))
    }

    /// Whether `device` is still bound to this device's backing file. A
    /// device that is unbound, or already bound to another file (reused
    /// after the release), does not hold it.
    fn holds_file(&self, device: &Path) -> bool {
        backing_file(device).is_some_and(|backing| backing == self.backing)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Err(e) = self.detach(DEFAULT_RELEASE_TIMEOUT) {
            warn!("{e:#}");
        }
    }
}

/// How long a teardown waits for the kernel to let go of a loop device's
/// backing file before it gives up with [`FrontendError::LoopNotReleased`]
/// (and leaves the rest for a retry).
pub const DEFAULT_RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who holds `device`, for an error message: processes with it open, and
/// one process of each other mount namespace that mounts a filesystem from
/// it (a namespace made while the volume was mounted keeps a copy of the
/// mount). Read from /proc; "nobody seen" when neither is found.
fn holders(device: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(rdev) = std::fs::metadata(device).map(|m| m.rdev()) else {
        return "nobody seen".into();
    };
    // mountinfo's third field is the mounted device as major:minor.
    let dev_field = format!("{}:{}", libc::major(rdev), libc::minor(rdev));
    let own_ns = std::fs::read_link("/proc/self/ns/mnt").ok();
    let mut seen_ns = std::collections::BTreeSet::new();
    let mut found = Vec::new();
    let pids = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    for pid in pids.filter(|e| {
        e.file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
    }) {
        let proc_dir = pid.path();
        let comm = std::fs::read_to_string(proc_dir.join("comm")).unwrap_or_default();
        let who = format!(
            "pid {} ({})",
            pid.file_name().to_string_lossy(),
            comm.trim()
        );
        let opened = std::fs::read_dir(proc_dir.join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == device));
        if opened {
            found.push(format!("{who} has it open"));
        }
        let ns = std::fs::read_link(proc_dir.join("ns/mnt")).ok();
        if ns.is_some() && ns != own_ns && seen_ns.insert(ns) {
            let mounts = std::fs::read_to_string(proc_dir.join("mountinfo")).unwrap_or_default();
            if mounts
                .lines()
                .any(|line| line.split(' ').nth(2) == Some(dev_field.as_str()))
            {
                found.push(format!("{who} is in a mount namespace that mounts it"));
            }
        }
    }
    if found.is_empty() {
        "nobody seen".into()
    } else {
        found.join(", ")
    }
}

/// The file `device` is bound to, as sysfs names it; None when unbound.
fn backing_file(device: &Path) -> Option<String> {
    let backing = loop_attr(device, "backing_file")?;
    // sysfs appends " (deleted)" to a file that was unlinked meanwhile.
    Some(match backing.strip_suffix(" (deleted)") {
        Some(path) => path.to_owned(),
        None => backing,
    })
}

/// `/sys/block/<name>/loop/<attr>`, trimmed; None when the device is not
/// bound to a file (the `loop` directory exists only while it is).
fn loop_attr(device: &Path, attr: &str) -> Option<String> {
    let name = device.file_name()?.to_string_lossy();
    std::fs::read_to_string(format!("/sys/block/{name}/loop/{attr}"))
        .ok()
        .map(|text| text.trim_end_matches('\n').to_owned())
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
