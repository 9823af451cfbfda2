//! NodeGetVolumeStats tells the truth about the host side: a staged volume
//! whose FUSE export broke (its connection aborted, as a crash of whatever
//! serves it would leave it) reports an abnormal VolumeCondition that names
//! the export, instead of usage figures and "healthy". The volume can still
//! be unstaged, and nothing is left.
//!
//! Real parts: a `roam-csi storage` process and a `roam-csi node` plugin on
//! 127.0.0.1, FUSE, loop devices, ext4, the kernel's fusectl. Needs root.

mod csi_support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use csi_support::*;
use roam_proto::csi::node_client::NodeClient;
use roam_proto::csi::volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode};
use roam_proto::csi::*;
use tonic::transport::Channel;

const VOLUME: &str = "broken-frontend";

/// Aborts the FUSE connection mounted at `mountpoint` through fusectl
/// (`/sys/fs/fuse/connections/<minor of its st_dev>/abort`).
fn abort_fuse(mountpoint: &Path) {
    let connections = Path::new("/sys/fs/fuse/connections");
    if std::fs::read_dir(connections).map_or(true, |mut d| d.next().is_none()) {
        // fusectl is not always mounted; mounting it twice is harmless.
        let _ = std::process::Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(connections)
            .status();
    }
    let dev = std::fs::metadata(mountpoint)
        .expect("stat FUSE mountpoint")
        .dev();
    let abort = connections.join(libc::minor(dev).to_string()).join("abort");
    std::fs::write(&abort, b"1").unwrap_or_else(|e| panic!("write {}: {e}", abort.display()));
}

struct Staged {
    storage: Proc,
    node: Proc,
    storage_endpoint: String,
    client: NodeClient<Channel>,
    staging: PathBuf,
    metrics_port: u16,
}

/// A node plugin whose health reporter checks every second, with metrics.
fn spawn_observed_node(dir: &Path, storage_endpoint: &str) -> (Proc, String, u16) {
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let (node, endpoint) = spawn_node_with(
        dir,
        "node-a",
        "dc-a",
        storage_endpoint,
        free_port(),
        &["--health-interval", "1", "--metrics-listen", &metrics],
    );
    (node, endpoint, metrics_port)
}

/// The value of `roam_csi_node_frontend_healthy` for the volume, or None when
/// the plugin serves no such series.
async fn frontend_healthy(metrics_port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", metrics_port))
        .await
        .ok()?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).await.ok()?;
    let series = format!("roam_csi_node_frontend_healthy{{volume=\"{VOLUME}\",node=\"node-a\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(str::to_owned)
}

/// Polls the metric until it is `want` (None: no series), for 30 s.
async fn wait_frontend_healthy(metrics_port: u16, want: Option<&str>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let seen = frontend_healthy(metrics_port).await;
        if seen.as_deref() == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "roam_csi_node_frontend_healthy is {seen:?}, not {want:?}, after 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A storage system with a sole-member volume, a node plugin, the volume
/// staged (ext4) through it.
async fn stage_one(dir: &Path) -> Staged {
    let (storage, storage_endpoint) = spawn_storage(dir, "dc-a", "node-a", free_port());
    sole_member_volume(&storage_endpoint, "dc-a", VOLUME, 64 << 20).await;
    let (node_proc, node_endpoint, metrics_port) = spawn_observed_node(dir, &storage_endpoint);
    let mut node = node_client(&node_endpoint).await;

    let staging = dir.join("kubelet/staging");
    std::fs::create_dir_all(&staging).expect("staging dir");
    node.node_stage_volume(NodeStageVolumeRequest {
        volume_id: VOLUME.into(),
        publish_context: publish_context(&storage_endpoint, VOLUME, 1, "dc-a"),
        staging_target_path: staging.to_string_lossy().into(),
        volume_capability: Some(VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            })),
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
        }),
        ..Default::default()
    })
    .await
    .expect("NodeStageVolume");
    Staged {
        storage,
        node: node_proc,
        storage_endpoint,
        client: node,
        staging,
        metrics_port,
    }
}

async fn stats(node: &NodeClient<Channel>, staging: &Path) -> NodeGetVolumeStatsResponse {
    node.clone()
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: VOLUME.into(),
            volume_path: staging.to_string_lossy().into(),
            ..Default::default()
        })
        .await
        .expect("NodeGetVolumeStats")
        .into_inner()
}

async fn unstage_leaves_nothing(node: &NodeClient<Channel>, dir: &Path, staging: &Path) {
    node.clone()
        .node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: VOLUME.into(),
            staging_target_path: staging.to_string_lossy().into(),
        })
        .await
        .expect("NodeUnstageVolume");
    assert!(!is_mounted(staging), "staging path unmounted");
    assert!(
        !is_mounted(&dir.join("state-node-a/fuse").join(VOLUME)),
        "FUSE export unmounted"
    );
    assert!(
        loops_under(dir).is_empty(),
        "loop devices left: {:?}",
        loops_under(dir)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_frontend_is_an_abnormal_volume_condition() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let s = stage_one(dir).await;

    let healthy = stats(&s.client, &s.staging).await;
    let condition = healthy.volume_condition.expect("a volume condition");
    assert!(
        !condition.abnormal,
        "healthy at first: {}",
        condition.message
    );
    assert!(!healthy.usage.is_empty(), "usage of a healthy volume");
    wait_frontend_healthy(s.metrics_port, Some("1")).await;

    abort_fuse(&dir.join("state-node-a/fuse").join(VOLUME));
    let broken = stats(&s.client, &s.staging).await;
    let condition = broken.volume_condition.expect("a volume condition");
    assert!(condition.abnormal, "abnormal once the export broke");
    assert!(
        condition.message.contains("FUSE export"),
        "the condition names the export: {}",
        condition.message
    );
    // The health reporter finds it too, and forgets it once unstaged.
    wait_frontend_healthy(s.metrics_port, Some("0")).await;
    unstage_leaves_nothing(&s.client, dir, &s.staging).await;
    wait_frontend_healthy(s.metrics_port, None).await;
}

/// The node plugin is killed with kill -9 while a volume is staged, and
/// started again: the volume's export died with the first process. The new
/// one says so in the volume's condition, and its NodeUnstageVolume clears
/// the dead stack (mount, loop device, FUSE mount).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_staged_before_a_plugin_crash_is_reported_and_cleared() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut s = stage_one(dir).await;
    s.node.kill9();
    let (_restarted, endpoint, metrics_port) = spawn_observed_node(dir, &s.storage_endpoint);
    let node = node_client(&endpoint).await;
    // The new plugin never staged it, yet reports its export as lost.
    wait_frontend_healthy(metrics_port, Some("0")).await;

    let after = stats(&node, &s.staging).await;
    let condition = after.volume_condition.expect("a volume condition");
    assert!(condition.abnormal, "abnormal after the plugin restarted");
    assert!(
        condition.message.contains("earlier run of the node plugin"),
        "the condition says why: {}",
        condition.message
    );
    unstage_leaves_nothing(&node, dir, &s.staging).await;
    wait_frontend_healthy(metrics_port, None).await;
    drop(s.storage);
}
