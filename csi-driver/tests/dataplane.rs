//! Multi-process data-plane tests: `roam-csi storage` processes, one per
//! data center, each in its own network namespace behind a delay proxy;
//! faults are real (kill -9, SIGSTOP, nftables partitions, a full tmpfs).
//! Every acknowledged write is checked afterwards, block by block.
//!
//! Root only; run one at a time: `cargo test -p roam-csi --test dataplane --
//! --test-threads=1`.

mod support;

use std::time::Duration;

use roam_proto::storage::{
    ConfigureGroupRequest, FailurePolicy, MemberState, PromoteRequest, Role,
    TransferPrimaryRequest, TransferType, WriteRequest,
};
use support::blocks;
use support::cluster::Cluster;
use support::writer::{WriteStream, verify};

const VOLUME_BYTES: u64 = 64 << 20;
/// Blocks the writers spread over (16 MiB of the volume).
const WRITE_BLOCKS: u64 = 4096;

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Writes until at least `min_acked` writes are acknowledged (or 30 s pass).
async fn until_acked(stream: &WriteStream, min_acked: usize) {
    for _ in 0..300 {
        if stream.acked() >= min_acked {
            return;
        }
        sleep_ms(100).await;
    }
    panic!("writers got only {} acknowledgements", stream.acked());
}

