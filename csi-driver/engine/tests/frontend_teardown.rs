//! Tearing a staged volume down while something else still holds its loop
//! device, for real (FUSE, loop, ext4, as root).
//!
//! The kernel lets go of a loop device's backing file only when the last
//! opener of the device closes it; udev, blkid or a monitoring agent may be
//! that opener for a moment after `losetup --detach`. Unstaging must wait for
//! that release (bounded) before it unmounts the FUSE export, must say which
//! device still holds which file when the release does not come, and a second
//! try must finish the job. Afterwards nothing is mounted and no loop device
//! is attached to the volume's file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roam_engine::frontend::{
    BlockExport, BlockTarget, FileTarget, FrontendError, FsType, StageOptions, StagedVolume,
};

const BYTES: u64 = 64 << 20;

fn file_target(dir: &Path, name: &str) -> Arc<dyn BlockTarget> {
    Arc::new(FileTarget::open(name, &dir.join(format!("{name}.img")), BYTES).expect("open image"))
}

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

async fn attach_block(target: Arc<dyn BlockTarget>, dir: &Path) -> BlockExport {
    let runtime = tokio::runtime::Handle::current();
    let fuse_dir = dir.join("fuse");
    tokio::task::spawn_blocking(move || BlockExport::attach(target, runtime, &fuse_dir))
        .await
        .expect("attach task")
        .expect("attach")
}

/// Another process with `device` open for reading, as udev or blkid would
/// have it: opened before this returns, closed when the child is killed.
struct Holder {
    child: Child,
}

impl Holder {
    fn open(device: &Path) -> Self {
        let mut child = Command::new("sh")
            .arg("-c")
            // Open the device on fd 3, say so, then wait for stdin to close.
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
        assert_eq!(
            line.trim(),
            "held",
            "the holder opened {}",
            device.display()
        );
        Self { child }
    }

    /// kill -9: the kernel closes its descriptor of the device.
    fn kill(mut self) {
        self.child.kill().expect("kill holder");
        self.child.wait().expect("reap holder");
    }
}

