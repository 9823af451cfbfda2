//! CSI controller service: the directory's gateway (claims 2, 11, 13).
//!
//! It talks only to the Kubernetes API server. CreateVolume turns a
//! StorageClass's parameters into a `VirtualVolume` and waits until the
//! operator reports it Ready; ControllerPublishVolume is the log-in: it
//! records the node the volume is wanted on (annotation
//! `roam.dev/attached-node`), waits until the operator has moved the primary
//! to that node's data center (or the nearest one holding a replica), and
//! returns the primary's storage endpoint, real volume id and epoch as the
//! publish context. The operator does the moving; this service never talks
//! to a storage system.
//!
//! Guarantees: CreateVolume and DeleteVolume are idempotent by name and id;
//! ControllerPublishVolume returns only after the primary moved; every call
//! on a volume while another one runs on it gets ABORTED.
//!
//! Caveats: waits are bounded (`--wait-timeout`); past it a call answers
//! DEADLINE_EXCEEDED and the CO retries, which is safe because every call is
//! idempotent.

mod error;
mod login;
pub mod params;
mod service;

pub use service::{ControllerConfig, ControllerService};

/// volume_context key: file system to create (StorageClass `fsType`).
pub const CTX_FS_TYPE: &str = "fsType";
