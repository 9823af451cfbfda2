//! The local cluster's nodes are real: a pod scheduled to each data center runs
//! there under a real kubelet and containerd, its output comes back through
//! `kubectl logs` (API server -> kubelet); a hostPath volume lands on that
//! node's own disk and no other; pods in different data centers reach each
//! other by pod address and the API server by the `kubernetes` Service; a
//! mount made in a privileged pod under `/var/lib/kubelet` with Bidirectional
//! propagation (what a CSI node plugin does) shows up on that node only; and
//! `e2e/cluster/faults.sh partition` cuts exactly two data centers apart until
//! healed.
//!
//! Needs the three-node cluster: run `make up` (or `e2e/cluster/up.sh`) first,
//! then `cargo test -p roam-e2e --test nodes`. Needs root, to look at a node's
//! filesystem through `e2e/cluster/node.sh exec`. Not for kind clusters (their
//! nodes are other machines, named differently).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use roam_e2e::{TestCluster, TestNamespace, repo_root, wait_until};
use serde_json::json;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The nodes of the local cluster; each is its own data center (zone).
const ZONES: [&str; 3] = ["dc-a", "dc-b", "dc-c"];
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Imported into every node by `e2e/cluster/up.sh`; there is no registry.
const BUSYBOX: &str = "roam.local/busybox:1.35";
const POD_TIMEOUT: Duration = Duration::from_secs(90);

/// Fails with a hint when the three nodes are not there and Ready.
async fn require_ready_nodes(cluster: &TestCluster) -> TestResult {
    let nodes: Api<Node> = Api::all(cluster.client().await?);
    for zone in ZONES {
        let node = nodes.get_opt(zone).await?.ok_or_else(|| {
            format!("node {zone} does not exist: start the local cluster with `make up`")
        })?;
        let labels = node.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get(ZONE_LABEL).map(String::as_str),
            Some(zone),
            "node {zone} must carry {ZONE_LABEL}={zone}"
        );
        let ready = node
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready {
            return Err(format!("node {zone} is not Ready (see `make up`)").into());
        }
    }
    Ok(())
}

/// A pod pinned to `zone` that runs `script` in busybox once.
fn pod_manifest(name: &str, zone: &str, script: &str, host_dir: Option<&str>) -> String {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": { ZONE_LABEL: zone },
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": BUSYBOX,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", script],
                "env": [{
                    "name": "NODE_NAME",
                    "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } }
                }]
            }]
        }
    });
    if let Some(dir) = host_dir {
        pod["spec"]["volumes"] = json!([{
            "name": "host",
            "hostPath": { "path": dir, "type": "DirectoryOrCreate" }
        }]);
        pod["spec"]["containers"][0]["volumeMounts"] = json!([{
            "name": "host",
            "mountPath": "/host"
        }]);
    }
    pod.to_string()
}

/// Gives the pod's container privileges and a Bidirectional mount
/// propagation on its volume, as a CSI node plugin has.
fn privileged_bidirectional(manifest: &str) -> Result<String, serde_json::Error> {
    let mut pod: serde_json::Value = serde_json::from_str(manifest)?;
    pod["spec"]["containers"][0]["securityContext"] = json!({ "privileged": true });
    pod["spec"]["containers"][0]["volumeMounts"][0]["mountPropagation"] = json!("Bidirectional");
    Ok(pod.to_string())
}

/// Waits until the pod has succeeded and returns the node it ran on.
async fn wait_succeeded(pods: &Api<Pod>, name: &str) -> Result<String, Box<dyn std::error::Error>> {
    let node = wait_until(&format!("pod {name} to succeed"), POD_TIMEOUT, || async {
        let pod = pods.get(name).await.map_err(|e| e.to_string())?;
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        match phase.as_str() {
            "Succeeded" => Ok(pod.spec.and_then(|s| s.node_name).unwrap_or_default()),
            "Failed" => Ok(format!("FAILED: {:?}", pod.status)),
            other => Err(format!("phase {other:?}, status {:?}", pod.status)),
        }
    })
    .await?;
    if node.starts_with("FAILED") {
        return Err(format!("pod {name} failed: {node}").into());
    }
    Ok(node)
}

