//! Filesystems on a staged volume: probe, format only when empty, mount,
//! unmount.
//!
//! The rule that matters: a device that holds any filesystem or other
//! signature (partition table, RAID member, LUKS, ...) is never formatted.
//! `blkid -p` (a low-level probe that reads the device, not a cache) decides;
//! only its "nothing found" answer lets mkfs run.

use std::fmt;
use std::path::Path;
use std::process::Command;

use tracing::info;

use super::error::FrontendError;

/// Filesystems Roam formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Ext4,
    Xfs,
}

impl FsType {
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }

    /// Parses a CSI `fs_type` (empty means ext4).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "" | "ext4" => Some(FsType::Ext4),
            "xfs" => Some(FsType::Xfs),
            _ => None,
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a low-level probe found on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// No filesystem and no other signature.
    Empty,
    /// A filesystem of this type (`TYPE=` from blkid).
    Filesystem(String),
    /// Some other signature (`PTTYPE=`, ...): the whole `KEY=value` list.
    Other(String),
}

/// Reads `blkid -p -o export` output into a [`Probe`].
pub fn parse_probe(export: &str) -> Probe {
    let mut fs_type = None;
    let mut keys = Vec::new();
    let lines = export.lines().map(str::trim);
    for line in lines.filter(|l| !l.is_empty() && !l.starts_with("DEVNAME=")) {
        if let Some(t) = line.strip_prefix("TYPE=") {
            fs_type = Some(t.to_owned());
        }
        keys.push(line.to_owned());
    }
    match fs_type {
        Some(t) => Probe::Filesystem(t),
        None if keys.is_empty() => Probe::Empty,
        None => Probe::Other(keys.join(" ")),
    }
}

fn run(program: &str, cmd: &mut Command) -> Result<std::process::Output, FrontendError> {
    cmd.output().map_err(|source| FrontendError::Spawn {
        program: program.into(),
        source,
    })
}

fn stderr_of(output: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if err.is_empty() {
        format!("exit status {}", output.status)
    } else {
        err
    }
}

/// Probes `device` with `blkid -p`. Exit code 2 is blkid's "nothing found".
pub fn probe(device: &Path) -> Result<Probe, FrontendError> {
    let output = run(
        "blkid",
        Command::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(device),
    )?;
    match output.status.code() {
        Some(0) => Ok(parse_probe(&String::from_utf8_lossy(&output.stdout))),
        Some(2) => Ok(Probe::Empty),
        _ => Err(FrontendError::Probe {
            device: device.to_owned(),
            cause: stderr_of(&output),
        }),
    }
}

/// Formats `device` as `fs_type` only if the probe finds nothing on it.
/// Returns whether it formatted. A device holding `fs_type` already is left
/// alone; one holding anything else is refused.
pub fn format_if_unformatted(device: &Path, fs_type: FsType) -> Result<bool, FrontendError> {
    match probe(device)? {
        Probe::Filesystem(found) if found == fs_type.name() => Ok(false),
        Probe::Filesystem(found) | Probe::Other(found) => Err(FrontendError::FilesystemMismatch {
            device: device.to_owned(),
            found,
            wanted: fs_type.name().into(),
        }),
        Probe::Empty => {
            let mut cmd = match fs_type {
                FsType::Ext4 => {
                    let mut c = Command::new("mkfs.ext4");
                    c.args(["-q", "-E", "nodiscard"]);
                    c
                }
                FsType::Xfs => {
                    let mut c = Command::new("mkfs.xfs");
                    c.args(["-q", "-K"]);
                    c
                }
            };
            let program = format!("mkfs.{fs_type}");
            let output = run(&program, cmd.arg(device))?;
            if !output.status.success() {
                return Err(FrontendError::Format {
                    device: device.to_owned(),
                    fs_type: fs_type.name().into(),
                    cause: stderr_of(&output),
                });
            }
            info!(device = %device.display(), %fs_type, "formatted");
            Ok(true)
        }
    }
}

/// Size in bytes of the ext4 filesystem whose first 2 KiB are `head`
/// (the superblock sits at byte 1024), or `None` when it is not ext4.
pub fn ext4_size(head: &[u8]) -> Option<u64> {
    let sb = head.get(1024..2048)?;
    let u32_at = |at: usize| u32::from_le_bytes(sb[at..at + 4].try_into().unwrap_or_default());
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return None;
    }
    let block_size = 1024u64.checked_shl(u32_at(0x18))?;
    let mut blocks = u64::from(u32_at(0x04));
    const INCOMPAT_64BIT: u32 = 0x80;
    if u32_at(0x60) & INCOMPAT_64BIT != 0 {
        blocks |= u64::from(u32_at(0x150)) << 32;
    }
    blocks.checked_mul(block_size)
}