/// kill -9 of the primary mid-stream, then forced promotion of a secondary:
/// the new primary holds every write acknowledged (Sync) or every write up
/// to the secondary's position reported just before the kill (Async).
async fn failover_keeps_acknowledged_writes(transfer: TransferType) {
    let mut cluster = Cluster::start(3, 0, &[]).await;
    let volume = "failover";
    let group = cluster.group(&[0, 1, 2], 0, 1, transfer, FailurePolicy::Block);
    cluster
        .create_volume(volume, VOLUME_BYTES, &[0, 1, 2], group)
        .await;

    let stream = WriteStream::start(cluster.client(0).await, volume, 1, WRITE_BLOCKS, 8);
    until_acked(&stream, 2000).await;
    // Async: what dc-1 holds, as the primary reports it right before the kill.
    let seq_bound = match transfer {
        TransferType::Async => {
            let status = cluster.status(0, volume).await;
            status
                .members
                .iter()
                .find(|m| m.data_center == "dc-1")
                .expect("dc-1 in the primary's status")
                .applied_seq
        }
        _ => u64::MAX,
    };
    cluster.nodes[0].kill9();
    let (log, _error) = stream.stop().await;

    let mut c1 = cluster.client(1).await;
    c1.promote(PromoteRequest {
        volume_id: volume.into(),
        new_epoch: 2,
    })
    .await
    .expect("promote dc-1");
    let status = cluster.status(1, volume).await;
    assert_eq!(status.role, Role::Primary as i32, "dc-1 is primary");
    assert_eq!(status.epoch, 2);

    assert!(log.acked_writes() >= 2000);
    let checked = verify(&mut c1, volume, 2, &log, seq_bound).await;
    assert!(checked > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_failover_after_kill9_keeps_every_acknowledged_write() {
    failover_keeps_acknowledged_writes(TransferType::Sync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_failover_after_kill9_keeps_writes_up_to_reported_lag() {
    failover_keeps_acknowledged_writes(TransferType::Async).await;
}

/// A primary that was paused while a secondary was promoted past it can't
/// take a write at its old epoch: the group refuses it, and the new primary
/// never shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_a_fenced_primary_are_rejected() {
    let cluster = Cluster::start(3, 0, &[]).await;
    let volume = "fenced";
    let group = cluster.group(&[0, 1, 2], 0, 1, TransferType::Sync, FailurePolicy::Block);
    cluster
        .create_volume(volume, VOLUME_BYTES, &[0, 1, 2], group)
        .await;
    let mut c0 = cluster.client(0).await;
    c0.write(WriteRequest {
        volume_id: volume.into(),
        epoch: 1,
        offset: 0,
        data: blocks::encode(0, 1),
        fua: true,
    })
    .await
    .expect("write at epoch 1");

    cluster.nodes[0].signal("STOP");
    let mut c1 = cluster.client(1).await;
    c1.promote(PromoteRequest {
        volume_id: volume.into(),
        new_epoch: 2,
    })
    .await
    .expect("promote dc-1");
    let new_group = cluster.group(&[0, 1, 2], 1, 2, TransferType::Sync, FailurePolicy::Block);
    cluster
        .client(2)
        .await
        .configure_group(ConfigureGroupRequest {
            volume_id: volume.into(),
            group: Some(new_group),
        })
        .await
        .expect("dc-2 follows dc-1 at epoch 2");
    cluster.nodes[0].signal("CONT");

    // The old primary still believes in epoch 1; its write must not stand.
    let refused = tokio::time::timeout(
        Duration::from_secs(60),
        c0.write(WriteRequest {
            volume_id: volume.into(),
            epoch: 1,
            offset: 4096,
            data: blocks::encode(4096, 1),
            fua: true,
        }),
    )
    .await
    .expect("the old primary answers within 60 s");
    assert!(
        refused.is_err(),
        "a write at the stale epoch was acknowledged; old primary's log:\n{}",
        cluster.nodes[0].log_tail()
    );
    let mut log = blocks::AckLog::default();
    log.sent(0, 1);
    log.acked(0, 1, 1);
    verify(&mut c1, volume, 2, &log, u64::MAX).await;
    let block = c1
        .read(roam_proto::storage::ReadRequest {
            volume_id: volume.into(),
            epoch: 2,
            offset: 4096,
            length: blocks::BLOCK as u32,
        })
        .await
        .expect("read on the new primary")
        .into_inner()
        .data;
    assert_eq!(
        blocks::decode(4096, &block),
        Ok(0),
        "the refused write is absent"
    );
}

/// A secondary cut off under Degrade is marked out of sync while writes go
/// on; after the partition heals it catches up by copying what changed (the
/// bytes that cross its delay proxy stay under twice the bytes dirtied, far
/// from the volume's size), and every write is there once it is primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_secondary_under_degrade_resyncs_only_what_changed() {
    // Writes cover 4 MiB of the 64 MiB volume.
    const DIRTY_BLOCKS: u64 = 1024;
    let cluster = Cluster::start(3, 0, &[]).await;
    let volume = "degrade";
    let group = cluster.group(&[0, 1, 2], 0, 1, TransferType::Sync, FailurePolicy::Degrade);
    cluster
        .create_volume(volume, VOLUME_BYTES, &[0, 1, 2], group)
        .await;
    wait_all_in_sync(&cluster, volume).await;

    cluster.partition(0, 2);
    let before = cluster.nodes[2].peer_bytes_in().await;
    let stream = WriteStream::start(cluster.client(0).await, volume, 1, DIRTY_BLOCKS, 8);
    until_acked(&stream, 1500).await;
    let (log, error) = stream.stop().await;
    assert!(error.is_none(), "Degrade keeps writes going: {error:?}");
    let status = cluster.status(0, volume).await;
    let dc2 = status
        .members
        .iter()
        .find(|m| m.data_center == "dc-2")
        .expect("dc-2 in status");
    assert_ne!(dc2.state, MemberState::InSync as i32, "dc-2 is out of sync");

    cluster.heal(0, 2);
    wait_all_in_sync(&cluster, volume).await;
    let moved = cluster.nodes[2].peer_bytes_in().await - before;
    let dirtied = log.offsets().len() as u64 * blocks::BLOCK as u64;
    eprintln!("resync moved {moved} bytes for {dirtied} bytes dirtied");
    assert!(
        moved < 2 * dirtied,
        "resync moved {moved} bytes for {dirtied} bytes dirtied"
    );
    assert!(
        moved < VOLUME_BYTES / 4,
        "resync moved {moved} bytes: the volume, not the changes"
    );

    cluster
        .client(0)
        .await
        .transfer_primary(TransferPrimaryRequest {
            volume_id: volume.into(),
            target: "dc-2".into(),
            new_epoch: 2,
        })
        .await
        .expect("transfer to dc-2");
    verify(&mut cluster.client(2).await, volume, 2, &log, u64::MAX).await;
}

/// Waits until the primary (node 0) reports every member in sync.
async fn wait_all_in_sync(cluster: &Cluster, volume: &str) {
    for _ in 0..300 {
        let status = cluster.status(0, volume).await;
        if !status.members.is_empty()
            && status
                .members
                .iter()
                .all(|m| m.state == MemberState::InSync as i32)
        {
            return;
        }
        sleep_ms(100).await;
    }
    panic!(
        "members not in sync within 30 s: {:?}",
        cluster.status(0, volume).await.members
    );
}

/// ext4 on the FUSE -> loop stack over the remote target keeps a file tree
/// across unmount, a planned relocation of the primary, and a new stage
/// against the new primary (not formatted again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ext4_tree_survives_relocation_of_the_primary() {
    use roam_engine::frontend::{FsType, RemoteTarget, StageOptions, StagedVolume};
    use std::sync::Arc;

    let cluster = Cluster::start(2, 0, &[]).await;
    let volume = "ext4-relocate";
    let group = cluster.group(&[0, 1], 0, 1, TransferType::Sync, FailurePolicy::Block);
    cluster
        .create_volume(volume, 128 << 20, &[0, 1], group)
        .await;
    let work = cluster.dir.path().join("stage");
    let options = StageOptions {
        fuse_dir: work.join("fuse"),
        mount_path: work.join("mnt"),
        fs_type: FsType::Ext4,
        mount_options: Vec::new(),
    };

    let stage = |endpoint: String, epoch: u64| {
        let options = options.clone();
        async move {
            let target = RemoteTarget::connect(&endpoint, volume, epoch)
                .await
                .expect("remote target");
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                StagedVolume::stage(Arc::new(target), runtime, &options)
            })
            .await
            .expect("stage task")
            .expect("stage")
        }
    };
    let files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            let name = format!("d{}/f{i}", i % 4);
            let data = (0..(i * 7919 % 300_000)).map(|k| (k * i) as u8).collect();
            (name, data)
        })
        .collect();

    let first = stage(cluster.nodes[0].endpoint(), 1).await;
    assert!(first.formatted());
    let root = first.mount_path().to_owned();
    let files_w = files.clone();
    tokio::task::spawn_blocking(move || {
        for (name, data) in &files_w {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, data).expect("write");
        }
        support::sh("sync", &["-f", root.to_str().expect("utf-8")]).expect("syncfs");
    })
    .await
    .expect("write tree");
    tokio::task::spawn_blocking(move || first.unstage())
        .await
        .expect("unstage task")
        .expect("unstage");

    let status = cluster
        .client(0)
        .await
        .transfer_primary(TransferPrimaryRequest {
            volume_id: volume.into(),
            target: "dc-1".into(),
            new_epoch: 2,
        })
        .await
        .expect("relocate to dc-1")
        .into_inner();
    assert_eq!(status.epoch, 2);
    let status = cluster.status(1, volume).await;
    assert_eq!(status.role, Role::Primary as i32);

    let second = stage(cluster.nodes[1].endpoint(), 2).await;
    assert!(
        !second.formatted(),
        "the relocated volume keeps its filesystem"
    );
    let root = second.mount_path().to_owned();
    tokio::task::spawn_blocking(move || {
        for (name, data) in &files {
            let read = std::fs::read(root.join(name)).expect("read back");
            assert!(read == *data, "{name} differs after relocation");
        }
    })
    .await
    .expect("check tree");
    tokio::task::spawn_blocking(move || second.unstage())
        .await
        .expect("unstage task")
        .expect("unstage");
}

