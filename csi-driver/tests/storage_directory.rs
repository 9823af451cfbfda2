//! The directory in the Kubernetes API (`roam-csi storage --directory
//! kubernetes`, what the chart runs): a primary records a member it goes on
//! without in its CopyVolumeGroup's status before it acknowledges, the
//! operator's status writes leave that record alone, and a primary the
//! failover fenced there stops acknowledging within its lease.
//!
//! Real parts: the control plane (roam-e2e), Roam's CRDs, two `roam-csi
//! storage` processes reading and writing their CopyVolumeGroup through the
//! API server; the secondary's crash is a kill -9.

mod csi_support;

use std::time::{Duration, Instant};

use csi_support::*;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use roam_crds::directory::{FENCE_EPOCH_ANNOTATION, PRIMARY_LEASE};
use roam_crds::{CopyVolumeGroup, OPERATOR_MANAGER};
use roam_proto::storage::storage_client::StorageClient;
use roam_proto::storage::{FailurePolicy, FlushRequest, WriteRequest};
use tonic::transport::Channel;

const SIZE: u64 = 16 << 20;

fn spawn_storage_with_directory(
    dir: &std::path::Path,
    dc: &str,
    kubeconfig: &std::path::Path,
) -> (Proc, String) {
    spawn_storage_with(
        dir,
        dc,
        &format!("node-{dc}"),
        free_port(),
        &["--directory", "kubernetes", "--ack-timeout-ms", "1000"],
        &[("KUBECONFIG", kubeconfig)],
    )
}

async fn write(c: &mut StorageClient<Channel>, volume: &str, offset: u64) -> Result<(), String> {
    c.write(WriteRequest {
        volume_id: volume.into(),
        epoch: 1,
        offset,
        data: vec![7; 4096],
        fua: false,
    })
    .await
    .map_err(|s| format!("write: {}", s.message()))?;
    c.flush(FlushRequest {
        volume_id: volume.into(),
        epoch: 1,
    })
    .await
    .map_err(|s| format!("flush: {}", s.message()))?;
    Ok(())
}

async fn out_of_sync(groups: &Api<CopyVolumeGroup>, name: &str) -> Vec<String> {
    groups
        .get(name)
        .await
        .expect("the group")
        .status
        .unwrap_or_default()
        .out_of_sync
}

/// Polls `what` every 100 ms for at most `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_sync_set_and_the_lease_live_in_the_copy_volume_group() {
    let cluster = roam_e2e::TestCluster::get().await.expect("control plane");
    cluster.install_roam_crds().await.expect("CRDs");
    let ns = roam_e2e::TestNamespace::create(&cluster, "directory")
        .await
        .expect("namespace");
    let client = cluster.client().await.expect("client");
    let groups: Api<CopyVolumeGroup> = Api::namespaced(client, ns.name());
    let name = "data";
    let volume = roam_crds::real_volume_id(ns.name(), name);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_a, ep_a) = spawn_storage_with_directory(tmp.path(), "dc-a", cluster.kubeconfig());
    let (mut b, ep_b) = spawn_storage_with_directory(tmp.path(), "dc-b", cluster.kubeconfig());

    // The group as the operator records it: dc-a primary at epoch 1.
    let member = |dc: &str, ep: &str| serde_json::json!({"dataCenter": dc, "node": format!("node-{dc}"), "endpoint": ep, "volumeId": volume});
    let cvg: CopyVolumeGroup = serde_json::from_value(serde_json::json!({
        "apiVersion": "roam.dev/v1alpha1", "kind": "CopyVolumeGroup",
        "metadata": {"name": name},
        "spec": {"members": [member("dc-a", &ep_a), member("dc-b", &ep_b)],
                 "desiredPrimary": "dc-a", "epoch": 1, "transferType": "Sync",
                 "failurePolicy": "Degrade", "sizeBytes": SIZE},
    }))
    .expect("group object");
    groups
        .create(&PostParams::default(), &cvg)
        .await
        .expect("create the group");
    let operator_status = |members: &str| {
        serde_json::json!({"apiVersion": "roam.dev/v1alpha1", "kind": "CopyVolumeGroup",
            "status": {"primary": "dc-a", "epoch": 1, "phase": members}})
    };
    let ssa = PatchParams::apply(OPERATOR_MANAGER).force();
    groups
        .patch_status(name, &ssa, &Patch::Apply(operator_status("Ready")))
        .await
        .expect("status");

    two_member_volume(
        ("dc-a", &ep_a),
        ("dc-b", &ep_b),
        &volume,
        SIZE,
        FailurePolicy::Degrade,
    )
    .await;
    let mut primary = storage_client(&ep_a).await;
    // Both in sync: writes complete, nothing is recorded.
    within(Duration::from_secs(60), "a write with both members", || {
        let mut p = primary.clone();
        let v = volume.clone();
        async move { write(&mut p, &v, 0).await.is_ok() }
    })
    .await;
    assert!(out_of_sync(&groups, name).await.is_empty());

    // dc-b crashes. Under Degrade the primary goes on without it, and only
    // once the group's status names it.
    b.kill9();
    write(&mut primary, &volume, 4096)
        .await
        .expect("a write under Degrade, dc-b down");
    assert_eq!(out_of_sync(&groups, name).await, vec!["dc-b".to_string()]);

    // The operator's status writes never carry the record: it stays.
    groups
        .patch_status(name, &ssa, &Patch::Apply(operator_status("Degraded")))
        .await
        .expect("operator status");
    assert_eq!(out_of_sync(&groups, name).await, vec!["dc-b".to_string()]);

    // A failover fences the group at epoch 2 for dc-b. The old primary
    // learns it at its next renewal, and stops acknowledging within its
    // lease whatever happens to it.
    let fenced_at = Instant::now();
    groups
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {FENCE_EPOCH_ANNOTATION: "2"}},
                "spec": {"desiredPrimary": "dc-b", "epoch": 2},
            })),
        )
        .await
        .expect("fence");
    within(
        PRIMARY_LEASE + Duration::from_secs(5),
        "the fenced primary refuses writes",
        || {
            let mut p = primary.clone();
            let v = volume.clone();
            async move { write(&mut p, &v, 8192).await.is_err() }
        },
    )
    .await;
    assert!(fenced_at.elapsed() <= PRIMARY_LEASE + Duration::from_secs(5));
    let refused = write(&mut primary, &volume, 8192).await.unwrap_err();
    assert!(
        refused.contains("another primary") || refused.contains("lease ran out"),
        "{refused}"
    );
    // Fenced, it can record nothing either: the record is unchanged.
    assert_eq!(out_of_sync(&groups, name).await, vec!["dc-b".to_string()]);
}
