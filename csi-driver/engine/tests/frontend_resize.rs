//! Growing a staged volume (what NodeExpandVolume relies on), for real: an
//! engine replica exported through FUSE -> loop -> ext4, as root. After the
//! replica is expanded, `StagedVolume::grow` must make the loop device report
//! the new size, and bytes written through the device past the old end must
//! land in the replica and read back. A target that got smaller is refused
//! and the device keeps its size.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use roam_engine::backend::ReplicaDir;
use roam_engine::frontend::{
    BlockTarget, FileTarget, FrontendError, FsType, LocalTarget, StageOptions, StagedVolume,
};
use roam_engine::transport::local::LocalTransport;
use roam_engine::{EngineConfig, GroupSpec, Volume};

const OLD_BYTES: u64 = 64 << 20;
const NEW_BYTES: u64 = 96 << 20;

fn options(dir: &Path) -> StageOptions {
    StageOptions {
        fuse_dir: dir.join("fuse"),
        mount_path: dir.join("mnt"),
        fs_type: FsType::Ext4,
        mount_options: Vec::new(),
    }
}

async fn stage(target: Arc<dyn BlockTarget>, dir: &Path) -> StagedVolume {
    let runtime = tokio::runtime::Handle::current();
    let options = options(dir);
    tokio::task::spawn_blocking(move || StagedVolume::stage(target, runtime, &options))
        .await
        .expect("stage task")
        .expect("stage")
}

async fn unstage(staged: StagedVolume) {
    tokio::task::spawn_blocking(move || staged.unstage())
        .await
        .expect("unstage task")
        .expect("unstage");
}

/// `blockdev --getsize64`: the size the kernel's block layer reports.
fn device_size(device: &Path) -> u64 {
    let out = Command::new("blockdev")
        .arg("--getsize64")
        .arg(device)
        .output()
        .expect("run blockdev");
    assert!(out.status.success(), "blockdev: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("blockdev prints a number")
}

async fn open_replica(root: &Path, volume: &str) -> Volume {
    let replica = ReplicaDir::new(root, volume);
    replica
        .create_replica(volume, "dc-a", OLD_BYTES)
        .expect("create replica");
    let handle = Volume::open(
        volume,
        replica.files().expect("replica files"),
        Arc::new(LocalTransport::default()),
        EngineConfig::default(),
    )
    .await
    .expect("open replica");
    handle
        .configure(GroupSpec::sole_member("dc-a"))
        .await
        .expect("configure group of one");
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grown_replica_shows_its_new_size_on_the_loop_device_and_takes_writes_past_the_old_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = open_replica(&dir.path().join("replicas"), "resize-local").await;
    let target: Arc<dyn BlockTarget> = Arc::new(LocalTarget::new(handle.clone(), 1));
    let staged = stage(target, &dir.path().join("stage")).await;
    let device = staged.device().expect("loop device").to_owned();
    assert_eq!(device_size(&device), OLD_BYTES);

    // Nothing expanded yet: a no-op that reports the current size.
    assert_eq!(
        staged.grow().await.expect("grow without expansion"),
        OLD_BYTES
    );

    handle.expand(NEW_BYTES).await.expect("expand replica");
    let grown = staged.grow().await.expect("grow");
    assert_eq!(grown, NEW_BYTES);
    assert_eq!(device_size(&device), NEW_BYTES, "blockdev --getsize64");

    // Bytes past the old end, written through the block device.
    let offset = OLD_BYTES + (5 << 20) + 4096;
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    let dev_path = device.clone();
    let written = data.clone();
    tokio::task::spawn_blocking(move || {
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev_path)
            .expect("open loop device");
        dev.write_all_at(&written, offset)
            .expect("write past old end");
        dev.sync_all().expect("fsync loop device");
        // Drop the device's buffer cache so the read goes down the stack.
        let flushed = Command::new("blockdev")
            .arg("--flushbufs")
            .arg(&dev_path)
            .status()
            .expect("run blockdev --flushbufs");
        assert!(flushed.success());
        let mut back = vec![0u8; written.len()];
        dev.read_exact_at(&mut back, offset)
            .expect("read past old end");
        assert!(back == written, "bytes past the old end read back");
    })
    .await
    .expect("device I/O");
    let in_replica = handle
        .read_at_epoch(1, offset, data.len() as u64)
        .await
        .expect("read replica");
    assert!(
        in_replica[..] == data[..],
        "the replica holds the bytes written past the old end"
    );

    unstage(staged).await;
    handle.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_that_got_smaller_is_refused_and_the_device_keeps_its_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("volume.img");
    let target: Arc<dyn BlockTarget> =
        Arc::new(FileTarget::open("resize-file", &image, OLD_BYTES).expect("open image"));
    let staged = stage(target, &dir.path().join("stage")).await;
    let device = staged.device().expect("loop device").to_owned();

    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .expect("open image")
        .set_len(OLD_BYTES - (1 << 20))
        .expect("shrink image");
    match staged.grow().await {
        Err(FrontendError::ShrinkRefused {
            current, requested, ..
        }) => {
            assert_eq!(current, OLD_BYTES);
            assert_eq!(requested, OLD_BYTES - (1 << 20));
        }
        other => panic!("expected ShrinkRefused, got {other:?}"),
    }
    assert_eq!(device_size(&device), OLD_BYTES, "the device is unchanged");

    // Grown by truncate: the file target follows its file's length.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .expect("open image")
        .set_len(NEW_BYTES)
        .expect("grow image");
    assert_eq!(staged.grow().await.expect("grow"), NEW_BYTES);
    assert_eq!(device_size(&device), NEW_BYTES);
    unstage(staged).await;
}
