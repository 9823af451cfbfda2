//! The log-in (claim 13) end to end: ControllerPublishVolume for a node in
//! another data center returns only after the primary moved there, and its
//! publish context names the new primary's storage endpoint, the real volume
//! id and the new epoch.
//!
//! Real parts: the control plane (roam-e2e), the operator
//! (target/debug/roam-operator, scoped to this test's namespace and
//! DataCenters), two `roam-csi storage` processes, `roam-csi controller`.

mod csi_support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use csi_support::*;
use k8s_openapi::api::core::v1::Node as KubeNode;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use roam_crds::VirtualVolume;
use roam_proto::csi::controller_client::ControllerClient;
use roam_proto::csi::volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode};
use roam_proto::csi::*;
use roam_proto::storage::{GetReplicaRequest, Role};
use tonic::transport::Channel;

fn capability() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

fn node_object(name: &str, zone: &str, endpoint: &str) -> KubeNode {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"topology.kubernetes.io/zone": zone},
            "annotations": {"roam.dev/storage-endpoint": endpoint},
        },
    }))
    .expect("node object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_in_another_dc_returns_after_the_primary_moved() {
    let cluster = roam_e2e::TestCluster::get().await.expect("control plane");
    let ns = roam_e2e::TestNamespace::create(&cluster, "csi-login")
        .await
        .expect("namespace");
    let repo = roam_e2e::repo_root();
    cluster
        .kubectl(&[
            "apply",
            "-f",
            &repo.join("charts/roam/crds").to_string_lossy(),
        ])
        .await
        .expect("CRDs");
    let operator_bin = repo.join("target/debug/roam-operator");
    assert!(
        operator_bin.exists(),
        "{} is missing: cargo build -p roam-operator",
        operator_bin.display()
    );
    let client = cluster.client().await.expect("client");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let suffix = ns.name().to_owned();
    let (dc_a, dc_b) = (format!("{suffix}-a"), format!("{suffix}-b"));
    let (node_a, node_b) = (format!("{suffix}-node-a"), format!("{suffix}-node-b"));

    let (_sa, ep_a) = spawn_storage(dir, &dc_a, &node_a, free_port());
    let (_sb, ep_b) = spawn_storage(dir, &dc_b, &node_b, free_port());
    let mut storage_b = storage_client(&ep_b).await;
    storage_client(&ep_a).await;

    let nodes: Api<KubeNode> = Api::all(client.clone());
    for (name, zone, ep) in [(&node_a, &dc_a, &ep_a), (&node_b, &dc_b, &ep_b)] {
        nodes
            .create(&PostParams::default(), &node_object(name, zone, ep))
            .await
            .expect("create Node");
    }
    for (dc, near) in [(&dc_a, &dc_b), (&dc_b, &dc_a)] {
        let yaml = format!(
            "apiVersion: roam.dev/v1alpha1\nkind: DataCenter\nmetadata:\n  name: {dc}\n  labels:\n    roam.dev/test: {suffix}\nspec:\n  zone: {dc}\n  proximity:\n    {near}: 10\n"
        );
        cluster
            .kubectl_with_input(&["apply", "-f", "-"], &yaml)
            .await
            .expect("DataCenter");
    }

    let kubeconfig = cluster.kubeconfig().to_owned();
    let _operator = Proc::spawn(
        "operator",
        Command::new(&operator_bin)
            .args([
                "--no-leader-election",
                "--watch-namespace",
                ns.name(),
                "--datacenter-selector",
                &format!("roam.dev/test={suffix}"),
                "--metrics-addr",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .env("KUBECONFIG", &kubeconfig),
        &dir.join("operator.log"),
    );
    let port = free_port();
    let _controller = Proc::spawn(
        "controller",
        Command::new(BIN)
            .args([
                "controller",
                "--csi-endpoint",
                &format!("tcp://127.0.0.1:{port}"),
                "--volume-namespace",
                ns.name(),
                "--wait-timeout",
                "90",
            ])
            .env("KUBECONFIG", &kubeconfig),
        &dir.join("controller.log"),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let channel = roam_e2e::wait_until("controller listening", Duration::from_secs(60), || async {
        let channel = Channel::from_shared(endpoint.clone()).map_err(|e| e.to_string())?;
        channel.connect().await.map_err(|e| e.to_string())
    })
    .await
    .expect("controller");
    let mut controller = ControllerClient::new(channel);

    let created = controller
        .create_volume(CreateVolumeRequest {
            name: "login-volume".into(),
            capacity_range: Some(CapacityRange {
                required_bytes: 32 << 20,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![capability()],
            parameters: HashMap::from([
                ("dataCenters".to_owned(), format!("{dc_a},{dc_b}")),
                (
                    "csi.storage.k8s.io/pvc/namespace".to_owned(),
                    ns.name().to_owned(),
                ),
            ]),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "CreateVolume: {e}\noperator log:\n{}",
                std::fs::read_to_string(dir.join("operator.log")).unwrap_or_default()
            )
        })
        .into_inner()
        .volume
        .expect("volume");
    assert_eq!(created.volume_id, format!("{}/login-volume", ns.name()));
    assert_eq!(created.capacity_bytes, 32 << 20);

    let volumes: Api<VirtualVolume> = Api::namespaced(client.clone(), ns.name());
    let before = volumes.get("login-volume").await.expect("VirtualVolume");
    let status = before.status.clone().expect("status");
    let first = status.primary_data_center.clone().expect("a primary");
    // Publish to a node in the other data center.
    let (other_node, other_dc, other_ep) = if first == dc_a {
        (&node_b, &dc_b, &ep_b)
    } else {
        (&node_a, &dc_a, &ep_a)
    };
    let published = controller
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: created.volume_id.clone(),
            node_id: other_node.clone(),
            volume_capability: Some(capability()),
            ..Default::default()
        })
        .await
        .expect("ControllerPublishVolume")
        .into_inner()
        .publish_context;
    // Returned only after the primary moved: the directory says so already.
    let after = volumes.get("login-volume").await.expect("VirtualVolume");
    let after_status = after.status.expect("status");
    assert_eq!(
        after_status.primary_data_center.as_deref(),
        Some(other_dc.as_str())
    );
    assert!(
        after_status.epoch > status.epoch,
        "epoch rose: {} -> {}",
        status.epoch,
        after_status.epoch
    );
    assert_eq!(published.get("dataCenter"), Some(other_dc));
    assert_eq!(published.get("storageEndpoint"), Some(other_ep));
    assert_eq!(
        published.get("epoch"),
        Some(&after_status.epoch.to_string())
    );
    let real_id = published.get("volumeId").expect("volumeId").clone();
    // ... and so does the storage system that is now primary.
    let mut storage_new = if other_ep == &ep_b {
        storage_b.clone()
    } else {
        storage_client(&ep_a).await
    };
    let replica = storage_new
        .get_replica(GetReplicaRequest { volume_id: real_id })
        .await
        .expect("GetReplica")
        .into_inner();
    assert_eq!(replica.role, Role::Primary as i32);
    assert_eq!(replica.epoch, after_status.epoch);
    let _ = &mut storage_b;

    // Publishing again is idempotent; unpublishing clears the log-in.
    let again = controller
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: created.volume_id.clone(),
            node_id: other_node.clone(),
            volume_capability: Some(capability()),
            ..Default::default()
        })
        .await
        .expect("ControllerPublishVolume again")
        .into_inner()
        .publish_context;
    assert_eq!(again, published);
    controller
        .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: created.volume_id.clone(),
            node_id: other_node.clone(),
            ..Default::default()
        })
        .await
        .expect("ControllerUnpublishVolume");
    let unpublished = volumes.get("login-volume").await.expect("VirtualVolume");
    assert!(
        !unpublished
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("roam.dev/attached-node"),
        "unpublish removed the log-in annotation"
    );
    controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: created.volume_id.clone(),
            ..Default::default()
        })
        .await
        .expect("DeleteVolume");

    for node in [&node_a, &node_b] {
        let _ = nodes.delete(node, &DeleteParams::default()).await;
    }
    for dc in [&dc_a, &dc_b] {
        let _ = cluster
            .kubectl(&["delete", "datacenter", dc, "--wait=false"])
            .await;
    }
    let _ = ns.delete().await;
}
