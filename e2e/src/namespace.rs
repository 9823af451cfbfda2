//! A namespace of its own for each test, so tests share one control plane
//! without seeing each other's objects.
//!
//! Expected flow: [`TestNamespace::create`] at the start of a test, objects go
//! into [`TestNamespace::name`], [`TestNamespace::delete`] at the end. A test
//! that fails before the end drops its `TestNamespace`, which then deletes the
//! namespace with kubectl (a drop cannot await).
//!
//! Guarantees: names are unique (prefix + random suffix) and every test
//! namespace carries the label `roam.dev/e2e=true`, so leftovers of an
//! interrupted run can be removed with
//! `kubectl delete namespace -l roam.dev/e2e=true`.
//!
//! Caveats: deletion does not wait for the namespace's finalization; objects
//! with finalizers that nobody serves may keep it `Terminating`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};

use crate::{Error, TestCluster, cluster, kubectl_path, wait_until};

/// The label every test namespace carries.
pub const TEST_LABEL: (&str, &str) = ("roam.dev/e2e", "true");

/// How long the controller manager may take to give a new namespace its
/// `default` service account.
const SERVICE_ACCOUNT_TIMEOUT: Duration = Duration::from_secs(60);

/// A uniquely named namespace, deleted at the end of the test.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    kubeconfig: PathBuf,
    deleted: bool,
}

impl TestNamespace {
    /// Creates a namespace named `<prefix>-<random>` and waits until it has its
    /// `default` service account (so pods can be created in it at once).
    pub async fn create(cluster: &TestCluster, prefix: &str) -> Result<Self, Error> {
        let name = unique_name(prefix);
        let client = cluster.client().await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    TEST_LABEL.0.to_string(),
                    TEST_LABEL.1.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(|source| Error::CreateNamespace {
                namespace: name.clone(),
                source,
            })?;
        let this = Self {
            name,
            kubeconfig: cluster.kubeconfig().to_path_buf(),
            deleted: false,
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(client, &this.name);
        wait_until(
            &format!("service account {}/default", this.name),
            SERVICE_ACCOUNT_TIMEOUT,
            || async {
                match accounts.get_opt("default").await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err("not created yet".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await?;
        Ok(this)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the namespace (without waiting for its finalization).
    pub async fn delete(mut self) -> Result<(), Error> {
        self.deleted = true;
        let config = cluster::config_for(&self.kubeconfig).await?;
        let client = cluster::client_from(config, &self.kubeconfig)?;
        let namespaces: Api<Namespace> = Api::all(client);
        match namespaces
            .delete(&self.name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(Error::DeleteNamespace {
                namespace: self.name.clone(),
                source,
            }),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        let Some(kubectl) = kubectl_path() else {
            eprintln!(
                "namespace {} is left behind: no kubectl to delete it with",
                self.name
            );
            return;
        };
        let result = std::process::Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdin(std::process::Stdio::null())
            .output();
        match result {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "deleting test namespace {} failed: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(e) => eprintln!("deleting test namespace {} failed: {e:#}", self.name),
        }
    }
}

/// `<prefix>-<8 hex digits>`, with the prefix cut to a valid DNS label.
fn unique_name(prefix: &str) -> String {
    let mut clean: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(50)
        .collect();
    clean = clean.trim_matches('-').to_string();
    if clean.is_empty() {
        clean = "test".to_string();
    }
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{clean}-{}", &suffix[..8])
}

#[cfg(test)]
mod tests {
    use super::unique_name;

    #[test]
    fn unique_names_are_dns_labels() {
        for prefix in ["My_Test", "--", "", "a.b/c", &"x".repeat(80)] {
            let name = unique_name(prefix);
            assert!(name.len() <= 63, "{name} is too long");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name} has characters a DNS label may not"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
        assert_ne!(unique_name("same"), unique_name("same"));
        assert!(unique_name("My_Test").starts_with("my-test-"));
    }
}
