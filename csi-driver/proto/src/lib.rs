//! Generated code for Roam's gRPC protocols. The .proto files beside this
//! crate are the source of truth; see each file's header for its rules.
//! [`tls`] is how every Roam process secures them.

pub mod tls;

/// Roam's own packages, nested like their proto package names so that one
/// can refer to another's types.
pub mod roam {
    pub mod storage {
        pub mod v1 {
            tonic::include_proto!("roam.storage.v1");
        }
    }
    pub mod replication {
        pub mod v1 {
            tonic::include_proto!("roam.replication.v1");
        }
    }
    pub mod directory {
        pub mod v1 {
            tonic::include_proto!("roam.directory.v1");
        }
    }
}

/// The storage system API: replica life cycle, group definition, change of
/// primary, host I/O.
pub use roam::storage::v1 as storage;

/// Replication between storage systems: ordered write streams, region
/// copies, hand-over of the primary role.
pub use roam::replication::v1 as replication;

/// The directory: a group's in-sync set and its primary's lease, kept by the
/// operator for the storage systems.
pub use roam::directory::v1 as directory;

/// The Container Storage Interface (CSI v1.x, the subset Roam serves).
pub mod csi {
    tonic::include_proto!("csi.v1");
}

/// The kubelet plugin registration API the node plugin serves.
pub mod pluginregistration {
    tonic::include_proto!("pluginregistration");
}

/// Metadata of a directory's FAILED_PRECONDITION refusal: the epoch the
/// directory holds for the volume (see `roam/directory.proto`).
pub const DIRECTORY_HELD_EPOCH_KEY: &str = "roam-held-epoch";
