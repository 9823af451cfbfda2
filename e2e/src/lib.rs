//! Test support: a real Kubernetes control plane for integration tests.
//!
//! Any crate's integration tests can depend on `roam-e2e` (as a dev-dependency)
//! to run against a real kube-apiserver, kube-controller-manager and
//! kube-scheduler built from the pinned upstream versions
//! (`e2e/tools/versions.env`, installed by `e2e/tools/install.sh`):
//!
//! ```no_run
//! # async fn example() -> Result<(), roam_e2e::Error> {
//! let cluster = roam_e2e::TestCluster::get().await?;
//! let ns = roam_e2e::TestNamespace::create(&cluster, "my-test").await?;
//! cluster.kubectl(&["-n", ns.name(), "get", "serviceaccounts"]).await?;
//! let client = cluster.client().await?;
//! # let _ = client;
//! # Ok(())
//! # }
//! ```
//!
//! [`TestCluster::get`] reuses a control plane that is already running (the one
//! `KUBECONFIG` names, or the one in `$ROAM_CLUSTER_DIR`) and otherwise starts
//! one with `e2e/cluster/control-plane.sh start`, which serializes concurrent
//! callers with a file lock, so parallel test binaries share one control plane.
//! The control plane is left running for the next test run; stop it with
//! `e2e/cluster/control-plane.sh stop`.
//!
//! Tests isolate themselves with a [`TestNamespace`] each, never by starting
//! their own control plane.

mod cluster;
mod error;
mod kubectl;
mod namespace;
mod paths;
mod wait;

pub use cluster::TestCluster;
pub use error::Error;
pub use namespace::TestNamespace;
pub use paths::{cluster_dir, kubectl_path, repo_root, tool_path};
pub use wait::wait_until;
