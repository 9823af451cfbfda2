//! A data center is lost under a running StatefulSet, and the application is
//! back by itself: its pod runs again in another data center with every
//! byte, no manual delete, no six-minute wait for Kubernetes' force-detach.
//!
//! The local cluster only: the last test of `make test-cluster`, or by hand
//! after `make up`: `KUBECONFIG=$PWD/.cluster/kubeconfig cargo test -p
//! roam-e2e --test datacenter_loss -- --nocapture`. It stops a node with
//! `e2e/cluster/node.sh stop`, kubelet, containerd and Roam's storage system
//! with it, and starts it again at the end. The time from the loss to the
//! pod Running elsewhere is printed, not asserted; `make bench` is where
//! speed goals live.
//!
//! The volume is Sync with failurePolicy Degrade: under Block a two-member
//! group takes no writes while its lost member is away, so the pod would
//! come back but could not mount its file system.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use roam_crds::VirtualVolume;
use roam_e2e::{TestCluster, TestNamespace, repo_root, wait_until};
use serde_json::json;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Detecting a dead node (about 40 s), the failover grace (30 s), the
/// attach/detach controller seeing the attachment gone (up to 60 s), the
/// pod's start: well within this.
const BACK_TIMEOUT: Duration = Duration::from_secs(420);

fn busybox() -> String {
    std::env::var("ROAM_E2E_BUSYBOX").unwrap_or_else(|_| "roam.local/busybox:1.35".into())
}

async fn node_sh(action: &str, node: &str) -> TestResult {
    let status = tokio::process::Command::new(repo_root().join("e2e/cluster/node.sh"))
        .args([action, node])
        .stdin(std::process::Stdio::null())
        .status()
        .await?;
    if !status.success() {
        return Err(format!("e2e/cluster/node.sh {action} {node}: {status}").into());
    }
    Ok(())
}

/// The node and readiness of the StatefulSet's pod.
async fn pod_placement(pods: &Api<Pod>, name: &str) -> Result<(String, bool), String> {
    let pod = pods
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no pod yet")?;
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let terminating = pod.metadata.deletion_timestamp.is_some();
    Ok((node, ready && !terminating))
}

