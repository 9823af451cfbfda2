//! End to end: Roam installed in a cluster with three data centers (zones
//! dc-a, dc-b, dc-c), used the way a user uses it: a StorageClass, a PVC, and
//! pods that mount it.
//!
//! The scenario is the product's promise: a pod in dc-a writes files to a
//! Sync volume replicated in dc-a and dc-b; the pod is replaced by one in
//! dc-b, which finds every byte, and the VirtualVolume's primary moved to dc-b
//! with its epoch raised. Then an Async volume over three data centers gets the
//! same treatment towards dc-c.
//!
//! Runs against whatever cluster `KUBECONFIG` points at (the local cluster of
//! `make up`, or kind through `e2e/kind/run.sh`) once Roam is installed:
//! `make e2e`, or `cargo test -p roam-e2e --test roam`. The busybox image the
//! pods use is `roam.local/busybox:1.35` unless `ROAM_E2E_BUSYBOX` names
//! another one present on the nodes.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use roam_crds::VirtualVolume;
use roam_e2e::{TestCluster, TestNamespace, wait_until};
use serde_json::json;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const POD_TIMEOUT: Duration = Duration::from_secs(180);

fn busybox() -> String {
    std::env::var("ROAM_E2E_BUSYBOX").unwrap_or_else(|_| "roam.local/busybox:1.35".into())
}

fn storage_class(name: &str, params: serde_json::Value) -> String {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": { "name": name },
        "provisioner": roam_crds::DRIVER_NAME,
        "parameters": params,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": true
    })
    .to_string()
}

/// How a pod gets the volume: a mounted filesystem, or the raw device.
#[derive(Clone, Copy)]
enum Mode {
    Filesystem,
    Block,
}

/// Where the volume appears in the pods.
const BLOCK_DEVICE: &str = "/dev/roam-data";

fn pvc(name: &str, class: &str, mode: Mode, size: &str) -> String {
    let volume_mode = match mode {
        Mode::Filesystem => "Filesystem",
        Mode::Block => "Block",
    };
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": { "name": name },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": volume_mode,
            "storageClassName": class,
            "resources": { "requests": { "storage": size } }
        }
    })
    .to_string()
}

/// A pod in `zone` that mounts the claim at /data (or gets it as
/// [`BLOCK_DEVICE`]) and runs `script` once.
fn pod(name: &str, zone: &str, claim: &str, mode: Mode, script: &str) -> String {
    let mut container = json!({
        "name": "main",
        "image": busybox(),
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", script],
    });
    match mode {
        Mode::Filesystem => {
            container["volumeMounts"] = json!([{ "name": "data", "mountPath": "/data" }])
        }
        Mode::Block => {
            container["volumeDevices"] = json!([{ "name": "data", "devicePath": BLOCK_DEVICE }])
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "nodeSelector": { ZONE_LABEL: zone },
            "containers": [container],
            "volumes": [{ "name": "data", "persistentVolumeClaim": { "claimName": claim } }]
        }
    })
    .to_string()
}

/// Waits for the pod to succeed; returns its logs. A failed pod fails the
/// test with its logs.
async fn run_to_completion(
    cluster: &TestCluster,
    ns: &str,
    name: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let pods: Api<Pod> = Api::namespaced(cluster.client().await?, ns);
    let phase = wait_until(&format!("pod {name} to finish"), POD_TIMEOUT, || async {
        let pod = pods.get(name).await.map_err(|e| e.to_string())?;
        let status = pod.status.unwrap_or_default();
        match status.phase.as_deref() {
            Some(p @ ("Succeeded" | "Failed")) => Ok(p.to_string()),
            other => Err(format!(
                "phase {other:?}, conditions {:?}",
                status.conditions.unwrap_or_default()
            )),
        }
    })
    .await?;
    let logs = cluster.kubectl(&["logs", "-n", ns, name]).await?;
    if phase != "Succeeded" {
        return Err(format!("pod {name} failed; logs:\n{logs}").into());
    }
    Ok(logs)
}

/// Starts a pod on claim `data`-like `claim` in `zone` running `script`,
/// and waits for it to succeed; returns its logs.
async fn run_pod(
    cluster: &TestCluster,
    ns: &str,
    name: &str,
    zone: &str,
    claim: &str,
    mode: Mode,
    script: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    cluster
        .kubectl_with_input(
            &["apply", "-n", ns, "-f", "-"],
            &pod(name, zone, claim, mode, script),
        )
        .await?;
    run_to_completion(cluster, ns, name).await
}

