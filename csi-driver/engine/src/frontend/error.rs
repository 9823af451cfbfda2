//! Errors of the host side's export stack (FUSE, loop, filesystem).

use std::path::PathBuf;

/// One variant per step of staging or unstaging a volume.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("create mount directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mount FUSE export of volume {volume} at {path}: {source}")]
    MountFuse {
        volume: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unmount FUSE export at {path} (the export stays staged, retry the unstage): {source}")]
    UnmountFuse {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("make {path} a shared mount point (or remove its bind mount): {source}")]
    MakeShared {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("attach {file} as a loop device: {cause}")]
    AttachLoop { file: PathBuf, cause: String },
    #[error("detach loop device {device}: {cause}")]
    DetachLoop { device: PathBuf, cause: String },
    #[error(
        "loop device {device} still holds {file} {waited:?} after it was detached: another \
         process has the device open, or another mount namespace still mounts the filesystem \
         on it (seen: {holders}); the export stays staged, retry the unstage"
    )]
    LoopNotReleased {
        device: PathBuf,
        file: PathBuf,
        waited: std::time::Duration,
        /// Who was seen holding it when the wait gave up.
        holders: String,
    },
    #[error("probe {device} for a filesystem: {cause}")]
    Probe { device: PathBuf, cause: String },
    #[error("{device} holds {found:?}, not the requested {wanted}; refusing to touch it")]
    FilesystemMismatch {
        device: PathBuf,
        found: String,
        wanted: String,
    },
    #[error("format {device} as {fs_type}: {cause}")]
    Format {
        device: PathBuf,
        fs_type: String,
        cause: String,
    },
    #[error("grow the ext4 filesystem on {device} before mounting it: {cause}")]
    GrowExt4 { device: PathBuf, cause: String },
    #[error("mount {device} at {path}: {cause}")]
    Mount {
        device: PathBuf,
        path: PathBuf,
        cause: String,
    },
    #[error("unmount {path}: {cause}")]
    Unmount { path: PathBuf, cause: String },
    #[error("volume {volume}: query its size: {source}")]
    QuerySize {
        volume: String,
        source: super::target::TargetError,
    },
    #[error("volume {volume} is {current} bytes; refusing to shrink it to {requested}")]
    ShrinkRefused {
        volume: String,
        current: u64,
        requested: u64,
    },
    #[error("volume {volume}: invalidate the FUSE file's attributes: {source}")]
    InvalidateAttributes {
        volume: String,
        source: std::io::Error,
    },
    #[error("stat {path}: {source}")]
    StatExport {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} shows {seen} bytes after growing it to {expected}")]
    SizeNotSeen {
        path: PathBuf,
        expected: u64,
        seen: u64,
    },
    #[error("set the capacity of loop device {device}: {cause}")]
    SetLoopCapacity { device: PathBuf, cause: String },
    #[error("volume {volume}: resize task failed: {cause}")]
    ResizeTask { volume: String, cause: String },
    #[error("volume {volume}: the export is broken: {cause}")]
    ExportBroken { volume: String, cause: String },
    #[error("volume {volume} is not staged (its export is torn down)")]
    NotStaged { volume: String },
    #[error("run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}
