//! Mount-table work of the node plugin: is a path a mount point, bind mounts
//! (read-only when asked), unmount, file system usage and growth.
//!
//! Everything here is idempotent the way the CSI node RPCs need it: binding
//! onto a path that is already a mount point, or unmounting a path that is
//! not one, is not an error for the caller to handle.

use std::path::Path;
use std::process::Command;

use nix::mount::{MntFlags, MsFlags};

use super::error::NodeError;

/// Undoes the octal escapes (`\040` for a space) of /proc/self/mountinfo.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points listed in a mountinfo text (field 5 of each line).
pub fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape)
        .collect()
}

/// Whether `path` is a mount point in this process's mount namespace.
pub fn is_mount_point(path: &Path) -> Result<bool, NodeError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|source| NodeError::ReadMountTable { source })?;
    let wanted = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let wanted = wanted.to_string_lossy();
    Ok(mount_points(&text).iter().any(|p| *p == wanted))
}

/// Bind-mounts `source` onto `target` (which must exist), read-only when
/// asked. A target that is already a mount point is left as it is.
pub fn bind(source: &Path, target: &Path, readonly: bool) -> Result<(), NodeError> {
    if is_mount_point(target)? {
        return Ok(());
    }
    let err = |cause: nix::Error| NodeError::BindMount {
        source_path: source.to_owned(),
        target: target.to_owned(),
        cause: cause.to_string(),
    };
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err)?;
    if readonly {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            // Never leave a writable bind behind a read-only request.
            let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
            return Err(err(e));
        }
    }
    Ok(())
}

/// Unmounts `path` while it is a mount point: a stack that a crashed
/// plugin left may hold more than one mount there (the filesystem on the
/// shared bind mount under it).
pub fn unmount_if_mounted(path: &Path) -> Result<(), NodeError> {
    // A bound on the layers, so that a path that stays mounted whatever is
    // unmounted is an error rather than a loop.
    for _ in 0..4 {
        if !is_mount_point(path)? {
            return Ok(());
        }
        nix::mount::umount2(path, MntFlags::empty()).map_err(|e| NodeError::Unmount {
            path: path.to_owned(),
            cause: e.to_string(),
        })?;
    }
    Err(NodeError::Unmount {
        path: path.to_owned(),
        cause: "still a mount point after unmounting four layers".into(),
    })
}

/// Usage of the file system mounted at `path`: (bytes total, available,
/// used, inodes total, free, used).
pub struct FsUsage {
    pub bytes_total: u64,
    pub bytes_available: u64,
    pub bytes_used: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
    pub inodes_used: u64,
}

pub fn fs_usage(path: &Path) -> Result<FsUsage, NodeError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| NodeError::Statfs {
        path: path.to_owned(),
        cause: e.to_string(),
    })?;
    let frsize = st.fragment_size() as u64;
    let total = st.blocks() as u64 * frsize;
    let free = st.blocks_free() as u64 * frsize;
    let avail = st.blocks_available() as u64 * frsize;
    let inodes = st.files() as u64;
    let inodes_free = st.files_free() as u64;
    Ok(FsUsage {
        bytes_total: total,
        bytes_available: avail,
        bytes_used: total.saturating_sub(free),
        inodes_total: inodes,
        inodes_free,
        inodes_used: inodes.saturating_sub(inodes_free),
    })
}

/// Size of a block device in bytes (`blockdev --getsize64`).
pub fn device_size(device: &Path) -> Result<u64, NodeError> {
    let out = run(
        Command::new("blockdev").arg("--getsize64").arg(device),
        "blockdev",
    )?;
    String::from_utf8_lossy(&out)
        .trim()
        .parse()
        .map_err(|_| NodeError::Tool {
            tool: "blockdev",
            cause: format!("unreadable size for {}", device.display()),
        })
}

/// Grows the file system on `device`, mounted at `mount_path`, to fill the
/// device (online: ext4 and xfs both grow while mounted).
pub fn grow_filesystem(device: &Path, mount_path: &Path, fs_type: &str) -> Result<(), NodeError> {
    match fs_type {
        "xfs" => run(Command::new("xfs_growfs").arg(mount_path), "xfs_growfs")?,
        _ => run(Command::new("resize2fs").arg(device), "resize2fs")?,
    };
    Ok(())
}

fn run(cmd: &mut Command, tool: &'static str) -> Result<Vec<u8>, NodeError> {
    let out = cmd.output().map_err(|e| NodeError::Tool {
        tool,
        cause: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(NodeError::Tool {
            tool,
            cause: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_mount_points_are_unescaped() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 0:5 / /var/lib/kubelet/pods/x rw - tmpfs tmpfs rw\n";
        assert_eq!(
            mount_points(text),
            vec![
                "/mnt/with space".to_owned(),
                "/var/lib/kubelet/pods/x".to_owned()
            ]
        );
    }

    /// Needs root (mount(2)).
    #[test]
    fn read_only_bind_refuses_writes_and_unmount_is_idempotent() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let source = tmp.path().join("source");
        let target = tmp.path().join("target");
        std::fs::create_dir_all(&source).expect("source");
        std::fs::create_dir_all(&target).expect("target");
        std::fs::write(source.join("f"), b"x").expect("file");
        bind(&source, &target, true).expect("bind");
        assert!(is_mount_point(&target).expect("mountinfo"));
        // Binding again is a no-op.
        bind(&source, &target, true).expect("bind again");
        assert_eq!(std::fs::read(target.join("f")).expect("read"), b"x");
        let err = std::fs::write(target.join("g"), b"y").expect_err("read-only");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
        unmount_if_mounted(&target).expect("unmount");
        assert!(!is_mount_point(&target).expect("mountinfo"));
        unmount_if_mounted(&target).expect("unmount again");
    }
}
