//! The host side's export stack for real: FUSE file -> loop device (direct
//! I/O) -> ext4, as root. A file tree must survive unmount and a second stage
//! of the same volume, which must not format it again; a volume holding a
//! different filesystem is refused and left as it was. The same holds over
//! an engine replica in this process (the local target), across a close and
//! reopen of the replica (journal replay).

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use roam_engine::frontend::{
    BlockTarget, FileTarget, FrontendError, FsType, StageOptions, StagedVolume,
};

const VOLUME_BYTES: u64 = 256 << 20;

fn options(dir: &Path, fs_type: FsType) -> StageOptions {
    StageOptions {
        fuse_dir: dir.join("fuse"),
        mount_path: dir.join("mnt"),
        fs_type,
        mount_options: Vec::new(),
    }
}

async fn stage(
    target: Arc<dyn BlockTarget>,
    options: StageOptions,
) -> Result<StagedVolume, FrontendError> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || StagedVolume::stage(target, runtime, &options))
        .await
        .expect("stage task")
}

async fn unstage(staged: StagedVolume) {
    tokio::task::spawn_blocking(move || staged.unstage())
        .await
        .expect("unstage task")
        .expect("unstage");
}

/// Files of awkward sizes in nested directories; contents depend on the path.
fn tree() -> Vec<(PathBuf, Vec<u8>)> {
    let sizes = [0usize, 1, 511, 4096, 65_537, 1 << 20, (3 << 20) + 7];
    let mut files = Vec::new();
    for (d, dir) in ["a", "a/b", "a/b/c", "z"].iter().enumerate() {
        for (i, size) in sizes.iter().enumerate() {
            let path = PathBuf::from(dir).join(format!("f{d}-{i}"));
            let seed = (d * 31 + i) as u8;
            let data = (0..*size)
                .map(|k| (k as u8).wrapping_mul(7).wrapping_add(seed))
                .collect();
            files.push((path, data));
        }
    }
    files
}

fn write_tree(root: &Path) {
    for (path, data) in tree() {
        let full = root.join(&path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(&full, &data).expect("write file");
        std::fs::File::open(&full)
            .expect("open")
            .sync_all()
            .expect("fsync");
    }
    std::fs::write(root.join("formatted-once"), b"marker").expect("write marker");
    support::sh("sync", &["-f", root.to_str().expect("utf-8")]).expect("syncfs");
}

fn assert_tree(root: &Path) {
    for (path, data) in tree() {
        let read = std::fs::read(root.join(&path)).expect("read file back");
        assert_eq!(read.len(), data.len(), "size of {}", path.display());
        assert!(read == data, "contents of {} differ", path.display());
    }
    assert_eq!(
        std::fs::read(root.join("formatted-once")).expect("marker survives"),
        b"marker"
    );
}

fn mounted_under(dir: &Path) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("read mounts");
    let dir = dir.to_string_lossy().into_owned();
    mounts
        .lines()
        .filter(|l| l.contains(&dir))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ext4_tree_survives_remount_and_is_never_reformatted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("volume.img");
    let target: Arc<dyn BlockTarget> =
        Arc::new(FileTarget::open("frontend-ext4", &image, VOLUME_BYTES).expect("open image"));
    let work = dir.path().join("stage");

    let first = stage(Arc::clone(&target), options(&work, FsType::Ext4))
        .await
        .expect("first stage");
    assert!(first.formatted(), "an empty volume is formatted");
    let root = first.mount_path().to_owned();
    tokio::task::spawn_blocking({
        let root = root.clone();
        move || write_tree(&root)
    })
    .await
    .expect("write tree");
    unstage(first).await;
    assert!(
        mounted_under(&work).is_empty(),
        "unstage leaves nothing mounted"
    );

    let second = stage(Arc::clone(&target), options(&work, FsType::Ext4))
        .await
        .expect("second stage");
    assert!(
        !second.formatted(),
        "a formatted volume is not formatted again"
    );
    tokio::task::spawn_blocking(move || assert_tree(&root))
        .await
        .expect("check tree");
    unstage(second).await;

    // Asked for xfs, the volume holds ext4: refused, and the stack undone.
    let refused = stage(Arc::clone(&target), options(&work, FsType::Xfs)).await;
    match refused {
        Err(FrontendError::FilesystemMismatch { found, .. }) => assert_eq!(found, "ext4"),
        Err(e) => panic!("expected a filesystem mismatch, got {e}"),
        Ok(_) => panic!("an ext4 volume was staged as xfs"),
    }
    assert!(mounted_under(&work).is_empty(), "a failed stage is undone");

    let third = stage(Arc::clone(&target), options(&work, FsType::Ext4))
        .await
        .expect("third stage");
    assert!(!third.formatted());
    let root = third.mount_path().to_owned();
    tokio::task::spawn_blocking(move || assert_tree(&root))
        .await
        .expect("check tree after refusal");
    unstage(third).await;
    assert!(mounted_under(&work).is_empty());
}

async fn open_replica(root: &Path, volume: &str) -> roam_engine::Volume {
    use roam_engine::backend::ReplicaDir;
    use roam_engine::transport::local::LocalTransport;
    use roam_engine::{EngineConfig, GroupSpec, Volume};

    let replica = ReplicaDir::new(root, volume);
    if !replica.exists() {
        replica
            .create_replica(volume, "dc-a", VOLUME_BYTES)
            .expect("create replica");
    }
    let files = replica.files().expect("replica files");
    let handle = Volume::open(
        volume,
        files,
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
async fn ext4_on_an_engine_replica_survives_close_and_reopen() {
    use roam_engine::frontend::LocalTarget;

    let dir = tempfile::tempdir().expect("tempdir");
    let replicas = dir.path().join("replicas");
    let work = dir.path().join("stage");

    let handle = open_replica(&replicas, "frontend-local").await;
    let target: Arc<dyn BlockTarget> = Arc::new(LocalTarget::new(handle.clone(), 1));
    let first = stage(target, options(&work, FsType::Ext4))
        .await
        .expect("first stage");
    assert!(first.formatted());
    let root = first.mount_path().to_owned();
    tokio::task::spawn_blocking({
        let root = root.clone();
        move || write_tree(&root)
    })
    .await
    .expect("write tree");
    unstage(first).await;
    handle.close().await;
    drop(handle);

    let handle = open_replica(&replicas, "frontend-local").await;
    let target: Arc<dyn BlockTarget> = Arc::new(LocalTarget::new(handle.clone(), 1));
    let second = stage(target, options(&work, FsType::Ext4))
        .await
        .expect("second stage");
    assert!(!second.formatted(), "the replica keeps its filesystem");
    tokio::task::spawn_blocking(move || assert_tree(&root))
        .await
        .expect("check tree");
    unstage(second).await;
    handle.close().await;
    assert!(mounted_under(&work).is_empty());
}
