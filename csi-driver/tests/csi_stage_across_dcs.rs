//! A volume staged, written, unstaged and staged again on a node in another
//! data center (after the primary moved there) is mounted without being
//! reformatted, and its files are intact. Then the stack leaves nothing
//! behind: no mount, loop device or FUSE export.
//!
//! Real parts: two `roam-csi storage` processes (dc-a, dc-b) and two
//! `roam-csi node` plugins on 127.0.0.1; the test plays the operator's part
//! through the storage system API (create, configure, transfer primary).
//! Needs root (FUSE, loop devices, mount).

mod csi_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use csi_support::*;
use roam_proto::csi::volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode};
use roam_proto::csi::*;
use roam_proto::storage::{FailurePolicy, GetReplicaRequest, Role, TransferPrimaryRequest};

const VOLUME: &str = "apps/data";
const REAL_ID: &str = "apps.data";
const SIZE: u64 = 64 << 20;

fn mount_capability() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

fn context(endpoint: &str, epoch: u64, dc: &str) -> HashMap<String, String> {
    publish_context(endpoint, REAL_ID, epoch, dc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restaged_in_another_dc_keeps_files_and_is_not_reformatted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (_sa, ep_a) = spawn_storage(dir, "dc-a", "node-a", free_port());
    let (_sb, ep_b) = spawn_storage(dir, "dc-b", "node-b", free_port());
    let mut sa = storage_client(&ep_a).await;
    let mut sb = storage_client(&ep_b).await;

    // The operator's part: one real volume per DC, a group with dc-a primary.
    two_member_volume(
        ("dc-a", &ep_a),
        ("dc-b", &ep_b),
        REAL_ID,
        SIZE,
        FailurePolicy::Block,
    )
    .await;

    let (_na, ep_na) = spawn_node(dir, "node-a", "dc-a", &ep_a, free_port());
    let (_nb, ep_nb) = spawn_node(dir, "node-b", "dc-b", &ep_b, free_port());
    let mut node_a = node_client(&ep_na).await;
    let mut node_b = node_client(&ep_nb).await;

    // NodeGetInfo: node id and zone.
    let info = node_b
        .node_get_info(NodeGetInfoRequest {})
        .await
        .expect("NodeGetInfo")
        .into_inner();
    assert_eq!(info.node_id, "node-b");
    assert_eq!(
        info.accessible_topology
            .expect("topology")
            .segments
            .get("topology.kubernetes.io/zone"),
        Some(&"dc-b".to_owned())
    );

    // Stage and publish in dc-a, write a file.
    let staging_a = dir.join("kubelet-a/staging");
    let target_a = dir.join("kubelet-a/pods/p1/mount");
    std::fs::create_dir_all(&staging_a).expect("staging dir");
    std::fs::create_dir_all(target_a.parent().expect("parent")).expect("pod dir");
    let stage_a = NodeStageVolumeRequest {
        volume_id: VOLUME.into(),
        publish_context: context(&ep_a, 1, "dc-a"),
        staging_target_path: staging_a.to_string_lossy().into(),
        volume_capability: Some(mount_capability()),
        ..Default::default()
    };
    node_a
        .node_stage_volume(stage_a.clone())
        .await
        .expect("NodeStageVolume in dc-a");
    // Idempotent: the same call again succeeds.
    node_a
        .node_stage_volume(stage_a)
        .await
        .expect("NodeStageVolume again");
    node_a
        .node_publish_volume(NodePublishVolumeRequest {
            volume_id: VOLUME.into(),
            publish_context: context(&ep_a, 1, "dc-a"),
            staging_target_path: staging_a.to_string_lossy().into(),
            target_path: target_a.to_string_lossy().into(),
            volume_capability: Some(mount_capability()),
            readonly: false,
            ..Default::default()
        })
        .await
        .expect("NodePublishVolume in dc-a");
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(target_a.join("data.bin")).expect("create file");
        f.write_all(&payload).expect("write");
        f.sync_all().expect("fsync");
    }
    let uuid_before = ext4_uuid(&staging_a);
    node_a
        .node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: VOLUME.into(),
            target_path: target_a.to_string_lossy().into(),
        })
        .await
        .expect("NodeUnpublishVolume");
    assert!(!target_a.exists(), "target path removed");
    node_a
        .node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: VOLUME.into(),
            staging_target_path: staging_a.to_string_lossy().into(),
        })
        .await
        .expect("NodeUnstageVolume");
    assert!(!is_mounted(&staging_a), "staging path unmounted");
    assert!(
        loops_under(dir).is_empty(),
        "loop devices left: {:?}",
        loops_under(dir)
    );
    assert!(
        !is_mounted(&dir.join("state-node-a/fuse/apps_data")),
        "FUSE export unmounted"
    );

    // The pod moves: the primary moves to dc-b at epoch 2.
    sa.transfer_primary(TransferPrimaryRequest {
        volume_id: REAL_ID.into(),
        target: "dc-b".into(),
        new_epoch: 2,
    })
    .await
    .expect("TransferPrimary to dc-b");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = sb
            .get_replica(GetReplicaRequest {
                volume_id: REAL_ID.into(),
            })
            .await
            .expect("GetReplica")
            .into_inner();
        if r.role == Role::Primary as i32 && r.epoch == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dc-b never became primary: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Stage in dc-b: same file system, same bytes.
    let staging_b = dir.join("kubelet-b/staging");
    std::fs::create_dir_all(&staging_b).expect("staging dir");
    node_b
        .node_stage_volume(NodeStageVolumeRequest {
            volume_id: VOLUME.into(),
            publish_context: context(&ep_b, 2, "dc-b"),
            staging_target_path: staging_b.to_string_lossy().into(),
            volume_capability: Some(mount_capability()),
            ..Default::default()
        })
        .await
        .expect("NodeStageVolume in dc-b");
    assert_eq!(
        ext4_uuid(&staging_b),
        uuid_before,
        "file system was not recreated"
    );
    let read = std::fs::read(staging_b.join("data.bin")).expect("file is there");
    assert!(
        read == payload,
        "file content intact ({} bytes read)",
        read.len()
    );

    // Stats: usage and a normal condition (dc-a is an in-sync secondary).
    let stats = node_b
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: VOLUME.into(),
            volume_path: staging_b.to_string_lossy().into(),
            staging_target_path: String::new(),
        })
        .await
        .expect("NodeGetVolumeStats")
        .into_inner();
    let bytes = stats
        .usage
        .iter()
        .find(|u| u.unit == 1)
        .expect("bytes usage");
    assert!(
        bytes.total > 0 && bytes.used >= payload.len() as i64,
        "{bytes:?}"
    );
    let condition = stats.volume_condition.expect("condition");
    assert!(!condition.abnormal, "{}", condition.message);

    node_b
        .node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: VOLUME.into(),
            staging_target_path: staging_b.to_string_lossy().into(),
        })
        .await
        .expect("NodeUnstageVolume in dc-b");
    // Unstaging again is a no-op.
    node_b
        .node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: VOLUME.into(),
            staging_target_path: staging_b.to_string_lossy().into(),
        })
        .await
        .expect("NodeUnstageVolume is idempotent");
    assert!(!is_mounted(&staging_b));
    assert!(
        loops_under(dir).is_empty(),
        "loop devices left: {:?}",
        loops_under(dir)
    );
}

/// UUID of the ext4 file system mounted at `path` (from its source device).
fn ext4_uuid(path: &std::path::Path) -> String {
    let out = std::process::Command::new("findmnt")
        .args(["-n", "-o", "UUID", "--mountpoint"])
        .arg(path)
        .output()
        .expect("findmnt");
    let uuid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !uuid.is_empty(),
        "no file system UUID at {}",
        path.display()
    );
    uuid
}