/// `/sys/block/loopN/loop/<attr>`, or None once the device is unbound.
fn loop_attr(device: &Path, attr: &str) -> Option<String> {
    let name = device.file_name().expect("device name").to_string_lossy();
    std::fs::read_to_string(format!("/sys/block/{name}/loop/{attr}"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Polls until `/sys/block/loopN/loop/autoclear` says 1: `losetup --detach`
/// was asked while the device was busy, so the teardown is now waiting.
async fn wait_for_detach_requested(device: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while loop_attr(device, "autoclear").as_deref() != Some("1") {
        assert!(
            Instant::now() < deadline,
            "{} was never asked to detach",
            device.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn mounted_paths() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(PathBuf::from))
        .collect()
}

/// Nothing of the stack is left: no mount under `dir`, and `device` is no
/// longer attached to the volume's file.
fn assert_nothing_left(dir: &Path, device: &Path, file: &Path) {
    let left: Vec<_> = mounted_paths()
        .into_iter()
        .filter(|p| p.starts_with(dir))
        .collect();
    assert!(left.is_empty(), "still mounted: {left:?}");
    let backing = loop_attr(device, "backing_file");
    assert!(
        backing
            .as_deref()
            .is_none_or(|b| !b.starts_with(&*file.to_string_lossy())),
        "{} still holds {}",
        device.display(),
        file.display()
    );
    let out = Command::new("losetup")
        .arg("--associated")
        .arg(file)
        .output()
        .expect("run losetup --associated");
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "a loop device is still attached to {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unstage_waits_for_the_loop_device_that_another_process_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stage_dir = dir.path().join("stage");
    let staged = stage(file_target(dir.path(), "held-mount"), &stage_dir).await;
    let device = staged.device().expect("loop device").to_owned();
    let file = stage_dir.join("fuse").join("volume");

    let holder = Holder::open(&device);
    let unstage = tokio::task::spawn_blocking(move || staged.unstage());
    wait_for_detach_requested(&device).await;
    assert!(
        !unstage.is_finished(),
        "unstage returned while {} was still held",
        device.display()
    );
    holder.kill();
    unstage
        .await
        .expect("unstage task")
        .expect("unstage once the holder let go");
    assert_nothing_left(&stage_dir, &device, &file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_raw_block_export_waits_for_the_loop_device_that_another_process_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stage_dir = dir.path().join("stage");
    let mut export = attach_block(file_target(dir.path(), "held-block"), &stage_dir).await;
    let device = export.device().expect("loop device").to_owned();
    let file = stage_dir.join("fuse").join("volume");

    let holder = Holder::open(&device);
    let teardown = tokio::task::spawn_blocking(move || export.teardown());
    wait_for_detach_requested(&device).await;
    assert!(!teardown.is_finished(), "teardown returned while held");
    holder.kill();
    teardown
        .await
        .expect("teardown task")
        .expect("teardown once the holder let go");
    assert_nothing_left(&stage_dir, &device, &file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_that_never_comes_names_device_and_file_and_a_retry_finishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stage_dir = dir.path().join("stage");
    let mut staged = stage(file_target(dir.path(), "held-long"), &stage_dir).await;
    staged.set_release_timeout(Duration::from_millis(500));
    let device = staged.device().expect("loop device").to_owned();
    let file = stage_dir.join("fuse").join("volume");

    let holder = Holder::open(&device);
    let (mut staged, first) = tokio::task::spawn_blocking(move || {
        let result = staged.teardown();
        (staged, result)
    })
    .await
    .expect("teardown task");
    match &first {
        Err(
            e @ FrontendError::LoopNotReleased {
                device: d, file: f, ..
            },
        ) => {
            assert_eq!(d, &device);
            assert_eq!(f, &file);
            let text = e.to_string();
            assert!(
                text.contains("(sh) has it open"),
                "the error names the process that holds the device: {text}"
            );
            assert!(
                text.contains(&*device.to_string_lossy())
                    && text.contains(&*file.to_string_lossy()),
                "the error names the device and the file it holds: {text}"
            );
        }
        other => panic!("expected LoopNotReleased, got {other:?}"),
    }
    // The export is still tracked and still mounted: nothing was dropped on
    // the error path.
    assert!(
        mounted_paths().contains(&stage_dir.join("fuse")),
        "the FUSE export stays mounted until the loop device lets go"
    );

    holder.kill();
    tokio::task::spawn_blocking(move || staged.teardown())
        .await
        .expect("retry task")
        .expect("a retried teardown finishes the job");
    assert_nothing_left(&stage_dir, &device, &file);
}

/// A mount namespace made while the volume is staged, as `ip netns exec`,
/// a node's namespace or a systemd service with private mounts makes one:
/// it starts with copies of the export's mounts. They go away with the
/// unmount here (the stack's mount points are shared), so the loop device
/// lets go and teardown finishes, leaving nothing in either namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mount_namespace_made_while_staged_does_not_hold_the_volume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stage_dir = dir.path().join("stage");
    let staged = stage(file_target(dir.path(), "copied"), &stage_dir).await;
    let device = staged.device().expect("loop device").to_owned();
    let file = stage_dir.join("fuse").join("volume");

    let mut copier = Command::new("unshare")
        .args(["--mount", "--propagation", "slave", "sh", "-c"])
        .arg("echo ready; read -r _")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    let mut line = String::new();
    BufReader::new(copier.stdout.take().expect("copier stdout"))
        .read_line(&mut line)
        .expect("read copier");
    assert_eq!(line.trim(), "ready");
    let copied = std::fs::read_to_string(format!("/proc/{}/mountinfo", copier.id()))
        .expect("the copier's mountinfo");
    let stage_text = stage_dir.to_string_lossy().into_owned();
    assert!(
        copied
            .lines()
            .any(|l| l.contains(&stage_text) && l.contains(" - fuse ")),
        "the new namespace starts with a copy of the FUSE export"
    );

    tokio::task::spawn_blocking(move || staged.unstage())
        .await
        .expect("unstage task")
        .expect("unstage with a namespace that copied the mounts");
    assert_nothing_left(&stage_dir, &device, &file);
    // What is left there of the stack is at most the shared bind mounts of
    // the empty directories (they hold nothing): no FUSE export, no
    // filesystem from the loop device.
    let after = std::fs::read_to_string(format!("/proc/{}/mountinfo", copier.id()))
        .expect("the copier's mountinfo");
    let device_text = device.to_string_lossy().into_owned();
    let left: Vec<&str> = after
        .lines()
        .filter(|l| l.contains(&stage_text))
        .filter(|l| l.contains(" - fuse ") || l.contains(&device_text))
        .collect();
    assert!(
        left.is_empty(),
        "the copies went with the unmount: {left:?}"
    );
    copier.kill().expect("kill copier");
    copier.wait().expect("reap copier");
}
