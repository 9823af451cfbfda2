//! The generated CRDs installed on a real kube-apiserver: valid examples are
//! accepted, and each invalid resource is rejected with a message that says
//! what is wrong. Needs the test control plane (`e2e/cluster/control-plane.sh
//! start`, or started on demand by roam-e2e).

use roam_e2e::{TestCluster, TestNamespace};

/// kube's TLS needs a process-wide rustls provider.
fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn vv(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: roam.dev/v1alpha1\nkind: VirtualVolume\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

fn dc(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: roam.dev/v1alpha1\nkind: DataCenter\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

fn cvg(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: roam.dev/v1alpha1\nkind: CopyVolumeGroup\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

const CVG_OK: &str = "  desiredPrimary: a\n  epoch: 3\n  transferType: Sync\n  failurePolicy: Block\n  sizeBytes: 1024\n  members:\n  - {dataCenter: a, node: n1, endpoint: 'http://n1:1', volumeId: v}\n  - {dataCenter: b, node: n2, endpoint: 'http://n2:1', volumeId: v}\n";

#[tokio::test]
async fn invalid_resources_are_rejected_with_a_precise_message() {
    crypto();
    let cluster = TestCluster::get().await.expect("control plane");
    cluster.install_roam_crds().await.expect("install CRDs");
    let ns = TestNamespace::create(&cluster, "roam-api")
        .await
        .expect("namespace");
    let n = ns.name().to_string();
    let suffix = n.rsplit('-').next().unwrap_or("x").to_string();

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "no data center",
            vv("v1", "  size: 1Gi\n"),
            "name at least one data center",
        ),
        (
            "empty data center list",
            vv("v2", "  size: 1Gi\n  dataCenters: []\n"),
            "name at least one data center",
        ),
        (
            "list and count",
            vv("v3", "  size: 1Gi\n  dataCenters: [a]\n  replicas: 2\n"),
            "set spec.dataCenters or spec.replicas, not both",
        ),
        (
            "lag bound on Sync",
            vv(
                "v4",
                "  size: 1Gi\n  dataCenters: [a]\n  transferType: Sync\n  maxLagBytes: 10\n",
            ),
            "apply only to transferType Async",
        ),
        (
            "flush level on Async",
            vv(
                "v4f",
                "  size: 1Gi\n  dataCenters: [a]\n  transferType: Async\n  syncLevel: Flush\n",
            ),
            "spec.syncLevel Flush applies only to transferType Sync",
        ),
        (
            "size not a quantity",
            vv("v5", "  size: lots\n  dataCenters: [a]\n"),
            "spec.size must be a positive quantity",
        ),
        (
            "size zero",
            vv("v6", "  size: '0'\n  dataCenters: [a]\n"),
            "spec.size must be a positive quantity",
        ),
        (
            "unknown transfer type",
            vv(
                "v7",
                "  size: 1Gi\n  dataCenters: [a]\n  transferType: Fast\n",
            ),
            "spec.transferType: Unsupported value: \"Fast\"",
        ),
        (
            "duplicate data center",
            vv("v8", "  size: 1Gi\n  dataCenters: [a, a]\n"),
            "spec.dataCenters[1]: Duplicate value",
        ),
        (
            "zero replicas",
            vv("v9", "  size: 1Gi\n  replicas: 0\n"),
            "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1",
        ),
        (
            "zero grace period",
            vv(
                "v10",
                "  size: 1Gi\n  dataCenters: [a]\n  failover: {gracePeriodSeconds: 0}\n",
            ),
            "spec.failover.gracePeriodSeconds",
        ),
        (
            "unknown filesystem",
            vv("v11", "  size: 1Gi\n  dataCenters: [a]\n  fsType: ntfs\n"),
            "spec.fsType: Unsupported value: \"ntfs\"",
        ),
        (
            "too many data centers",
            vv(
                "v12",
                &format!(
                    "  size: 1Gi\n  dataCenters: [{}]\n",
                    (0..17)
                        .map(|i| format!("d{i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            "spec.dataCenters: Too many: 17: must have at most 16 items",
        ),
        (
            "proximity zero",
            dc(&format!("bad-prox-{suffix}"), "  proximity: {dc-b: 0}\n"),
            "spec.proximity values must be positive",
        ),
        (
            "zone and selector",
            dc(
                &format!("bad-sel-{suffix}"),
                "  zone: z\n  nodeSelector: {site: a}\n",
            ),
            "set at most one of spec.zone and spec.nodeSelector",
        ),
        (
            "empty zone",
            dc(&format!("bad-zone-{suffix}"), "  zone: ''\n"),
            "spec.zone must not be empty",
        ),
        (
            "duplicate member",
            cvg(
                "g1",
                "  desiredPrimary: a\n  epoch: 1\n  transferType: Sync\n  failurePolicy: Block\n  sizeBytes: 1\n  members:\n  - {dataCenter: a, node: n1, endpoint: e, volumeId: v}\n  - {dataCenter: a, node: n2, endpoint: e, volumeId: v}\n",
            ),
            r#"spec.members[1]: Duplicate value: {"dataCenter":"a"}"#,
        ),
        (
            "desired primary not a member",
            cvg(
                "g2",
                "  desiredPrimary: z\n  epoch: 1\n  transferType: Sync\n  failurePolicy: Block\n  sizeBytes: 1\n  members:\n  - {dataCenter: a, node: n1, endpoint: e, volumeId: v}\n",
            ),
            "spec.desiredPrimary must be the data center of one of spec.members",
        ),
        (
            "volume ids differ",
            cvg(
                "g3",
                "  desiredPrimary: a\n  epoch: 1\n  transferType: Sync\n  failurePolicy: Block\n  sizeBytes: 1\n  members:\n  - {dataCenter: a, node: n1, endpoint: e, volumeId: v}\n  - {dataCenter: b, node: n2, endpoint: e, volumeId: w}\n",
            ),
            "volumeId must be the same on every member",
        ),
        (
            "no members",
            cvg(
                "g4",
                "  desiredPrimary: a\n  epoch: 1\n  transferType: Sync\n  failurePolicy: Block\n  sizeBytes: 1\n  members: []\n",
            ),
            "spec.members: Invalid value",
        ),
    ];
    assert!(cases.len() >= 10);
    let mut failures = Vec::new();
    for (what, yaml, want) in &cases {
        match cluster
            .kubectl_with_input(&["-n", &n, "create", "-f", "-"], yaml)
            .await
        {
            Ok(out) => failures.push(format!("{what}: accepted ({})", out.trim())),
            Err(e) => {
                let msg = e.to_string();
                if !msg.contains(want) {
                    failures.push(format!(
                        "{what}: rejected, but the message lacks {want:?}:\n{msg}"
                    ));
                }
            }
        }
    }

    // Updates: what must not change.
    cluster
        .kubectl_with_input(
            &["-n", &n, "create", "-f", "-"],
            &vv(
                "grow",
                "  size: 1Gi\n  dataCenters: [a, b]\n  transferType: Async\n",
            ),
        )
        .await
        .expect("valid volume");
    cluster
        .kubectl_with_input(&["-n", &n, "create", "-f", "-"], &cvg("g-ok", CVG_OK))
        .await
        .expect("valid group");
    let updates: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "shrink",
            vec![
                "patch",
                "vv",
                "grow",
                "--type=merge",
                "-p",
                r#"{"spec":{"size":"512Mi"}}"#,
            ],
            "spec.size may grow but never shrink",
        ),
        (
            "change data centers",
            vec![
                "patch",
                "vv",
                "grow",
                "--type=merge",
                "-p",
                r#"{"spec":{"dataCenters":["a","c"]}}"#,
            ],
            "spec.dataCenters is immutable",
        ),
        (
            "change transfer type",
            vec![
                "patch",
                "vv",
                "grow",
                "--type=merge",
                "-p",
                r#"{"spec":{"transferType":"Sync"}}"#,
            ],
            "spec.transferType is immutable",
        ),
        (
            "change sync level",
            vec![
                "patch",
                "vv",
                "grow",
                "--type=merge",
                "-p",
                r#"{"spec":{"syncLevel":"Flush"}}"#,
            ],
            "spec.syncLevel is immutable",
        ),
        (
            "epoch backwards",
            vec![
                "patch",
                "cvg",
                "g-ok",
                "--type=merge",
                "-p",
                r#"{"spec":{"epoch":2}}"#,
            ],
            "spec.epoch never decreases",
        ),
    ];
    for (what, args, want) in &updates {
        let mut full = vec!["-n", n.as_str()];
        full.extend(args.iter().copied());
        match cluster.kubectl(&full).await {
            Ok(out) => failures.push(format!("{what}: accepted ({})", out.trim())),
            Err(e) if !e.to_string().contains(want) => {
                failures.push(format!("{what}: message lacks {want:?}: {e}"))
            }
            Err(_) => {}
        }
    }
    // And what may: growing, and the epoch rising.
    cluster
        .kubectl(&[
            "-n",
            &n,
            "patch",
            "vv",
            "grow",
            "--type=merge",
            "-p",
            r#"{"spec":{"size":"2Gi"}}"#,
        ])
        .await
        .expect("growing is allowed");
    cluster
        .kubectl(&[
            "-n",
            &n,
            "patch",
            "cvg",
            "g-ok",
            "--type=merge",
            "-p",
            r#"{"spec":{"epoch":4}}"#,
        ])
        .await
        .expect("epoch may rise");

    let _ = ns.delete().await;
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len() + updates.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn examples_are_accepted() {
    crypto();
    let cluster = TestCluster::get().await.expect("control plane");
    cluster.install_roam_crds().await.expect("install CRDs");
    let ns = TestNamespace::create(&cluster, "roam-examples")
        .await
        .expect("namespace");
    let root = roam_e2e::repo_root().join("crds/examples");
    for f in [
        "datacenters.yaml",
        "virtualvolume-sync.yaml",
        "virtualvolume-async.yaml",
    ] {
        let path = root.join(f);
        let p = path.to_string_lossy();
        cluster
            .kubectl(&["-n", ns.name(), "apply", "--dry-run=server", "-f", &p])
            .await
            .unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let out = cluster
        .kubectl(&["explain", "virtualvolumes.spec.transferType"])
        .await
        .expect("explain");
    assert!(out.contains("How writes reach the secondaries"), "{out}");
    let _ = ns.delete().await;
}