/// Starts a pod on claim `data` (a filesystem) that keeps running
/// `script`, and waits until it is Ready.
async fn start_pod(
    cluster: &TestCluster,
    ns: &str,
    name: &str,
    zone: &str,
    script: &str,
) -> TestResult {
    cluster
        .kubectl_with_input(
            &["apply", "-n", ns, "-f", "-"],
            &pod(name, zone, "data", Mode::Filesystem, script),
        )
        .await?;
    cluster
        .kubectl(&[
            "wait",
            "-n",
            ns,
            &format!("pod/{name}"),
            "--for=condition=Ready",
            "--timeout=180s",
        ])
        .await?;
    Ok(())
}

/// The VirtualVolume behind a bound claim: the PV's CSI volume handle is
/// `<namespace>/<name>` of it.
async fn virtual_volume_of(
    cluster: &TestCluster,
    ns: &str,
    claim: &str,
) -> Result<(String, String), Box<dyn std::error::Error>> {
    let pv = cluster
        .kubectl(&[
            "get",
            "pvc",
            "-n",
            ns,
            claim,
            "-o",
            "jsonpath={.spec.volumeName}",
        ])
        .await?;
    let handle = cluster
        .kubectl(&[
            "get",
            "pv",
            pv.trim(),
            "-o",
            "jsonpath={.spec.csi.volumeHandle}",
        ])
        .await?;
    let (vv_ns, vv_name) = handle.trim().split_once('/').ok_or_else(|| {
        format!("volume handle {handle:?} of claim {ns}/{claim} is not <ns>/<name>")
    })?;
    Ok((vv_ns.to_string(), vv_name.to_string()))
}

async fn primary_and_epoch(
    cluster: &TestCluster,
    ns: &str,
    name: &str,
) -> Result<(String, u64), Box<dyn std::error::Error>> {
    let vvs: Api<VirtualVolume> = Api::namespaced(cluster.client().await?, ns);
    let status = vvs.get(name).await?.status.unwrap_or_default();
    Ok((status.primary_data_center.unwrap_or_default(), status.epoch))
}

/// The writer's and the reader's scripts: each prints checksums of what it
/// wrote or found, computed inside the pod.
fn scripts(mode: Mode) -> (String, String) {
    match mode {
        // 4 MiB of pseudo-random bytes plus a small tree.
        Mode::Filesystem => (
            "set -e; mkdir -p /data/tree/a/b; \
             head -c 4194304 /dev/urandom > /data/tree/blob; \
             echo 'written in the first data center' > /data/tree/a/b/note; \
             sync; cd /data/tree && md5sum blob a/b/note"
                .to_string(),
            "set -e; cd /data/tree && md5sum blob a/b/note".to_string(),
        ),
        // 4 MiB of pseudo-random bytes at a 16 MiB offset of the raw device,
        // written with O_DIRECT and fsync'd.
        Mode::Block => (
            format!(
                "set -e; head -c 4194304 /dev/urandom > /tmp/blob; \
                 dd if=/tmp/blob of={BLOCK_DEVICE} bs=1M seek=16 oflag=direct conv=fsync 2>/dev/null; \
                 md5sum < /tmp/blob"
            ),
            format!(
                "set -e; dd if={BLOCK_DEVICE} bs=1M skip=16 count=4 iflag=direct 2>/dev/null | md5sum"
            ),
        ),
    }
}

/// A namespace of its own with a claim `data` of `size` on a StorageClass of
/// its own with these parameters.
async fn claim_on_own_class(
    class_params: serde_json::Value,
    mode: Mode,
    size: &str,
) -> Result<(TestCluster, TestNamespace, String), Box<dyn std::error::Error>> {
    let cluster = TestCluster::get().await?;
    let ns = TestNamespace::create(&cluster, "e2e").await?;
    let class = format!("roam-{}", ns.name());
    cluster
        .kubectl_with_input(&["apply", "-f", "-"], &storage_class(&class, class_params))
        .await?;
    cluster
        .kubectl_with_input(
            &["apply", "-n", ns.name(), "-f", "-"],
            &pvc("data", &class, mode, size),
        )
        .await?;
    Ok((cluster, ns, class))
}

/// Deletes the claim `data` (and with it, the volume), its namespace and
/// its StorageClass, each waited for.
async fn delete_claim_and_class(
    cluster: &TestCluster,
    ns: TestNamespace,
    class: &str,
) -> TestResult {
    cluster
        .kubectl(&["delete", "pvc", "-n", ns.name(), "data", "--wait=true"])
        .await?;
    ns.delete().await?;
    cluster
        .kubectl(&["delete", "storageclass", class, "--wait=true"])
        .await?;
    Ok(())
}