/// Runs a command with a node's view of the filesystem
/// (`e2e/cluster/node.sh exec`); returns (success, stdout).
async fn node_exec(node: &str, args: &[&str]) -> Result<(bool, String), std::io::Error> {
    let output = tokio::process::Command::new(repo_root().join("e2e/cluster/node.sh"))
        .arg("exec")
        .arg(node)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

#[tokio::test]
async fn a_pod_in_each_data_center_runs_and_kubectl_logs_returns_its_output() -> TestResult {
    let cluster = TestCluster::get().await?;
    require_ready_nodes(&cluster).await?;
    let ns = TestNamespace::create(&cluster, "nodes-logs").await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client().await?, ns.name());

    for zone in ZONES {
        let name = format!("hello-{zone}");
        let script = format!("echo \"hello from $NODE_NAME, token {}\"", ns.name());
        cluster
            .kubectl_with_input(
                &["apply", "-n", ns.name(), "-f", "-"],
                &pod_manifest(&name, zone, &script, None),
            )
            .await?;
    }
    for zone in ZONES {
        let name = format!("hello-{zone}");
        let node = wait_succeeded(&pods, &name).await?;
        assert_eq!(node, zone, "pod {name} must run on the node of its zone");
        let logs = cluster.kubectl(&["logs", "-n", ns.name(), &name]).await?;
        assert_eq!(
            logs,
            format!("hello from {zone}, token {}\n", ns.name()),
            "kubectl logs of {name}"
        );
    }
    ns.delete().await?;
    Ok(())
}

#[tokio::test]
async fn a_host_path_volume_writes_to_that_nodes_own_disk() -> TestResult {
    let cluster = TestCluster::get().await?;
    require_ready_nodes(&cluster).await?;
    let ns = TestNamespace::create(&cluster, "nodes-hostpath").await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client().await?, ns.name());

    // /var/lib/roam is each node's own data directory (see docs/cluster.md).
    let host_dir = format!("/var/lib/roam/e2e-{}", ns.name());
    let file = format!("{host_dir}/written.txt");
    let content = format!("written on dc-b for {}", ns.name());
    let script = format!("printf '%s' '{content}' > /host/written.txt && sync");
    cluster
        .kubectl_with_input(
            &["apply", "-n", ns.name(), "-f", "-"],
            &pod_manifest("writer", "dc-b", &script, Some(&host_dir)),
        )
        .await?;
    let node = wait_succeeded(&pods, "writer").await?;
    assert_eq!(node, "dc-b");

    let (exec_works, _) = node_exec("dc-b", &["true"]).await?;
    assert!(
        exec_works,
        "e2e/cluster/node.sh exec must work (run the test as root)"
    );
    let (found, read_back) = node_exec("dc-b", &["cat", &file]).await?;
    let (on_other_node, _) = node_exec("dc-a", &["test", "-e", &file]).await?;
    let _ = node_exec("dc-b", &["rm", "-rf", &host_dir]).await?;

    assert!(found, "{file} must exist on dc-b's disk");
    assert_eq!(read_back, content, "content of {file} on dc-b");
    assert!(
        !on_other_node,
        "{file} must not exist on dc-a: each node has its own disk"
    );
    assert!(
        !std::path::Path::new(&file).exists(),
        "{file} must not appear in the host's own view"
    );
    ns.delete().await?;
    Ok(())
}

