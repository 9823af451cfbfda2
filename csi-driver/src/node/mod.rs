//! CSI node service: the host side of a Roam volume (claim 12).
//!
//! NodeStageVolume connects the frontend to the primary's storage system
//! named in the publish context (the log-in's answer): directly to the
//! replica when that storage system runs in this process (the primary is on
//! this node), over gRPC otherwise. It exports the volume as
//! a file through FUSE, attaches it as a loop device and, in mount mode,
//! formats it only if it holds nothing, then mounts it at the staging path.
//! NodePublishVolume bind-mounts the staged file system (or the loop device
//! in block mode) at the pod's target path, read-only when asked.
//! NodeUnpublish and NodeUnstage undo exactly that and leave no mount, loop
//! device or FUSE thread behind.
//!
//! Guarantees: a volume that holds a file system is never formatted again,
//! whichever node stages it; every call is idempotent; a second call on a
//! volume while one is running gets ABORTED.
//!
//! Caveats: what is staged lives in this process's memory. If the plugin
//! restarts, its FUSE exports die with it. The next run reports them as
//! lost ([`health`]: NodeGetVolumeStats, the VirtualVolume's conditions); a
//! later NodeUnstage still clears what is left, and the CO stages again.

mod error;
pub mod health;
pub mod mount;
pub mod params;
pub mod registration;
mod service;
mod staged;

pub use service::{LocalStorage, NodeConfig, NodeService};