/// Raw garbage, a truncated message, an oversized one and one with a bad
/// checksum at a secondary's peer port are all refused, and the secondary's
/// state is what it was: same positions, and after a hand-over of the
/// primary to it every acknowledged write reads back, none of the junk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_peer_messages_are_refused_without_change() {
    use prost::Message;
    use roam_proto::replication::{AppendBatch, PeerRequest, WriteRecord, peer_request};
    use support::raw_grpc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const CALL: &str = "/roam.replication.v1.Replication/Call";
    let cluster = Cluster::start(2, 0, &[]).await;
    let volume = "malformed";
    let group = cluster.group(&[0, 1], 0, 1, TransferType::Sync, FailurePolicy::Block);
    cluster
        .create_volume(volume, VOLUME_BYTES, &[0, 1], group)
        .await;
    let stream = WriteStream::start(cluster.client(0).await, volume, 1, 256, 4);
    until_acked(&stream, 300).await;
    let (log, error) = stream.stop().await;
    assert!(error.is_none(), "writes before the junk: {error:?}");
    let before = cluster.status(1, volume).await;

    // Not even HTTP/2.
    let mut tcp = tokio::net::TcpStream::connect((cluster.nodes[1].ip, support::cluster::PORT))
        .await
        .expect("connect to the peer port");
    let junk: Vec<u8> = (0..8192u32)
        .map(|i| i.wrapping_mul(2_654_435_761) as u8)
        .collect();
    let _ = tcp.write_all(&junk).await;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut sink)).await;

    let record = |seq: u64, data: Vec<u8>, crc_ok: bool| {
        let crc = record_crc(seq, 1, 0, &data[..]);
        PeerRequest {
            volume_id: volume.into(),
            epoch: 1,
            body: Some(peer_request::Body::Append(AppendBatch {
                records: vec![WriteRecord {
                    seq,
                    epoch: 1,
                    offset: 0,
                    data: data.into(),
                    crc: if crc_ok { crc } else { crc ^ 0xdead_beef },
                    incarnation: 0,
                }],
            })),
        }
        .encode_to_vec()
    };
    let next = before.written_seq + 1;
    let junk_block = blocks::encode(0, 999_999);
    let mut truncated = record(next, junk_block.clone(), true);
    truncated.truncate(truncated.len() - 10);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", junk.clone()),
        ("truncated", truncated),
        ("oversized", record(next, vec![7u8; 64 << 20], true)),
        ("bad checksum", record(next, junk_block.clone(), false)),
    ];
    let endpoint = cluster.nodes[1].endpoint();
    for (name, body) in cases {
        let result = raw_grpc::call(&endpoint, CALL, body).await;
        assert!(result.is_err(), "{name} peer message was accepted");
    }

    let after = cluster.status(1, volume).await;
    assert_eq!(
        (
            after.written_seq,
            after.durable_seq,
            after.epoch,
            after.role
        ),
        (
            before.written_seq,
            before.durable_seq,
            before.epoch,
            before.role
        ),
        "the secondary's state changed"
    );
    cluster
        .client(0)
        .await
        .transfer_primary(TransferPrimaryRequest {
            volume_id: volume.into(),
            target: "dc-1".into(),
            new_epoch: 2,
        })
        .await
        .expect("hand the primary to the secondary");
    verify(&mut cluster.client(1).await, volume, 2, &log, u64::MAX).await;
}

