//! Generated code for Roam's gRPC protocols. The .proto files beside this
//! crate are the source of truth; see each file's header for its rules.

/// The storage system API: replica life cycle, group definition, change of
/// primary, host I/O.
pub mod storage {
    tonic::include_proto!("roam.storage.v1");
}