/// Deletes the pod, then its claim `data` (and with it, the volume), each
/// waited for.
async fn delete_pod_and_claim(cluster: &TestCluster, ns: &str, pod: &str) -> TestResult {
    cluster
        .kubectl(&["delete", "pod", "-n", ns, pod, "--wait=true"])
        .await?;
    cluster
        .kubectl(&["delete", "pvc", "-n", ns, "data", "--wait=true"])
        .await?;
    Ok(())
}

/// Writes data in `from`, then reads it back in `to` after the pod moved,
/// and checks that the primary followed with the epoch raised. Deleting the
/// claim at the end deletes the VirtualVolume.
async fn data_follows_the_pod(
    class_params: serde_json::Value,
    mode: Mode,
    from: &str,
    to: &str,
) -> TestResult {
    let moved = Move {
        from,
        served_from: from,
        to,
    };
    data_follows(class_params, mode, "64Mi", scripts(mode), moved).await
}

/// Where a pod writes, which data center's replica serves it there (the
/// same one, or the nearest holding a replica), and where a pod then reads.
struct Move<'a> {
    from: &'a str,
    served_from: &'a str,
    to: &'a str,
}

async fn data_follows(
    class_params: serde_json::Value,
    mode: Mode,
    size: &str,
    (writer, reader): (String, String),
    Move {
        from,
        served_from,
        to,
    }: Move<'_>,
) -> TestResult {
    let (cluster, ns, class) = claim_on_own_class(class_params, mode, size).await?;

    let written = run_pod(&cluster, ns.name(), "writer", from, "data", mode, &writer).await?;
    let (vv_ns, vv_name) = virtual_volume_of(&cluster, ns.name(), "data").await?;
    let (primary, epoch) = primary_and_epoch(&cluster, &vv_ns, &vv_name).await?;
    assert_eq!(
        primary, served_from,
        "the primary serving the writing pod in {from}"
    );
    cluster
        .kubectl(&["delete", "pod", "-n", ns.name(), "writer", "--wait=true"])
        .await?;

    let read = run_pod(&cluster, ns.name(), "reader", to, "data", mode, &reader).await?;
    assert_eq!(
        read, written,
        "every byte written in {from} is read in {to}"
    );

    let (moved_primary, moved_epoch) = primary_and_epoch(&cluster, &vv_ns, &vv_name).await?;
    assert_eq!(moved_primary, to, "the primary followed the pod to {to}");
    assert!(
        moved_epoch > epoch,
        "the epoch rises with the move ({epoch} -> {moved_epoch})"
    );

    delete_pod_and_claim(&cluster, ns.name(), "reader").await?;
    let vvs: Api<VirtualVolume> = Api::namespaced(cluster.client().await?, &vv_ns);
    wait_until(
        &format!("VirtualVolume {vv_ns}/{vv_name} to be deleted with its claim"),
        POD_TIMEOUT,
        || async {
            match vvs.get_opt(&vv_name).await {
                Ok(None) => Ok(()),
                Ok(Some(vv)) => Err(format!(
                    "still there, phase {:?}",
                    vv.status.map(|s| s.phase)
                )),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    ns.delete().await?;
    cluster
        .kubectl(&["delete", "storageclass", &class, "--wait=true"])
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_sync_volume_follows_its_pod_from_dc_a_to_dc_b_with_every_byte() -> TestResult {
    data_follows_the_pod(
        json!({ "dataCenters": "dc-a,dc-b", "transferType": "Sync", "failurePolicy": "Block" }),
        Mode::Filesystem,
        "dc-a",
        "dc-b",
    )
    .await
}

/// Claim 5 with real pods: a pod in dc-c, which holds no replica, runs there
/// and is served by the nearest replica (dc-b, by the example DataCenters'
/// proximity); a pod in dc-a then reads the same 32 MiB.
#[tokio::test]
async fn a_pod_in_a_data_center_without_a_replica_is_served_by_the_nearest_one() -> TestResult {
    let writer = "set -e; head -c 33554432 /dev/urandom > /data/blob; sync; md5sum /data/blob";
    let reader = "set -e; md5sum /data/blob";
    data_follows(
        json!({ "dataCenters": "dc-a,dc-b", "transferType": "Sync", "failurePolicy": "Block" }),
        Mode::Filesystem,
        "128Mi",
        (writer.to_owned(), reader.to_owned()),
        Move {
            from: "dc-c",
            served_from: "dc-b",
            to: "dc-a",
        },
    )
    .await
}

#[tokio::test]
async fn a_raw_block_volume_follows_its_pod_from_dc_b_to_dc_a_with_every_byte() -> TestResult {
    data_follows_the_pod(
        json!({ "dataCenters": "dc-a,dc-b", "transferType": "Sync", "failurePolicy": "Block" }),
        Mode::Block,
        "dc-b",
        "dc-a",
    )
    .await
}

#[tokio::test]
async fn an_async_volume_over_three_data_centers_follows_its_pod_to_dc_c() -> TestResult {
    data_follows_the_pod(
        json!({ "dataCenters": "dc-a,dc-b,dc-c", "transferType": "Async", "failurePolicy": "Degrade" }),
        Mode::Filesystem,
        "dc-b",
        "dc-c",
    )
    .await
}

/// Standard output of `command` run in a pod (kubectl exec), for commands
/// that always print something. An exec stream now and then ends with its
/// output lost (exit 0, nothing on stdout); that is retried, for up to 30 s,
/// rather than taken for the command's answer.
async fn exec_stdout(
    cluster: &TestCluster,
    ns: &str,
    pod: &str,
    command: &[&str],
) -> Result<String, Box<dyn std::error::Error>> {
    let mut args = vec!["exec", "-n", ns, pod, "--"];
    args.extend_from_slice(command);
    let out = wait_until(
        &format!("output of {}", command.join(" ")),
        Duration::from_secs(30),
        || async {
            match cluster.kubectl(&args).await {
                Ok(out) if !out.trim().is_empty() => Ok(out),
                Ok(_) => Err("exit 0 and no output".to_string()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    Ok(out)
}

/// Asks for `size` on a claim (the external-resizer takes it from there).
async fn resize_claim(
    cluster: &TestCluster,
    ns: &str,
    claim: &str,
    size: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let patch = json!({ "spec": { "resources": { "requests": { "storage": size } } } }).to_string();
    cluster
        .kubectl(&[
            "patch",
            "pvc",
            "-n",
            ns,
            claim,
            "--type=merge",
            "-p",
            &patch,
        ])
        .await?;
    Ok(())
}

/// Size in KiB of the filesystem mounted at /data in a running pod.
async fn filesystem_kib(
    cluster: &TestCluster,
    ns: &str,
    pod: &str,
) -> Result<u64, Box<dyn std::error::Error>> {
    let df = exec_stdout(cluster, ns, pod, &["df", "-k", "/data"]).await?;
    // "Filesystem 1K-blocks Used Available Use% Mounted on", then one line.
    let size = df
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| format!("no size in df's output {df:?}"))?;
    Ok(size)
}

#[tokio::test]
async fn a_mounted_xfs_volume_grows_while_its_pod_runs_and_keeps_its_files() -> TestResult {
    // xfs grows online with CAP_SYS_ADMIN alone; ext4's online resize also
    // needs CAP_SYS_RESOURCE (see docs/csi-conformance.md). xfs needs 300 MB
    // at least.
    let (cluster, ns, class) = claim_on_own_class(
        json!({ "dataCenters": "dc-a,dc-c", "transferType": "Sync", "fsType": "xfs" }),
        Mode::Filesystem,
        "320Mi",
    )
    .await?;
    let script = "set -e; head -c 8388608 /dev/urandom > /data/blob; sync; \
                  md5sum /data/blob > /tmp/written; sleep 3600";
    start_pod(&cluster, ns.name(), "app", "dc-c", script).await?;
    let written = wait_until("the pod to write its file", POD_TIMEOUT, || async {
        exec_stdout(&cluster, ns.name(), "app", &["cat", "/tmp/written"])
            .await
            .map_err(|e| e.to_string())
    })
    .await?;
    let before = filesystem_kib(&cluster, ns.name(), "app").await?;
    assert!(
        before < 320 * 1024,
        "a 320Mi claim starts below 320 MiB ({before} KiB)"
    );

    resize_claim(&cluster, ns.name(), "data", "512Mi").await?;
    // The external-resizer calls ControllerExpandVolume, the kubelet then
    // NodeExpandVolume on the mounted volume; the pod sees the space.
    let after = wait_until(
        "the filesystem to grow in the running pod",
        POD_TIMEOUT,
        || async {
            match filesystem_kib(&cluster, ns.name(), "app").await {
                Ok(kib) if kib > 400 * 1024 => Ok(kib),
                Ok(kib) => Err(format!("still {kib} KiB")),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    assert!(after > before);
    let read = exec_stdout(&cluster, ns.name(), "app", &["md5sum", "/data/blob"]).await?;
    assert_eq!(
        read, written,
        "the file written before the growth is intact"
    );
    // The new space takes writes.
    cluster
        .kubectl(&[
            "exec",
            "-n",
            ns.name(),
            "app",
            "--",
            "sh",
            "-c",
            "head -c 201326592 /dev/zero > /data/more && sync",
        ])
        .await?;
    // The kubelet records the new capacity once NodeExpandVolume succeeded.
    wait_until(
        "the claim to report its new capacity",
        POD_TIMEOUT,
        || async {
            let capacity = cluster
                .kubectl(&[
                    "get",
                    "pvc",
                    "-n",
                    ns.name(),
                    "data",
                    "-o",
                    "jsonpath={.status.capacity.storage}",
                ])
                .await
                .map_err(|e| e.to_string())?;
            match capacity.trim() {
                "512Mi" => Ok(()),
                other => Err(format!("capacity {other}")),
            }
        },
    )
    .await?;

    delete_pod_and_claim(&cluster, ns.name(), "app").await?;
    ns.delete().await?;
    cluster
        .kubectl(&["delete", "storageclass", &class, "--wait=true"])
        .await?;
    Ok(())
}

#[tokio::test]
async fn an_ext4_volume_grown_between_pods_is_bigger_in_the_next_pod_with_its_files() -> TestResult
{
    let (cluster, ns, class) = claim_on_own_class(
        json!({ "dataCenters": "dc-b,dc-c", "transferType": "Sync", "fsType": "ext4" }),
        Mode::Filesystem,
        "64Mi",
    )
    .await?;
    let (writer, reader) = scripts(Mode::Filesystem);
    let written = run_pod(
        &cluster,
        ns.name(),
        "writer",
        "dc-b",
        "data",
        Mode::Filesystem,
        &writer,
    )
    .await?;
    cluster
        .kubectl(&["delete", "pod", "-n", ns.name(), "writer", "--wait=true"])
        .await?;

    resize_claim(&cluster, ns.name(), "data", "192Mi").await?;
    // The external-resizer grows the volume; the filesystem follows when the
    // next pod's node stages it.
    let reader = format!("{reader}; df -k /data | tail -1");
    let read = run_pod(
        &cluster,
        ns.name(),
        "reader",
        "dc-c",
        "data",
        Mode::Filesystem,
        &reader,
    )
    .await?;
    let (sums, df) = read
        .trim_end()
        .rsplit_once('\n')
        .ok_or_else(|| format!("no df line in {read:?}"))?;
    assert_eq!(
        format!("{sums}\n"),
        written,
        "every file survives the growth"
    );
    let kib: u64 = df
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse().ok())
        .ok_or_else(|| format!("no size in df line {df:?}"))?;
    assert!(
        kib > 150 * 1024,
        "the filesystem fills the grown volume ({kib} KiB)"
    );

    delete_pod_and_claim(&cluster, ns.name(), "reader").await?;
    ns.delete().await?;
    cluster
        .kubectl(&["delete", "storageclass", &class, "--wait=true"])
        .await?;
    Ok(())
}

/// A pod walks every data center on a `roam-sync` claim: dc-a, dc-b, dc-c and
/// back to dc-a, adding a file at each stop. At the end every file is there
/// with its own contents, and the epoch rose by exactly one per move.
#[tokio::test]
async fn a_pod_walks_every_data_center_and_keeps_every_file() -> TestResult {
    let (cluster, ns, class) = claim_on_own_class(
        json!({ "dataCenters": "dc-a,dc-b,dc-c", "transferType": "Sync", "failurePolicy": "Degrade" }),
        Mode::Filesystem,
        "64Mi",
    )
    .await?;
    let walk = ["dc-a", "dc-b", "dc-c", "dc-a"];
    let mut last_epoch = None;
    let mut vv = None;
    for (stop, zone) in walk.iter().enumerate() {
        let name = format!("stop-{stop}");
        // Each stop checks the files of the stops before it, then adds its own.
        let checks: String = (0..stop)
            .map(|i| format!("grep -qx 'written at stop {i}' /data/stop-{i}; "))
            .collect();
        let script = format!(
            "set -e; {checks}echo 'written at stop {stop}' > /data/stop-{stop}; sync; \
             ls /data | grep -c '^stop-'"
        );
        let files = run_pod(
            &cluster,
            ns.name(),
            &name,
            zone,
            "data",
            Mode::Filesystem,
            &script,
        )
        .await?;
        assert_eq!(
            files.trim(),
            (stop + 1).to_string(),
            "the pod at stop {stop} ({zone}) finds every earlier file and adds its own"
        );
        let (vv_ns, vv_name) = match &vv {
            Some(v) => v,
            None => vv.insert(virtual_volume_of(&cluster, ns.name(), "data").await?),
        };
        let (primary, epoch) = primary_and_epoch(&cluster, vv_ns, vv_name).await?;
        assert_eq!(&primary, zone, "the primary follows the pod to {zone}");
        if let Some(before) = last_epoch {
            assert_eq!(epoch, before + 1, "one epoch per move, into {zone}");
        }
        last_epoch = Some(epoch);
        cluster
            .kubectl(&["delete", "pod", "-n", ns.name(), &name, "--wait=true"])
            .await?;
    }
    delete_claim_and_class(&cluster, ns, &class).await
}

/// Static provisioning: a VirtualVolume applied with kubectl, a PV and a PVC
/// bound to it by hand, and a pod that writes and reads through them.
#[tokio::test]
async fn a_virtual_volume_applied_by_hand_serves_a_pod_through_a_static_pv() -> TestResult {
    let cluster = TestCluster::get().await?;
    let ns = TestNamespace::create(&cluster, "e2e").await?;
    let pv_name = format!("static-{}", ns.name());
    cluster
        .kubectl_with_input(
            &["apply", "-n", ns.name(), "-f", "-"],
            &json!({
                "apiVersion": "roam.dev/v1alpha1",
                "kind": "VirtualVolume",
                "metadata": { "name": "static" },
                "spec": {
                    "size": "64Mi",
                    "dataCenters": ["dc-a", "dc-b"],
                    "transferType": "Sync",
                    "failurePolicy": "Block",
                    "fsType": "ext4"
                }
            })
            .to_string(),
        )
        .await?;
    let vvs: Api<VirtualVolume> = Api::namespaced(cluster.client().await?, ns.name());
    wait_until("VirtualVolume static to be Ready", POD_TIMEOUT, || async {
        let phase = vvs
            .get("static")
            .await
            .map_err(|e| e.to_string())?
            .status
            .map(|s| s.phase);
        match phase {
            Some(roam_crds::VolumePhase::Ready) => Ok(()),
            other => Err(format!("phase {other:?}")),
        }
    })
    .await?;
    cluster
        .kubectl_with_input(
            &["apply", "-f", "-"],
            &json!({
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": { "name": pv_name },
                "spec": {
                    "capacity": { "storage": "64Mi" },
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "",
                    "volumeMode": "Filesystem",
                    "claimRef": { "namespace": ns.name(), "name": "data" },
                    "csi": {
                        "driver": roam_crds::DRIVER_NAME,
                        "volumeHandle": format!("{}/static", ns.name()),
                        "fsType": "ext4"
                    }
                }
            })
            .to_string(),
        )
        .await?;
    cluster
        .kubectl_with_input(
            &["apply", "-n", ns.name(), "-f", "-"],
            &json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": { "name": "data" },
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "",
                    "volumeName": pv_name,
                    "resources": { "requests": { "storage": "64Mi" } }
                }
            })
            .to_string(),
        )
        .await?;
    let script = "set -e; echo 'statically provisioned' > /data/note; sync; cat /data/note";
    let out = run_pod(
        &cluster,
        ns.name(),
        "static-user",
        "dc-b",
        "data",
        Mode::Filesystem,
        script,
    )
    .await?;
    assert_eq!(out.trim(), "statically provisioned");
    let (primary, _) = primary_and_epoch(&cluster, ns.name(), "static").await?;
    assert_eq!(primary, "dc-b", "the primary followed the pod");

    cluster
        .kubectl(&[
            "delete",
            "pod",
            "-n",
            ns.name(),
            "static-user",
            "--wait=true",
        ])
        .await?;
    cluster
        .kubectl(&["delete", "pvc", "-n", ns.name(), "data", "--wait=true"])
        .await?;
    cluster
        .kubectl(&["delete", "pv", &pv_name, "--wait=true"])
        .await?;
    cluster
        .kubectl(&[
            "delete",
            "virtualvolume",
            "-n",
            ns.name(),
            "static",
            "--wait=true",
        ])
        .await?;
    ns.delete().await?;
    Ok(())
}

/// Sets `spec.cordoned` of a DataCenter.
async fn set_cordoned(cluster: &TestCluster, dc: &str, cordoned: bool) -> TestResult {
    let patch = json!({ "spec": { "cordoned": cordoned } }).to_string();
    cluster
        .kubectl(&["patch", "datacenter", dc, "--type", "merge", "-p", &patch])
        .await?;
    Ok(())
}

/// Draining a data center: with dc-a cordoned, the primary of a volume
/// written there moves to dc-b by planned relocation once its pod is gone,
/// the DataCenter counts no primary left of it, and a new pod in dc-a is
/// served from dc-b with every byte. dc-a is uncordoned again, whatever
/// happened.
#[tokio::test]
async fn cordoning_a_data_center_moves_its_primaries_out_with_every_byte() -> TestResult {
    let cluster = TestCluster::get().await?;
    let drained = cordon_and_read_back(&cluster).await;
    set_cordoned(&cluster, "dc-a", false).await?;
    drained
}

async fn cordon_and_read_back(cluster: &TestCluster) -> TestResult {
    let (_, ns, class) = claim_on_own_class(
        json!({ "dataCenters": "dc-a,dc-b", "transferType": "Sync", "failurePolicy": "Block" }),
        Mode::Filesystem,
        "64Mi",
    )
    .await?;
    let (writer, reader) = scripts(Mode::Filesystem);
    let written = run_pod(
        cluster,
        ns.name(),
        "writer",
        "dc-a",
        "data",
        Mode::Filesystem,
        &writer,
    )
    .await?;
    let (vv_ns, vv_name) = virtual_volume_of(cluster, ns.name(), "data").await?;
    let (primary, epoch) = primary_and_epoch(cluster, &vv_ns, &vv_name).await?;
    assert_eq!(primary, "dc-a");
    cluster
        .kubectl(&["delete", "pod", "-n", ns.name(), "writer", "--wait=true"])
        .await?;

    set_cordoned(cluster, "dc-a", true).await?;
    let vvs: Api<VirtualVolume> = Api::namespaced(cluster.client().await?, &vv_ns);
    wait_until(
        "the primary to leave cordoned dc-a",
        POD_TIMEOUT,
        || async {
            let status = vvs
                .get(&vv_name)
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            match status.primary_data_center.as_deref() {
                Some("dc-b") if status.epoch > epoch => Ok(()),
                other => Err(format!("primary {other:?} at epoch {}", status.epoch)),
            }
        },
    )
    .await?;
    let dcs: Api<roam_crds::DataCenter> = Api::all(cluster.client().await?);
    wait_until("dc-a to report its primaries", POD_TIMEOUT, || async {
        let status = dcs
            .get("dc-a")
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        // Other tests' volumes may still be attached there; this one is not.
        match (status.primaries, status.primaries_attached) {
            (Some(left), Some(attached)) if left == attached => Ok(()),
            other => Err(format!("primaries, attached: {other:?}")),
        }
    })
    .await?;

    // A pod in the cordoned data center is served from dc-b.
    let read = run_pod(
        cluster,
        ns.name(),
        "reader",
        "dc-a",
        "data",
        Mode::Filesystem,
        &reader,
    )
    .await?;
    assert_eq!(read, written, "every byte written before the cordon");
    let (primary, _) = primary_and_epoch(cluster, &vv_ns, &vv_name).await?;
    assert_eq!(primary, "dc-b", "no primary returns to cordoned dc-a");

    delete_pod_and_claim(cluster, ns.name(), "reader").await?;
    ns.delete().await?;
    cluster
        .kubectl(&["delete", "storageclass", &class, "--wait=true"])
        .await?;
    Ok(())
}

/// The FUSE connection serving a volume's export on whichever node stages
/// it: the device minor of the FUSE mount at `.../fuse/<ns>_<name>` in any
/// process's mount table (the node plugin's).
fn fuse_connection_of(vv_ns: &str, vv_name: &str) -> Option<String> {
    let suffix = format!("/fuse/{vv_ns}_{vv_name}");
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let Ok(table) = std::fs::read_to_string(entry.path().join("mountinfo")) else {
            continue;
        };
        for line in table.lines() {
            // id parent major:minor root mount-point options... - type source ...
            let fields: Vec<&str> = line.split(' ').collect();
            let fs_type = line.split(" - ").nth(1).and_then(|t| t.split(' ').next());
            if fields.len() > 4
                && fields[4].ends_with(&suffix)
                && fs_type.is_some_and(|t| t == "fuse" || t.starts_with("fuse."))
            {
                return fields[2].split(':').nth(1).map(str::to_owned);
            }
        }
    }
    None
}

/// Aborts a FUSE connection the way a crashed export server leaves it:
/// every request on it fails from now on.
fn abort_fuse_connection(minor: &str) -> TestResult {
    let connections = std::path::Path::new("/sys/fs/fuse/connections");
    if !connections.join(minor).exists() {
        let mounted = std::process::Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(connections)
            .status()?;
        if !mounted.success() {
            return Err(format!("mounting fusectl at {}: {mounted}", connections.display()).into());
        }
    }
    std::fs::write(connections.join(minor).join("abort"), "1")?;
    Ok(())
}

/// The reasons of the Events recorded on one object.
async fn event_reasons(
    cluster: &TestCluster,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<Vec<(String, String)>, String> {
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(cluster.client().await.map_err(|e| e.to_string())?, ns);
    let selector = format!("involvedObject.kind={kind},involvedObject.name={name}");
    let list = events
        .list(&kube::api::ListParams::default().fields(&selector))
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect())
}

async fn frontend_condition(
    vvs: &Api<VirtualVolume>,
    name: &str,
) -> Result<(String, String, String), String> {
    let status = vvs
        .get(name)
        .await
        .map_err(|e| e.to_string())?
        .status
        .unwrap_or_default();
    let find = |t: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    let frontend = find(roam_crds::conditions::FRONTEND_HEALTHY)
        .ok_or_else(|| format!("no FrontendHealthy condition in {:?}", status.conditions))?;
    let ready = find(roam_crds::conditions::READY).unwrap_or_default();
    Ok((frontend.0, frontend.1, ready.0))
}

/// A pod's frontend breaks (its FUSE connection aborted, as when the
/// process serving it dies): the kubelet records the node plugin's abnormal
/// VolumeCondition on the pod, the VirtualVolume says FrontendHealthy=False
/// and not Ready, and its claim has a Warning Event. Once the pod is gone
/// the volume is healthy again.
#[tokio::test]
async fn a_broken_frontend_shows_in_the_pod_the_volume_and_the_claim() -> TestResult {
    let (cluster, ns, class) = claim_on_own_class(
        json!({ "dataCenters": "dc-a,dc-b", "transferType": "Sync" }),
        Mode::Filesystem,
        "64Mi",
    )
    .await?;
    let script = "set -e; echo before > /data/before; sync; sleep 3600";
    start_pod(&cluster, ns.name(), "app", "dc-a", script).await?;
    let (vv_ns, vv_name) = virtual_volume_of(&cluster, ns.name(), "data").await?;
    let vvs: Api<VirtualVolume> = Api::namespaced(cluster.client().await?, &vv_ns);
    wait_until("the volume to be Ready", POD_TIMEOUT, || async {
        match frontend_condition(&vvs, &vv_name).await? {
            (f, _, r) if f == "True" && r == "True" => Ok(()),
            other => Err(format!("FrontendHealthy, reason, Ready: {other:?}")),
        }
    })
    .await?;

    let minor = fuse_connection_of(&vv_ns, &vv_name)
        .ok_or_else(|| format!("no FUSE mount of {vv_ns}/{vv_name} in any mount table"))?;
    abort_fuse_connection(&minor)?;

    wait_until(
        "the volume to report its broken frontend",
        POD_TIMEOUT,
        || async {
            match frontend_condition(&vvs, &vv_name).await? {
                (f, reason, r) if f == "False" && reason == "ExportBroken" && r == "False" => {
                    Ok(())
                }
                other => Err(format!("FrontendHealthy, reason, Ready: {other:?}")),
            }
        },
    )
    .await?;
    wait_until(
        "a FrontendBroken Event on the claim",
        POD_TIMEOUT,
        || async {
            let reasons =
                event_reasons(&cluster, ns.name(), "PersistentVolumeClaim", "data").await?;
            reasons
                .iter()
                .any(|(r, _)| r == "FrontendBroken")
                .then_some(())
                .ok_or_else(|| format!("events: {reasons:?}"))
        },
    )
    .await?;
    wait_until(
        "the kubelet to record the abnormal condition on the pod",
        POD_TIMEOUT,
        || async {
            let reasons = event_reasons(&cluster, ns.name(), "Pod", "app").await?;
            reasons
                .iter()
                .any(|(r, m)| r == "VolumeConditionAbnormal" && m.contains("export"))
                .then_some(())
                .ok_or_else(|| format!("events: {reasons:?}"))
        },
    )
    .await?;

    // The pod goes; the broken stack is torn down and the report removed.
    cluster
        .kubectl(&["delete", "pod", "-n", ns.name(), "app", "--wait=true"])
        .await?;
    wait_until("the volume to be healthy again", POD_TIMEOUT, || async {
        match frontend_condition(&vvs, &vv_name).await? {
            (f, _, _) if f == "True" => Ok(()),
            other => Err(format!("FrontendHealthy, reason, Ready: {other:?}")),
        }
    })
    .await?;
    delete_claim_and_class(&cluster, ns, &class).await
}