async fn exec(cluster: &TestCluster, ns: &str, pod: &str, script: &str) -> Result<String, String> {
    cluster
        .kubectl(&["exec", "-n", ns, pod, "--", "sh", "-c", script])
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_pod_of_a_lost_data_center_runs_again_elsewhere_with_every_byte() -> TestResult {
    let cluster = TestCluster::get().await?;
    let ns = TestNamespace::create(&cluster, "dcloss").await?;
    let class = format!("roam-{}", ns.name());
    let storage_class = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": { "name": class },
        "provisioner": roam_crds::DRIVER_NAME,
        "parameters": { "dataCenters": "dc-b,dc-c", "transferType": "Sync", "failurePolicy": "Degrade" },
        "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"
    });
    cluster
        .kubectl_with_input(&["apply", "-f", "-"], &storage_class.to_string())
        .await?;
    // Writes its data once (the first pod), then idles; every later pod
    // finds it and checks it against the checksum written beside it.
    // `/tmp/synced` (in the container, not the volume) appears once the
    // sync returned: only then is the data durable, and only then does the
    // test take the data center away. A later pod that finds no checksum
    // writes a new blob, and the comparison below tells.
    let script = "set -e; if [ ! -f /data/sum ]; then \
                  head -c 8388608 /dev/urandom > /data/blob; md5sum /data/blob > /data/sum; sync; fi; \
                  touch /tmp/synced; while true; do sleep 1; done";
    let stateful_set = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": { "name": "db" },
        "spec": {
            "serviceName": "db", "replicas": 1,
            "selector": { "matchLabels": { "app": "db" } },
            "template": {
                "metadata": { "labels": { "app": "db" } },
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    // dc-c first, anywhere else once dc-c is gone.
                    "affinity": { "nodeAffinity": { "preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100,
                        "preference": { "matchExpressions": [{ "key": ZONE_LABEL, "operator": "In", "values": ["dc-c"] }] }
                    }] } },
                    "containers": [{
                        "name": "main", "image": busybox(), "imagePullPolicy": "IfNotPresent",
                        "command": ["sh", "-c", script],
                        "volumeMounts": [{ "name": "data", "mountPath": "/data" }]
                    }]
                }
            },
            "volumeClaimTemplates": [{
                "metadata": { "name": "data" },
                "spec": {
                    "accessModes": ["ReadWriteOnce"], "storageClassName": class,
                    "resources": { "requests": { "storage": "64Mi" } }
                }
            }]
        }
    });
    cluster
        .kubectl_with_input(
            &["apply", "-n", ns.name(), "-f", "-"],
            &stateful_set.to_string(),
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client().await?, ns.name());
    wait_until("db-0 to run in dc-c", BACK_TIMEOUT, || async {
        match pod_placement(&pods, "db-0").await? {
            (node, true) if node == "dc-c" => Ok(()),
            other => Err(format!("node, ready: {other:?}")),
        }
    })
    .await?;
    let written = wait_until("db-0 to write its data", BACK_TIMEOUT, || async {
        exec(
            &cluster,
            ns.name(),
            "db-0",
            "test -f /tmp/synced && cat /data/sum",
        )
        .await
    })
    .await?;

    let handle = cluster
        .kubectl(&[
            "get",
            "pv",
            "-o",
            &format!(
                "jsonpath={{.items[?(@.spec.claimRef.namespace==\"{}\")].spec.csi.volumeHandle}}",
                ns.name()
            ),
        ])
        .await?;
    let (vv_ns, vv_name) = handle
        .trim()
        .split_once('/')
        .ok_or_else(|| format!("volume handle {handle:?} is not <ns>/<name>"))?;
    let vvs: Api<VirtualVolume> = Api::namespaced(cluster.client().await?, vv_ns);
    let before = vvs.get(vv_name).await?.status.unwrap_or_default();
    assert_eq!(
        before.primary_data_center.as_deref(),
        Some("dc-c"),
        "primary follows the pod"
    );

    let lost_at = Instant::now();
    node_sh("stop", "dc-c").await?;
    let back = wait_until("db-0 to run again outside dc-c", BACK_TIMEOUT, || async {
        match pod_placement(&pods, "db-0").await? {
            (node, true) if !node.is_empty() && node != "dc-c" => Ok(node),
            other => Err(format!("node, ready: {other:?}")),
        }
    })
    .await;
    let took = lost_at.elapsed();
    let outcome = async {
        let node = back?;
        println!(
            "db-0 ran again on {node} {:.1} s after dc-c was stopped",
            took.as_secs_f64()
        );
        let read = wait_until("db-0 to read its data", BACK_TIMEOUT, || async {
            exec(
                &cluster,
                ns.name(),
                "db-0",
                "md5sum -c /data/sum >/dev/null && cat /data/sum",
            )
            .await
        })
        .await?;
        assert_eq!(read, written, "every byte written in dc-c");
        let after = vvs.get(vv_name).await?.status.unwrap_or_default();
        assert_eq!(
            after.primary_data_center.as_deref(),
            Some("dc-b"),
            "failed over to dc-b"
        );
        assert!(
            after.epoch > before.epoch,
            "a new epoch fences dc-c: {} -> {}",
            before.epoch,
            after.epoch
        );
        // dc-b went on without dc-c only once the directory said so.
        let groups: Api<roam_crds::CopyVolumeGroup> =
            Api::namespaced(cluster.client().await?, vv_ns);
        let recorded = groups.get(vv_name).await?.status.unwrap_or_default();
        assert_eq!(
            recorded.out_of_sync,
            vec!["dc-c".to_string()],
            "the lost member recorded out of the in-sync set"
        );
        Ok::<(), Box<dyn std::error::Error>>(())
    }
    .await;

    // dc-c comes back whatever happened, so that nothing after this finds a
    // data center missing.
    node_sh("start", "dc-c").await?;
    let nodes: Api<Node> = Api::all(cluster.client().await?);
    wait_until("node dc-c to be Ready again", BACK_TIMEOUT, || async {
        let node = nodes.get("dc-c").await.map_err(|e| e.to_string())?;
        node.status
            .and_then(|s| s.conditions)
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            .then_some(())
            .ok_or_else(|| "not Ready".to_string())
    })
    .await?;
    outcome?;

    let ns_name = ns.name().to_owned();
    cluster
        .delete_and_wait(Some(&ns_name), &["statefulset", "db"])
        .await?;
    cluster
        .delete_and_wait(Some(&ns_name), &["pvc", "--all"])
        .await?;
    ns.delete().await?;
    cluster
        .delete_and_wait(None, &["storageclass", &class])
        .await?;
    Ok(())
}