/// Grows an unmounted ext4 filesystem on `device` to fill it, when the
/// device grew since the filesystem was made (an expansion while the volume
/// was not staged). Offline, because ext4's online resize needs
/// CAP_SYS_RESOURCE on top of CAP_SYS_ADMIN; a check first, because
/// resize2fs refuses a filesystem that was not checked since it was last
/// mounted. Returns whether it grew.
pub fn grow_ext4_before_mount(device: &Path) -> Result<bool, FrontendError> {
    let fail = |cause: String| FrontendError::GrowExt4 {
        device: device.to_owned(),
        cause,
    };
    let mut head = vec![0u8; 2048];
    std::fs::File::open(device)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .map_err(|e| fail(format!("read the superblock: {e}")))?;
    let fs_bytes = ext4_size(&head).ok_or_else(|| fail("no ext4 superblock".into()))?;
    let device_bytes = super::loop_device::size_bytes(device)?;
    // mkfs may leave a few MiB at the end unused (a last block group too
    // small to keep); only a real expansion is worth a full check.
    if device_bytes <= fs_bytes + (16 << 20) {
        return Ok(false);
    }
    let check = run(
        "e2fsck",
        Command::new("e2fsck").args(["-f", "-p"]).arg(device),
    )?;
    // 0: clean; 1: errors corrected. Anything else needs a person.
    if !matches!(check.status.code(), Some(0 | 1)) {
        return Err(fail(format!("e2fsck: {}", stderr_of(&check))));
    }
    let grow = run("resize2fs", Command::new("resize2fs").arg(device))?;
    if !grow.status.success() {
        return Err(fail(format!("resize2fs: {}", stderr_of(&grow))));
    }
    info!(device = %device.display(), from = fs_bytes, to = device_bytes, "ext4 grown before mount");
    Ok(true)
}

/// Mounts `device` at `path` (an existing directory).
pub fn mount(
    device: &Path,
    path: &Path,
    fs_type: FsType,
    options: &[String],
) -> Result<(), FrontendError> {
    let mut opts = vec!["noatime".to_owned()];
    opts.extend(options.iter().cloned());
    let output = run(
        "mount",
        Command::new("mount")
            .args(["-t", fs_type.name(), "-o", &opts.join(",")])
            .arg(device)
            .arg(path),
    )?;
    if !output.status.success() {
        return Err(FrontendError::Mount {
            device: device.to_owned(),
            path: path.to_owned(),
            cause: stderr_of(&output),
        });
    }
    info!(device = %device.display(), path = %path.display(), "mounted");
    Ok(())
}

/// Unmounts `path` (the filesystem writes itself out first).
pub fn unmount(path: &Path) -> Result<(), FrontendError> {
    let output = run("umount", Command::new("umount").arg(path))?;
    if !output.status.success() {
        return Err(FrontendError::Unmount {
            path: path.to_owned(),
            cause: stderr_of(&output),
        });
    }
    info!(path = %path.display(), "unmounted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_is_read_as_filesystem_other_or_empty() {
        assert_eq!(
            parse_probe("DEVNAME=/dev/loop0\nUUID=x\nVERSION=1.0\nTYPE=ext4\nUSAGE=filesystem\n"),
            Probe::Filesystem("ext4".into())
        );
        assert_eq!(
            parse_probe("DEVNAME=/dev/loop0\nPTTYPE=gpt\n"),
            Probe::Other("PTTYPE=gpt".into())
        );
        assert_eq!(parse_probe("DEVNAME=/dev/loop0\n"), Probe::Empty);
    }

    #[test]
    fn ext4_size_is_read_from_the_superblock() {
        let mut head = vec![0u8; 2048];
        let sb = &mut head[1024..];
        sb[0x38..0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        sb[0x04..0x08].copy_from_slice(&16384u32.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes()); // 4 KiB blocks
        assert_eq!(ext4_size(&head), Some(64 << 20));
        // 64-bit block counts use the high word.
        head[1024 + 0x60..1024 + 0x64].copy_from_slice(&0x80u32.to_le_bytes());
        head[1024 + 0x150..1024 + 0x154].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(ext4_size(&head), Some(((1u64 << 32) + 16384) * 4096));
        // Not ext4, or too short.
        head[1024 + 0x38] = 0;
        assert_eq!(ext4_size(&head), None);
        assert_eq!(ext4_size(&head[..100]), None);
    }

    #[test]
    fn csi_fs_type_names_parse() {
        assert_eq!(FsType::parse(""), Some(FsType::Ext4));
        assert_eq!(FsType::parse("xfs"), Some(FsType::Xfs));
        assert_eq!(FsType::parse("btrfs"), None);
    }
}
