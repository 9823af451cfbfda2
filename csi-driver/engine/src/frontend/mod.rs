//! Frontend: how a host sees a volume (claim 12, the host's read and write
//! request issue processes).
//!
//! A volume reaches the host as a [`BlockTarget`]: something with a size that
//! can be read, written (optionally with force unit access) and flushed. Two
//! targets exist:
//! - [`RemoteTarget`] speaks the storage system API's `Read`/`Write`/`Flush`
//!   to the primary's storage system over gRPC, carrying the epoch the host
//!   logged in with;
//! - [`LocalTarget`] calls this storage system's own replica (the engine's
//!   volume handle) when the primary is on the host's node, at the epoch the
//!   host logged in with;
//! - [`FileTarget`] serves a plain local file (the frontend's own ceiling in
//!   benchmarks, and a volume without replication).
//!
//! The export path is FUSE -> loop -> filesystem, because this kernel has no
//! NBD, ublk or iSCSI: [`FuseExport`] shows the target as the single regular
//! file of a FUSE filesystem (direct I/O, 1 MiB writes, requests served
//! concurrently on a tokio runtime), [`LoopDevice`] attaches that file as a
//! block device with direct I/O ([`BlockExport`] owns the two, and is what a
//! raw block volume is), and [`filesystem`] formats it only when it holds no
//! filesystem or signature at all, then mounts it. [`StagedVolume`] owns the
//! whole stack and tears it down in reverse order; teardown waits for the
//! kernel to let go of the loop device's file before it unmounts the FUSE
//! export, and is resumable after an error.
//!
//! Guarantees: a write is acknowledged to the kernel only after the target
//! acknowledged it; `fsync`/`fdatasync` on the file (which the loop driver
//! sends for a block-layer flush or FUA) completes only after the target's
//! flush did. An error from the target becomes `EIO` for the kernel, and is
//! logged once with the volume, offset and cause.
//!
//! Caveats: discard is not passed through (the FUSE file answers
//! `EOPNOTSUPP` to `fallocate`, and mkfs is told not to discard). A new block
//! target type (NBD, ublk) would implement [`BlockTarget`] and replace only
//! the FUSE and loop layers.

mod error;
mod export;
mod file_target;
pub mod filesystem;
mod fuse_export;
mod local_target;
mod loop_device;
mod propagation;
mod remote_target;
mod staged;
mod target;

pub use error::FrontendError;
pub use export::{BlockExport, clear_dead_export};
pub use file_target::FileTarget;
pub use filesystem::FsType;
pub use fuse_export::{ExportedSize, FuseExport, VOLUME_FILE_NAME};
pub use local_target::LocalTarget;
pub use loop_device::{DEFAULT_RELEASE_TIMEOUT, LoopDevice};
pub use remote_target::RemoteTarget;
pub use staged::{StageOptions, StagedVolume};
pub use target::{BlockTarget, TargetError};
