//! The control plane the tests run against, found or started once per process.
//!
//! Expected flow: the first [`TestCluster::get`] in a test binary looks for a
//! running API server (the kubeconfig in `KUBECONFIG`, else
//! `$ROAM_CLUSTER_DIR/kubeconfig`) and, when there is none, runs
//! `e2e/cluster/control-plane.sh start` and waits for it. Later calls in the same
//! process reuse the answer.
//!
//! Guarantees: concurrent test binaries never start two control planes: the
//! script holds a file lock while it starts, and every caller after the first
//! finds it healthy. A `KUBECONFIG` chosen by the user (other than the local
//! cluster's own) is used as it is: if its API server does not answer, `get`
//! fails instead of starting a local one.
//!
//! Caveats: a `kube::Client` belongs to the tokio runtime it was made in, and
//! every `#[tokio::test]` has its own runtime; so only the kubeconfig is shared,
//! and [`TestCluster::client`] makes a new client each time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::OnceCell;

use crate::paths::{cluster_dir, control_plane_script, repo_root};
use crate::{Error, kubectl};

/// The kubeconfig of the API server found or started by this process.
static READY_KUBECONFIG: OnceCell<PathBuf> = OnceCell::const_new();

/// How long one probe of the API server may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running Kubernetes control plane, reached through its admin kubeconfig.
#[derive(Clone, Debug)]
pub struct TestCluster {
    kubeconfig: PathBuf,
}

impl TestCluster {
    /// The control plane for this test run: reused when one answers, started
    /// otherwise (see the module docs).
    pub async fn get() -> Result<Self, Error> {
        let kubeconfig = READY_KUBECONFIG.get_or_try_init(find_or_start).await?;
        Ok(Self {
            kubeconfig: kubeconfig.clone(),
        })
    }

    /// The admin kubeconfig (user in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The client configuration from the admin kubeconfig.
    pub async fn config(&self) -> Result<Config, Error> {
        config_for(&self.kubeconfig).await
    }

    /// A new client with admin rights.
    pub async fn client(&self) -> Result<Client, Error> {
        client_from(self.config().await?, &self.kubeconfig)
    }

    /// A new client that authenticates with a bearer `token` only (for example a
    /// service account token), over the same verified TLS connection.
    pub async fn client_with_token(&self, token: &str) -> Result<Client, Error> {
        let mut config = self.config().await?;
        config.auth_info = AuthInfo {
            token: Some(secrecy::SecretString::from(token.to_string())),
            ..AuthInfo::default()
        };
        client_from(config, &self.kubeconfig)
    }

    /// Runs the pinned `kubectl` with `args` against this cluster and returns
    /// its standard output; a non-zero exit is an error carrying its stderr.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String, Error> {
        kubectl::run(&self.kubeconfig, args, None).await
    }

    /// Deletes objects (`what`: `KIND NAME`, or `KIND --all`) in `namespace`
    /// (None: cluster-scoped) and waits until they are gone.
    pub async fn delete_and_wait(
        &self,
        namespace: Option<&str>,
        what: &[&str],
    ) -> Result<(), Error> {
        let mut args = vec!["delete"];
        args.extend_from_slice(what);
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        args.push("--wait=true");
        self.kubectl(&args).await.map(drop)
    }

    /// Like [`TestCluster::kubectl`], with `input` as kubectl's standard input
    /// (for `apply -f -`).
    pub async fn kubectl_with_input(&self, args: &[&str], input: &str) -> Result<String, Error> {
        kubectl::run(&self.kubeconfig, args, Some(input)).await
    }

    /// Installs (or updates) Roam's CRDs from the committed `crds/*.yaml`
    /// (kept equal to the Rust types by the drift test) and waits until the
    /// API server serves them.
    pub async fn install_roam_crds(&self) -> Result<(), Error> {
        let dir = repo_root().join("crds");
        let dir = dir.to_string_lossy();
        self.kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=roam-tests",
            "-f",
            &dir,
        ])
        .await?;
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/datacenters.roam.dev",
            "crd/virtualvolumes.roam.dev",
            "crd/copyvolumegroups.roam.dev",
        ])
        .await?;
        Ok(())
    }
}

async fn find_or_start() -> Result<PathBuf, Error> {
    let path = cluster_dir().join("kubeconfig");
    if let Some(chosen) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
        let chosen = PathBuf::from(chosen);
        // KUBECONFIG naming the local cluster's own kubeconfig is no reason not
        // to start it.
        if !same_file(&chosen, &path) {
            probe(&chosen).await?;
            return Ok(chosen);
        }
    }
    if path.exists() && probe(&path).await.is_ok() {
        return Ok(path);
    }
    start_control_plane().await?;
    probe(&path).await?;
    Ok(path)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Runs `control-plane.sh start`, which returns once the API server is ready.
async fn start_control_plane() -> Result<(), Error> {
    let script = control_plane_script();
    let output = tokio::process::Command::new(&script)
        .arg("start")
        .env("ROAM_CLUSTER_DIR", cluster_dir())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| Error::RunControlPlaneScript {
            script: script.clone(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::StartControlPlane {
        script,
        status: output.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// Succeeds when the API server of `kubeconfig` answers a version request.
async fn probe(kubeconfig: &Path) -> Result<(), Error> {
    let client = client_from(config_for(kubeconfig).await?, kubeconfig)?;
    let unreachable = |reason: String| Error::ApiServerUnreachable {
        path: kubeconfig.to_path_buf(),
        reason,
    };
    match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(format!("{e:#}"))),
        Err(_) => Err(unreachable(format!("no answer within {PROBE_TIMEOUT:?}"))),
    }
}

pub(crate) async fn config_for(kubeconfig: &Path) -> Result<Config, Error> {
    let read_error = |source| Error::ReadKubeconfig {
        path: kubeconfig.to_path_buf(),
        source,
    };
    let file = Kubeconfig::read_from(kubeconfig).map_err(read_error)?;
    Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(read_error)
}

pub(crate) fn client_from(config: Config, kubeconfig: &Path) -> Result<Client, Error> {
    Client::try_from(config).map_err(|source| Error::BuildClient {
        path: kubeconfig.to_path_buf(),
        source,
    })
}
