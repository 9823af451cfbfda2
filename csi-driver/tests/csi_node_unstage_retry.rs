//! NodeUnstageVolume while another process still holds the volume's loop
//! device (udev, blkid, a monitoring agent): the node plugin waits for the
//! kernel to let go of the file, or, when it does not let go in time, fails
//! with UNAVAILABLE naming the device and keeps the volume tracked, so that
//! the CO's retry finishes the job. Afterwards no mount, loop device or FUSE
//! export is left. Mount and block mode.
//!
//! Real parts: a `roam-csi storage` process and a `roam-csi node` plugin on
//! 127.0.0.1, FUSE, loop devices, ext4; the holder is a separate process.
//! Needs root.

mod csi_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use csi_support::*;
use roam_proto::csi::node_client::NodeClient;
use roam_proto::csi::volume_capability::{
    AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode,
};
use roam_proto::csi::*;
use tonic::Code;
use tonic::transport::Channel;

const SIZE: u64 = 64 << 20;

fn capability(block: bool) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            })
        }),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

/// Another process with `device` open, closed when the child is killed.
struct Holder(Child);

impl Holder {
    fn open(device: &str) -> Self {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec 3<"$1"; echo held; read -r _"#)
            .arg("holder")
            .arg(device)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn holder");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("holder stdout"))
            .read_line(&mut line)
            .expect("read holder");
        assert_eq!(line.trim(), "held", "the holder opened {device}");
        Self(child)
    }

    fn kill(mut self) {
        self.0.kill().expect("kill holder");
        self.0.wait().expect("reap holder");
    }
}

/// The loop device whose backing file lies under `dir` (`losetup -a`).
fn the_loop_device(dir: &Path) -> String {
    let loops = loops_under(dir);
    assert_eq!(
        loops.len(),
        1,
        "one loop device under the state dir: {loops:?}"
    );
    loops[0].split(':').next().expect("losetup line").to_owned()
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    _storage: Proc,
    _node: Proc,
    node: NodeClient<Channel>,
    storage_endpoint: String,
}

async fn setup(volume: &str) -> Setup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_owned();
    let (storage, storage_endpoint) = spawn_storage(&dir, "dc-a", "node-a", free_port());
    sole_member_volume(&storage_endpoint, "dc-a", volume, SIZE).await;
    let (node_proc, node_endpoint) =
        spawn_node(&dir, "node-a", "dc-a", &storage_endpoint, free_port());
    let node = node_client(&node_endpoint).await;
    Setup {
        _tmp: tmp,
        dir,
        _storage: storage,
        _node: node_proc,
        node,
        storage_endpoint,
    }
}

async fn stage(s: &mut Setup, volume: &str, staging: &Path, block: bool) {
    std::fs::create_dir_all(staging).expect("staging dir");
    s.node
        .node_stage_volume(NodeStageVolumeRequest {
            volume_id: volume.into(),
            publish_context: publish_context(&s.storage_endpoint, volume, 1, "dc-a"),
            staging_target_path: staging.to_string_lossy().into(),
            volume_capability: Some(capability(block)),
            ..Default::default()
        })
        .await
        .expect("NodeStageVolume");
}

fn unstage_request(volume: &str, staging: &Path) -> NodeUnstageVolumeRequest {
    NodeUnstageVolumeRequest {
        volume_id: volume.into(),
        staging_target_path: staging.to_string_lossy().into(),
    }
}

fn assert_nothing_left(s: &Setup, staging: &Path, volume: &str) {
    assert!(!is_mounted(staging), "staging path unmounted");
    assert!(
        loops_under(&s.dir).is_empty(),
        "loop devices left: {:?}",
        loops_under(&s.dir)
    );
    let fuse = s.dir.join("state-node-a/fuse").join(volume);
    assert!(!is_mounted(&fuse), "FUSE export unmounted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_loop_device_fails_the_unstage_and_the_retry_finishes_it() {
    let volume = "held-mount";
    let mut s = setup(volume).await;
    let staging = s.dir.join("kubelet/staging-mount");
    stage(&mut s, volume, &staging, false).await;
    let device = the_loop_device(&s.dir);

    let holder = Holder::open(&device);
    let err = s
        .node
        .node_unstage_volume(unstage_request(volume, &staging))
        .await
        .expect_err("NodeUnstageVolume while the device is held");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains(&device),
        "the message names the device: {}",
        err.message()
    );
    // Nothing was dropped on the error path: the FUSE export is still
    // mounted, and the retry below finds the volume to finish.
    assert!(is_mounted(&s.dir.join("state-node-a/fuse").join(volume)));

    holder.kill();
    s.node
        .node_unstage_volume(unstage_request(volume, &staging))
        .await
        .expect("the retried NodeUnstageVolume");
    assert_nothing_left(&s, &staging, volume);
    // And a third call is the idempotent no-op the spec asks for.
    s.node
        .node_unstage_volume(unstage_request(volume, &staging))
        .await
        .expect("NodeUnstageVolume once more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_volume_unstage_waits_for_the_holder_to_let_go() {
    let volume = "held-block";
    let mut s = setup(volume).await;
    let staging = s.dir.join("kubelet/staging-block");
    stage(&mut s, volume, &staging, true).await;
    let device = the_loop_device(&s.dir);

    let holder = Holder::open(&device);
    let mut node = s.node.clone();
    let request = unstage_request(volume, &staging);
    let unstage = tokio::spawn(async move { node.node_unstage_volume(request).await });
    // Detach was asked while busy: the kernel marked it for autoclear.
    let name = device.trim_start_matches("/dev/");
    let autoclear = format!("/sys/block/{name}/loop/autoclear");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&autoclear).is_ok_and(|s| s.trim() != "1") {
        assert!(
            Instant::now() < deadline,
            "{device} was never asked to detach"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!unstage.is_finished(), "unstage returned while held");
    holder.kill();
    unstage
        .await
        .expect("unstage task")
        .expect("NodeUnstageVolume once the holder let go");
    assert_nothing_left(&s, &staging, volume);
}
