//! The one error type of `kubectl roam`: each variant names what failed and
//! the objects involved, so the message a user reads says what to do next.

use std::time::Duration;

/// Everything a `kubectl roam` command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot load the kubeconfig: {0}")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("cannot reach the API server: {0}")]
    Client(#[source] kube::Error),
    #[error("cannot {verb} {kind} {name}: {source}")]
    Api {
        verb: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{what} is not a Roam volume: {why}")]
    NotRoam { what: String, why: String },
    #[error("unknown resource {0:?}: name a VirtualVolume, pvc/NAME or pod/NAME")]
    BadTarget(String),
    #[error("volume {volume} has no CopyVolumeGroup yet (phase {phase}); wait until it is placed")]
    NoGroup { volume: String, phase: String },
    #[error("volume {volume} has no replica in data center {to}; its members are {members}")]
    NotAMember {
        volume: String,
        to: String,
        members: String,
    },
    #[error("volume {volume}: {why}")]
    Refused { volume: String, why: String },
    #[error(
        "volume {volume}: promoting {to} may lose {loss}; run again with --accept-loss to accept it"
    )]
    LossNotAccepted {
        volume: String,
        to: String,
        loss: String,
    },
    #[error("volume {volume}: someone else changed the group while we read it; run again")]
    Conflict { volume: String },
    #[error("volume {volume}: primary not in {to} after {waited:?} ({state})")]
    Timeout {
        volume: String,
        to: String,
        waited: Duration,
        state: String,
    },
    #[error("data center {data_center} not drained after {waited:?} ({state})")]
    DrainTimeout {
        data_center: String,
        waited: Duration,
        state: String,
    },
    #[error("cannot encode the output: {0}")]
    Encode(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Exit status: 1 for a refusal or failure of the request itself.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::LossNotAccepted { .. } | Self::Refused { .. } | Self::NotAMember { .. } => 2,
            _ => 1,
        }
    }
}

/// Maps a kube error on `kind/name` to [`Error::Api`] (or [`Error::NotFound`]).
pub fn api(
    verb: &'static str,
    kind: &'static str,
    namespace: &str,
    name: &str,
) -> impl FnOnce(kube::Error) -> Error {
    let (namespace, name) = (namespace.to_string(), name.to_string());
    move |source| match &source {
        kube::Error::Api(s) if s.code == 404 => Error::NotFound {
            kind,
            namespace,
            name,
        },
        _ => Error::Api {
            verb,
            kind,
            name: if namespace.is_empty() {
                name
            } else {
                format!("{namespace}/{name}")
            },
            source,
        },
    }
}