#[tokio::test]
async fn pods_reach_each_other_across_data_centers_and_the_apiserver_by_its_service() -> TestResult
{
    let cluster = TestCluster::get().await?;
    require_ready_nodes(&cluster).await?;
    let ns = TestNamespace::create(&cluster, "nodes-network").await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client().await?, ns.name());

    let token = format!("pong from dc-b for {}", ns.name());
    cluster
        .kubectl_with_input(
            &["apply", "-n", ns.name(), "-f", "-"],
            &pod_manifest(
                "server",
                "dc-b",
                &format!("echo '{token}' | nc -l -p 8080"),
                None,
            ),
        )
        .await?;
    let server_ip = wait_until("pod server to get an address", POD_TIMEOUT, || async {
        let pod = pods.get("server").await.map_err(|e| e.to_string())?;
        let status = pod.status.unwrap_or_default();
        match (status.phase.as_deref(), status.pod_ip) {
            (Some("Running"), Some(ip)) => Ok(ip),
            (phase, _) => Err(format!("phase {phase:?}")),
        }
    })
    .await?;
    assert!(
        server_ip.starts_with("10.78.2."),
        "a dc-b pod gets an address from dc-b's pod subnet, got {server_ip}"
    );

    // nc can race the server's listen(): retry the connection a few times.
    let script = format!(
        "for i in 1 2 3 4 5; do nc -w 2 {server_ip} 8080 </dev/null && break; sleep 1; done; \
         wget -q -O- --no-check-certificate https://10.96.0.1/version"
    );
    cluster
        .kubectl_with_input(
            &["apply", "-n", ns.name(), "-f", "-"],
            &pod_manifest("client", "dc-c", &script, None),
        )
        .await?;
    wait_succeeded(&pods, "client").await?;
    let logs = cluster
        .kubectl(&["logs", "-n", ns.name(), "client"])
        .await?;
    let (first, rest) = logs.split_once('\n').unwrap_or((&logs, ""));
    assert_eq!(first, token, "what the dc-c pod read from the dc-b pod");
    let version: serde_json::Value = serde_json::from_str(rest)
        .map_err(|e| format!("/version through the kubernetes Service: {e}: {rest:?}"))?;
    assert_eq!(
        version["major"], "1",
        "/version through the kubernetes Service"
    );
    ns.delete().await?;
    Ok(())
}

#[tokio::test]
async fn a_mount_made_in_a_pod_under_var_lib_kubelet_propagates_to_its_node_only() -> TestResult {
    let cluster = TestCluster::get().await?;
    require_ready_nodes(&cluster).await?;
    let ns = TestNamespace::create(&cluster, "nodes-propagation").await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client().await?, ns.name());

    // What a CSI node plugin does: mount under the kubelet's directory from a
    // privileged container with Bidirectional propagation.
    let host_dir = format!("/var/lib/kubelet/plugins/e2e-{}", ns.name());
    let content = format!("mounted in a pod for {}", ns.name());
    let script = format!(
        "mkdir -p /host/mnt && mount -t tmpfs e2e-{ns} /host/mnt && printf '%s' '{content}' > /host/mnt/f",
        ns = ns.name()
    );
    let manifest =
        privileged_bidirectional(&pod_manifest("mounter", "dc-a", &script, Some(&host_dir)))?;
    cluster
        .kubectl_with_input(&["apply", "-n", ns.name(), "-f", "-"], &manifest)
        .await?;
    let node = wait_succeeded(&pods, "mounter").await?;
    assert_eq!(node, "dc-a");

    let mount_point = format!("{host_dir}/mnt");
    let (found, read_back) = node_exec("dc-a", &["cat", &format!("{mount_point}/f")]).await?;
    let (is_mount, _) = node_exec("dc-a", &["mountpoint", "-q", &mount_point]).await?;
    let (on_other_node, _) = node_exec("dc-b", &["mountpoint", "-q", &mount_point]).await?;
    let on_host = std::path::Path::new(&mount_point).join("f").exists();
    let _ = node_exec("dc-a", &["umount", &mount_point]).await?;
    let _ = node_exec("dc-a", &["rm", "-rf", &host_dir]).await?;

    assert!(
        found,
        "the file written on the pod's tmpfs must be visible on dc-a"
    );
    assert_eq!(read_back, content);
    assert!(
        is_mount,
        "{mount_point} must be a mount point in dc-a's view"
    );
    assert!(!on_other_node, "the mount must not reach dc-b");
    assert!(!on_host, "the mount must not reach the host's own view");
    ns.delete().await?;
    Ok(())
}

