//! Errors of the test support layer, each named after the operation that failed
//! and carrying what a developer needs to see to fix the environment.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("starting the control plane with {script} failed ({status}):\n{output}")]
    StartControlPlane {
        script: PathBuf,
        status: String,
        output: String,
    },

    #[error("running {script}")]
    RunControlPlaneScript {
        script: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("reading kubeconfig {path}")]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },

    #[error("building a Kubernetes client from {path}")]
    BuildClient {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },

    #[error("the API server of {path} does not answer: {reason}")]
    ApiServerUnreachable { path: PathBuf, reason: String },

    #[error("creating namespace {namespace}")]
    CreateNamespace {
        namespace: String,
        #[source]
        source: kube::Error,
    },

    #[error("deleting namespace {namespace}")]
    DeleteNamespace {
        namespace: String,
        #[source]
        source: kube::Error,
    },

    #[error("{tool} is missing and there is no kubectl on PATH: run e2e/tools/install.sh first")]
    ToolMissing { tool: PathBuf },

    #[error("running kubectl {args}")]
    RunKubectl {
        args: String,
        #[source]
        source: std::io::Error,
    },

    #[error("kubectl {args} failed ({status}): {stderr}")]
    KubectlFailed {
        args: String,
        status: String,
        stderr: String,
    },

    #[error("timed out after {after:?} waiting for {what}; last observed: {last}")]
    WaitTimedOut {
        what: String,
        after: Duration,
        last: String,
    },
}
