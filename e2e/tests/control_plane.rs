//! The real control plane: kubectl and kube-rs against the same API server over
//! TLS, CRDs, and RBAC enforced for service accounts.
//!
//! Run with `cargo test -p roam-e2e --test control_plane` after
//! `e2e/tools/install.sh`; the first test starts the control plane when none is
//! running, and leaves it running.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, PostParams};
use roam_e2e::{Error, TestCluster, TestNamespace, repo_root, wait_until};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("e2e.roam.dev", "v1", "Widget"),
        "widgets",
    )
}

/// Applies the Widget CRD with kubectl and waits until it is served.
async fn install_widget_crd(cluster: &TestCluster) -> Result<(), Error> {
    let crd = repo_root().join("e2e/testdata/widget-crd.yaml");
    let crd = crd.to_str().expect("the repository path is UTF-8");
    // Both tests install it, possibly at once: server-side apply, and one
    // more try if the other test's create won the race.
    let apply = [
        "apply",
        "--server-side",
        "--field-manager=roam-tests",
        "-f",
        crd,
    ];
    if let Err(e) = cluster.kubectl(&apply).await {
        if !e.to_string().contains("AlreadyExists") {
            return Err(e);
        }
        cluster.kubectl(&apply).await?;
    }
    cluster
        .kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/widgets.e2e.roam.dev",
            "--timeout=60s",
        ])
        .await?;
    Ok(())
}

/// `kubectl apply` of a manifest, retried while the API server's discovery
/// does not know a just-created kind yet.
async fn kubectl_apply(
    cluster: &TestCluster,
    namespace: &str,
    manifest: &str,
) -> Result<(), Error> {
    wait_until(
        &format!("kubectl apply in {namespace}"),
        TIMEOUT,
        || async {
            cluster
                .kubectl_with_input(&["apply", "-n", namespace, "-f", "-"], manifest)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        },
    )
    .await
}

fn api_status(result: Result<impl Sized, kube::Error>) -> Option<u16> {
    match result {
        Err(kube::Error::Api(status)) => Some(status.code),
        _ => None,
    }
}

#[tokio::test]
async fn kubectl_applies_a_custom_resource_that_kube_rs_reads_back_over_tls() -> Result<(), Error> {
    let cluster = TestCluster::get().await?;
    let config = cluster.config().await?;
    assert_eq!(config.cluster_url.scheme_str(), Some("https"));
    assert!(
        !config.accept_invalid_certs,
        "the test client must verify the API server's certificate"
    );
    let ns = TestNamespace::create(&cluster, "crd-roundtrip").await?;
    install_widget_crd(&cluster).await?;

    kubectl_apply(
        &cluster,
        ns.name(),
        "apiVersion: e2e.roam.dev/v1\nkind: Widget\nmetadata:\n  name: gear\nspec:\n  color: blue\n  size: 7\n",
    )
    .await?;

    let widgets: Api<DynamicObject> =
        Api::namespaced_with(cluster.client().await?, ns.name(), &widget_resource());
    let gear = widgets
        .get("gear")
        .await
        .expect("the widget kubectl applied");
    assert_eq!(gear.data["spec"], json!({"color": "blue", "size": 7}));
    let all = widgets
        .list(&Default::default())
        .await
        .expect("list widgets");
    let names: Vec<_> = all
        .items
        .iter()
        .filter_map(|w| w.metadata.name.clone())
        .collect();
    assert_eq!(names, ["gear"]);

    // The schema is enforced: kubectl's invalid widget is refused and not stored.
    let refused = cluster
        .kubectl_with_input(
            &["apply", "-n", ns.name(), "-f", "-"],
            "apiVersion: e2e.roam.dev/v1\nkind: Widget\nmetadata:\n  name: bad\nspec:\n  color: purple\n  size: 0\n",
        )
        .await;
    let message = refused
        .expect_err("an invalid widget must be refused")
        .to_string();
    assert!(message.contains("spec.color"), "{message}");
    assert!(message.contains("spec.size"), "{message}");
    assert!(widgets.get_opt("bad").await.expect("get").is_none());

    ns.delete().await
}

#[tokio::test]
async fn service_account_needs_a_role_binding_to_touch_custom_resources() -> Result<(), Error> {
    let cluster = TestCluster::get().await?;
    let ns = TestNamespace::create(&cluster, "rbac").await?;
    install_widget_crd(&cluster).await?;
    let admin = cluster.client().await?;

    // A service account and a token for it, from the TokenRequest API.
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns.name());
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("widget-user".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("create the service account");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request("widget-user", &PostParams::default(), &request)
        .await
        .expect("a token for widget-user")
        .status
        .expect("the token request's status")
        .token;

    let as_user: Api<DynamicObject> = Api::namespaced_with(
        cluster.client_with_token(&token).await?,
        ns.name(),
        &widget_resource(),
    );
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "e2e.roam.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "sprocket"},
        "spec": {"color": "red", "size": 3},
    }))
    .expect("a widget");

    // Without a role: forbidden to read and to create.
    assert_eq!(
        api_status(as_user.list(&Default::default()).await),
        Some(403)
    );
    assert_eq!(
        api_status(as_user.create(&PostParams::default(), &widget).await),
        Some(403)
    );
    // A made-up token is not a user at all.
    let stranger: Api<DynamicObject> = Api::namespaced_with(
        cluster.client_with_token("not-a-real-token").await?,
        ns.name(),
        &widget_resource(),
    );
    assert_eq!(
        api_status(stranger.list(&Default::default()).await),
        Some(401)
    );

    // A Role for reading and creating widgets, bound to the service account.
    let rbac = format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: widget-editor
rules:
- apiGroups: [e2e.roam.dev]
  resources: [widgets]
  verbs: [get, list, create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: widget-user-edits-widgets
subjects:
- kind: ServiceAccount
  name: widget-user
  namespace: {ns}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: widget-editor
",
        ns = ns.name()
    );
    kubectl_apply(&cluster, ns.name(), &rbac).await?;

    // The authorizer picks the binding up from its cache: allow it a moment.
    wait_until("widget-user may list widgets", TIMEOUT, || async {
        as_user
            .list(&Default::default())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await?;
    as_user
        .create(&PostParams::default(), &widget)
        .await
        .expect("widget-user may create widgets now");
    let stored: Api<DynamicObject> = Api::namespaced_with(admin, ns.name(), &widget_resource());
    let sprocket = stored
        .get("sprocket")
        .await
        .expect("the widget widget-user created");
    assert_eq!(sprocket.data["spec"], json!({"color": "red", "size": 3}));
    // The role grants no delete.
    assert_eq!(
        api_status(as_user.delete("sprocket", &Default::default()).await),
        Some(403)
    );
    assert!(stored.get_opt("sprocket").await.expect("get").is_some());

    ns.delete().await
}
