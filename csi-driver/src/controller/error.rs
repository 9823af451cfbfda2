//! Errors of the CSI controller service and their gRPC codes.

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
}

impl From<ControllerError> for Status {
    fn from(e: ControllerError) -> Self {
        let message = format!("{e:#}");
        match &e {
            ControllerError::Api { source, .. } => match source {
                kube::Error::Api(status) if status.code == 404 => Status::not_found(message),
                kube::Error::Api(status) if status.code == 409 => Status::aborted(message),
                kube::Error::Api(status) if status.code == 422 || status.code == 400 => {
                    Status::invalid_argument(message)
                }
                kube::Error::Api(_) => Status::internal(message),
                _ => Status::unavailable(message),
            },
            ControllerError::Size { .. } => Status::internal(message),
        }
    }
}
