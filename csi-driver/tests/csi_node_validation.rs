//! The node plugin refuses bad requests with the right code and a message
//! naming the field, and changes nothing. Runs a real `roam-csi node`
//! process; its storage system is not needed for these calls.

mod csi_support;

use csi_support::*;
use roam_proto::csi::identity_client::IdentityClient;
use roam_proto::csi::node_client::NodeClient;
use roam_proto::csi::*;
use tonic::Code;
use tonic::transport::Channel;

#[tokio::test]
async fn bad_requests_get_precise_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    // The storage endpoint points at nothing: Probe must say not ready.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (_node, endpoint) = spawn_node(tmp.path(), "node-x", "dc-x", &dead, port);
    let channel = loop {
        match Channel::from_shared(endpoint.clone())
            .expect("uri")
            .connect()
            .await
        {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    };
    let mut identity = IdentityClient::new(channel.clone());
    let info = identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .expect("GetPluginInfo")
        .into_inner();
    assert_eq!(info.name, "roam.dev");
    let probe = identity
        .probe(ProbeRequest {})
        .await
        .expect("Probe")
        .into_inner();
    assert_eq!(
        probe.ready,
        Some(false),
        "not ready without its storage system"
    );

    let mut node = NodeClient::new(channel);
    let staging = tmp.path().join("staging");
    check(
        node.node_stage_volume(NodeStageVolumeRequest {
            staging_target_path: staging.to_string_lossy().into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "volume_id",
    );
    check(
        node.node_stage_volume(NodeStageVolumeRequest {
            volume_id: "ns/v".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "staging_target_path",
    );
    check(
        node.node_stage_volume(NodeStageVolumeRequest {
            volume_id: "ns/v".into(),
            staging_target_path: staging.to_string_lossy().into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "volume_capability",
    );
    check(
        node.node_publish_volume(NodePublishVolumeRequest {
            volume_id: "ns/v".into(),
            staging_target_path: staging.to_string_lossy().into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "target_path",
    );
    check(
        node.node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: "ns/missing".into(),
            volume_path: staging.to_string_lossy().into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "ns/missing",
    );
    check(
        node.node_expand_volume(NodeExpandVolumeRequest {
            volume_id: "ns/missing".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "volume_path",
    );
    // Unpublishing and unstaging what was never there succeed and leave nothing.
    let target = tmp.path().join("never");
    node.node_unpublish_volume(NodeUnpublishVolumeRequest {
        volume_id: "ns/v".into(),
        target_path: target.to_string_lossy().into(),
    })
    .await
    .expect("NodeUnpublishVolume of nothing");
    node.node_unstage_volume(NodeUnstageVolumeRequest {
        volume_id: "ns/v".into(),
        staging_target_path: staging.to_string_lossy().into(),
    })
    .await
    .expect("NodeUnstageVolume of nothing");
    assert!(!staging.exists() && !target.exists(), "nothing was created");
}

fn check<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    field: &str,
) {
    let e = result.expect_err("must fail");
    assert_eq!(e.code(), code, "{}", e.message());
    assert!(
        e.message().contains(field),
        "{:?} should name {field}",
        e.message()
    );
}