/// Heals a partition made by the test, also when the test fails midway.
struct HealOnDrop(&'static str, &'static str);

impl Drop for HealOnDrop {
    fn drop(&mut self) {
        let status = std::process::Command::new(repo_root().join("e2e/cluster/faults.sh"))
            .args(["heal", self.0, self.1])
            .stdin(std::process::Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("healing {} | {} failed: {status:?}", self.0, self.1);
        }
    }
}

async fn faults(args: &[&str]) -> TestResult {
    let output = tokio::process::Command::new(repo_root().join("e2e/cluster/faults.sh"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    if !output.status.success() {
        return Err(format!(
            "faults.sh {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(())
}

/// Runs a pod on `zone` that connects once to `ip:8080` and returns its logs.
async fn connect_once(
    cluster: &TestCluster,
    pods: &Api<Pod>,
    ns: &str,
    name: &str,
    zone: &str,
    ip: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let script = format!("nc -w 3 {ip} 8080 </dev/null; echo done");
    cluster
        .kubectl_with_input(
            &["apply", "-n", ns, "-f", "-"],
            &pod_manifest(name, zone, &script, None),
        )
        .await?;
    wait_succeeded(pods, name).await?;
    Ok(cluster.kubectl(&["logs", "-n", ns, name]).await?)
}

#[tokio::test]
async fn a_partition_cuts_two_data_centers_apart_until_healed() -> TestResult {
    let cluster = TestCluster::get().await?;
    require_ready_nodes(&cluster).await?;
    let ns = TestNamespace::create(&cluster, "nodes-partition").await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client().await?, ns.name());

    let token = format!("served by dc-b for {}", ns.name());
    let serve = format!("while true; do echo '{token}' | nc -l -p 8080; done");
    cluster
        .kubectl_with_input(
            &["apply", "-n", ns.name(), "-f", "-"],
            &pod_manifest("server", "dc-b", &serve, None),
        )
        .await?;
    let ip = wait_until("pod server to run", POD_TIMEOUT, || async {
        let status = pods
            .get("server")
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        match (status.phase.as_deref(), status.pod_ip) {
            (Some("Running"), Some(ip)) => Ok(ip),
            (phase, _) => Err(format!("phase {phase:?}")),
        }
    })
    .await?;
    // The server answers before the partition (retried: it may not listen yet).
    wait_until("the server to answer dc-a", POD_TIMEOUT, || async {
        let name = format!("before-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        match connect_once(&cluster, &pods, ns.name(), &name, "dc-a", &ip).await {
            Ok(logs) if logs.contains(&token) => Ok(()),
            Ok(logs) => Err(logs),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;

    let heal = HealOnDrop("dc-a", "dc-b");
    faults(&["partition", "dc-a", "dc-b"]).await?;
    let cut = connect_once(&cluster, &pods, ns.name(), "during-a", "dc-a", &ip).await?;
    let other = connect_once(&cluster, &pods, ns.name(), "during-c", "dc-c", &ip).await?;
    faults(&["heal", "dc-a", "dc-b"]).await?;
    std::mem::forget(heal);
    let healed = connect_once(&cluster, &pods, ns.name(), "after-a", "dc-a", &ip).await?;

    assert!(
        !cut.contains(&token),
        "dc-a must not reach dc-b while partitioned: {cut:?}"
    );
    assert!(
        other.contains(&token),
        "dc-c is not part of the partition and must reach dc-b: {other:?}"
    );
    assert!(
        healed.contains(&token),
        "dc-a must reach dc-b again once healed: {healed:?}"
    );
    ns.delete().await?;
    Ok(())
}