/// crc32c over seq, epoch, offset (little endian) and data, as
/// replication.proto defines it.
fn record_crc(seq: u64, epoch: u64, offset: u64, data: &[u8]) -> u32 {
    let mut head = Vec::with_capacity(24);
    head.extend_from_slice(&seq.to_le_bytes());
    head.extend_from_slice(&epoch.to_le_bytes());
    head.extend_from_slice(&offset.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&head), data)
}

/// A secondary whose data directory fills up: under Block the writer gets
/// an error (never a silent acknowledgement); under Degrade the secondary is
/// marked out of sync. Either way the primary holds every acknowledged write.
async fn full_disk_on_a_secondary(policy: FailurePolicy) {
    let scratch = tempfile::tempdir().expect("tempdir");
    // Room for the replica and a little journal, not for everything written.
    let small =
        support::tmpfs::SmallTmpfs::mount(&scratch.path().join("dc-1"), VOLUME_BYTES + (6 << 20));
    let cluster = Cluster::start(2, 0, &[(1, small.path())]).await;
    let volume = "full-disk";
    let group = cluster.group(&[0, 1], 0, 1, TransferType::Sync, policy);
    cluster
        .create_volume(volume, VOLUME_BYTES, &[0, 1], group)
        .await;

    let stream = WriteStream::start(cluster.client(0).await, volume, 1, WRITE_BLOCKS, 8);
    let mut errored = false;
    for _ in 0..600 {
        if stream.acked() >= 12_000 {
            break;
        }
        if stream.finished() {
            errored = true;
            break;
        }
        sleep_ms(100).await;
    }
    let (log, error) = stream.stop().await;
    let status = cluster.status(0, volume).await;
    let dc1 = status
        .members
        .iter()
        .find(|m| m.data_center == "dc-1")
        .expect("dc-1 in status")
        .clone();
    match policy {
        FailurePolicy::Block => {
            assert!(
                errored && error.is_some(),
                "Block: a full secondary must fail the writer (acked {}, dc-1 {dc1:?})",
                log.acked_writes()
            );
        }
        _ => {
            assert!(error.is_none(), "Degrade keeps writes going: {error:?}");
            assert_ne!(
                dc1.state,
                MemberState::InSync as i32,
                "Degrade: the full secondary is marked out of sync"
            );
        }
    }
    verify(&mut cluster.client(0).await, volume, 1, &log, u64::MAX).await;
    drop(cluster);
    drop(small);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_on_a_secondary_fails_writes_under_block() {
    full_disk_on_a_secondary(FailurePolicy::Block).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_on_a_secondary_degrades_it_under_degrade() {
    full_disk_on_a_secondary(FailurePolicy::Degrade).await;
}
