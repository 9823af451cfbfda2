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
    #[error("unmount FUSE export at {path}: {source}")]
    UnmountFuse {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("attach {file} as a loop device: {cause}")]
    AttachLoop { file: PathBuf, cause: String },
    #[error("detach loop device {device}: {cause}")]
    DetachLoop { device: PathBuf, cause: String },
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
    #[error("mount {device} at {path}: {cause}")]
    Mount {
        device: PathBuf,
        path: PathBuf,
        cause: String,
    },
    #[error("unmount {path}: {cause}")]
    Unmount { path: PathBuf, cause: String },
    #[error("run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}
