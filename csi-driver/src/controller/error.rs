//! Errors of the CSI controller service and their gRPC codes.
//!
//! Every failure the controller itself decides is a variant here, named after
//! what went wrong and carrying the ids involved; the one `From` below picks
//! its gRPC code (the code the CSI spec names for that case), so the code a
//! CO acts on and the message a user reads come from one place. Request
//! validation shared with the node service (`csi_validate`), the in-flight
//! guard and the parameter parser keep their own `Status` values.

use std::time::Duration;

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("{op} {kind} {name}: {source}")]
    Api {
        op: &'static str,
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("size {size:?} of VirtualVolume {name}: {cause}")]
    Size {
        name: String,
        size: String,
        cause: String,
    },
    #[error("{field} is required")]
    MissingField { field: &'static str },
    #[error("{field}.access_mode: Roam volumes are published to one node at a time")]
    MultiNodeAccess { field: String },
    #[error("volume_content_source: Roam does not create volumes from snapshots or clones")]
    ContentSource,
    #[error("volume {volume_id:?} does not exist (Roam volume ids are <namespace>/<name>)")]
    MalformedVolumeId { volume_id: String },
    #[error("volume {volume_id} does not exist")]
    VolumeNotFound { volume_id: String },
    #[error("volume {volume_id} is still being deleted; retry once it is gone")]
    BeingDeleted { volume_id: String },
    #[error("volume {volume_id} already exists {mismatch}")]
    AlreadyExists {
        volume_id: String,
        mismatch: Box<Mismatch>,
    },
    #[error("volume {volume_id} is being created concurrently; retry")]
    CreatedConcurrently { volume_id: String },
    #[error(
        "volume {volume_id} can be used from zones [{accessible}], none of the requisite zones \
         [{requisite}] (accessibility_requirements); add a replica there or a proximity entry to one"
    )]
    RequisiteUnreachable {
        volume_id: String,
        accessible: String,
        requisite: String,
    },
    #[error("volume {volume_id} was deleted while being created")]
    DeletedWhileCreating { volume_id: String },
    #[error("volume {volume_id} could not be placed: {why}")]
    PlacementFailed { volume_id: String, why: String },
    #[error(
        "volume {volume_id} is not ready after {waited:?} (phase {phase}); the call may be retried"
    )]
    NotReady {
        volume_id: String,
        waited: Duration,
        phase: &'static str,
    },
    #[error("node {node_id} does not exist")]
    NodeNotFound { node_id: String },
    #[error(
        "volume {volume_id} is published to node {other}; unpublish it there first \
         (Roam volumes are used on one node at a time)"
    )]
    PublishedElsewhere { volume_id: String, other: String },
    #[error("node {node_id} belongs to no DataCenter (label {label}={value})")]
    NodeWithoutDataCenter {
        node_id: String,
        label: &'static str,
        value: String,
    },
    #[error("volume {volume_id} was deleted during publish")]
    DeletedWhilePublishing { volume_id: String },
    #[error("volume {volume_id}: primary not in {wanted_dc} after {waited:?}: {why}")]
    PrimaryNotMoved {
        volume_id: String,
        wanted_dc: String,
        waited: Duration,
        why: String,
    },
    #[error("max_entries {max_entries} must not be negative")]
    NegativeMaxEntries { max_entries: i32 },
    #[error("starting_token {token:?} is not valid (no longer or never returned by ListVolumes)")]
    BadStartingToken { token: String },
    #[error("volume {volume_id} is {current} bytes; it can grow but never shrink to {wanted}")]
    Shrink {
        volume_id: String,
        current: u64,
        wanted: u64,
    },
    #[error("volume {volume_id} was deleted")]
    DeletedWhileExpanding { volume_id: String },
    #[error("volume {volume_id}: real volumes report {reported} bytes, not yet {wanted}")]
    NotGrown {
        volume_id: String,
        reported: u64,
        wanted: u64,
    },
}

/// How an existing volume differs from a CreateVolume request of its name.
#[derive(Debug)]
pub struct Mismatch {
    pub existing_name: String,
    pub existing_size: u64,
    pub existing_parameters: String,
    pub name: String,
    pub size: u64,
    pub parameters: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "for name {:?} with size {} and parameters {}; the request asks for name {:?}, \
             size {}, parameters {}",
            self.existing_name,
            self.existing_size,
            self.existing_parameters,
            self.name,
            self.size,
            self.parameters
        )
    }
}

impl From<ControllerError> for Status {
    fn from(e: ControllerError) -> Self {
        use ControllerError::*;
        let message = format!("{e:#}");
        match &e {
            Api { source, .. } => match source {
                kube::Error::Api(status) if status.code == 404 => Status::not_found(message),
                kube::Error::Api(status) if status.code == 409 => Status::aborted(message),
                kube::Error::Api(status) if status.code == 422 || status.code == 400 => {
                    Status::invalid_argument(message)
                }
                kube::Error::Api(_) => Status::internal(message),
                _ => Status::unavailable(message),
            },
            Size { .. } => Status::internal(message),
            MissingField { .. }
            | MultiNodeAccess { .. }
            | ContentSource
            | NegativeMaxEntries { .. } => Status::invalid_argument(message),
            MalformedVolumeId { .. }
            | VolumeNotFound { .. }
            | NodeNotFound { .. }
            | DeletedWhilePublishing { .. }
            | DeletedWhileExpanding { .. } => Status::not_found(message),
            // The CO retries ABORTED: the condition passes on its own.
            BeingDeleted { .. }
            | CreatedConcurrently { .. }
            | DeletedWhileCreating { .. }
            | BadStartingToken { .. } => Status::aborted(message),
            AlreadyExists { .. } => Status::already_exists(message),
            RequisiteUnreachable { .. } | PlacementFailed { .. } => {
                Status::resource_exhausted(message)
            }
            NotReady { .. } | PrimaryNotMoved { .. } | NotGrown { .. } => {
                Status::deadline_exceeded(message)
            }
            PublishedElsewhere { .. } | NodeWithoutDataCenter { .. } => {
                Status::failed_precondition(message)
            }
            Shrink { .. } => Status::out_of_range(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_case_has_the_code_the_spec_names() {
        let code = |e: ControllerError| Status::from(e).code();
        use tonic::Code;
        assert_eq!(
            code(ControllerError::MissingField { field: "name" }),
            Code::InvalidArgument
        );
        assert_eq!(
            code(ControllerError::VolumeNotFound {
                volume_id: "a/b".into()
            }),
            Code::NotFound
        );
        assert_eq!(
            code(ControllerError::PublishedElsewhere {
                volume_id: "a/b".into(),
                other: "n2".into()
            }),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(ControllerError::Shrink {
                volume_id: "a/b".into(),
                current: 2,
                wanted: 1
            }),
            Code::OutOfRange
        );
        assert_eq!(
            code(ControllerError::NotReady {
                volume_id: "a/b".into(),
                waited: Duration::from_secs(1),
                phase: "Creating"
            }),
            Code::DeadlineExceeded
        );
    }
}
