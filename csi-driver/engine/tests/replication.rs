//! The engine end to end in one process: real files, real journal, the
//! in-process transport between replicas.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use roam_engine::transport::{PeerMessage, PeerRequest};
use roam_engine::{
    EngineError, FailurePolicy, MemberState, Role, SyncLevel, TransferType, WriteRecord,
};

const SIZE: u64 = 4 << 20;

async fn write(model: &mut [u8], v: &roam_engine::Volume, offset: u64, data: Bytes) -> u64 {
    let seq = v.write(offset, data.clone(), false).await.expect("write");
    model[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
    seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_group_of_three_holds_every_acknowledged_write() {
    let c = Cluster::new(&["a", "b", "c"], SIZE, fast_config()).await;
    c.configure(&c.group("a", 1, TransferType::Sync, FailurePolicy::Block))
        .await;
    let mut model = vec![0u8; SIZE as usize];
    for i in 0..50u64 {
        write(
            &mut model,
            c.v("a"),
            (i * 37_001) % (SIZE - 9000),
            pattern(i, 1 + (i as usize * 131) % 9000),
        )
        .await;
    }
    // Sync: acknowledged means held by every in-sync secondary, without waiting.
    c.assert_all_hold(&model).await;
    // Flushed: on every member's disk, which is the position status reports.
    c.v("a").flush().await.expect("flush");
    let st = c.v("a").status();
    assert_eq!(st.written_seq, 50);
    assert!(
        st.members.iter().all(|m| m.applied_seq == 50),
        "{:?}",
        st.members
    );
    // Writes on a secondary are refused.
    let err = c
        .v("b")
        .write(0, Bytes::from_static(b"x"), false)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::NotPrimary { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_transfer_moves_the_primary_and_loses_nothing() {
    let c = Cluster::new(&["a", "b", "c"], SIZE, fast_config()).await;
    c.configure(&c.group("a", 1, TransferType::Async, FailurePolicy::Block))
        .await;
    let mut model = vec![0u8; SIZE as usize];
    for i in 0..40u64 {
        write(&mut model, c.v("a"), i * 4096, pattern(i, 4096)).await;
    }
    c.v("a").transfer_primary("b", 2).await.expect("transfer");
    assert_eq!(c.v("a").role(), Role::Secondary);
    assert_eq!(c.v("b").role(), Role::Primary);
    assert_eq!(c.v("b").epoch(), 2);
    // The old primary refuses writes; the new one takes them.
    assert!(
        c.v("a")
            .write(0, Bytes::from_static(b"x"), false)
            .await
            .is_err()
    );
    for i in 40..60u64 {
        write(&mut model, c.v("b"), i * 4096, pattern(i, 4096)).await;
    }
    c.wait_in_sync("b").await;
    c.assert_all_hold(&model).await;
    // A repeat of the same transfer is a no-op; an older epoch is refused.
    c.v("a")
        .transfer_primary("b", 2)
        .await
        .expect("idempotent repeat");
    let err = c.v("b").transfer_primary("a", 2).await.unwrap_err();
    assert!(matches!(err, EngineError::StaleEpoch { .. }), "{err}");
    assert!(c.v("b").status().last_transfer_millis == 0);
    assert!(c.v("a").status().last_transfer_millis < 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_policy_fails_writes_while_a_sync_secondary_is_unreachable() {
    let c = Cluster::new(&["a", "b"], SIZE, fast_config()).await;
    c.configure(&c.group("a", 1, TransferType::Sync, FailurePolicy::Block))
        .await;
    c.v("a")
        .write(0, pattern(1, 100), false)
        .await
        .expect("write while reachable");
    c.wait_in_sync("a").await;
    c.net.set_down("b", true);
    let err = c.v("a").write(0, pattern(2, 100), false).await.unwrap_err();
    assert!(matches!(err, EngineError::ReplicateTimeout { .. }), "{err}");
    c.net.set_down("b", false);
    let seq = c
        .v("a")
        .write(4096, pattern(3, 100), false)
        .await
        .expect("write after return");
    c.wait_in_sync("a").await;
    assert_eq!(c.v("b").status().written_seq, seq);
    // The write that failed reached the primary's journal; both replicas agree on it.
    assert_eq!(c.v("b").read(0, 100).await.unwrap(), pattern(2, 100));
}

/// DRBD's protocol C: a Sync write waits until the secondary holds it, not
/// for its disk; a flush waits until it is on the secondary's disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_write_waits_for_the_secondary_to_hold_it_and_a_flush_for_its_disk() {
    let mut c = Cluster::sim_sync_pair(SIZE, FailurePolicy::Block).await;
    c.wait_in_sync("a").await;
    c.sims["b"].stall_syncs("journal", true);
    c.v("a")
        .write(8192, pattern(2, 4096), false)
        .await
        .expect("a write completes while the secondary's disk is stalled");
    let err = c.v("a").flush().await.unwrap_err();
    assert!(matches!(err, EngineError::ReplicateTimeout { .. }), "{err}");
    c.sims["b"].stall_syncs("journal", false);
    let seq = c.v("a").flush().await.expect("flush once the disk syncs");
    // Flushed: on b's disk, so a power cut there keeps it.
    c.power_cut("b", None).await;
    c.open("b").await;
    assert!(c.v("b").status().written_seq >= seq);
    assert_eq!(c.v("b").read(8192, 4096).await.unwrap(), pattern(2, 4096));
}

/// The database level: a write waits only until it is queued to the
/// secondaries; a flush waits for their disks, and fails under Block while
/// one is away. What was flushed is on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_sync_level_flush_only_flushes_wait_for_the_secondary() {
    let c = Cluster::new(&["a", "b"], SIZE, fast_config()).await;
    let mut group = c.group("a", 1, TransferType::Sync, FailurePolicy::Block);
    group.sync_level = SyncLevel::Flush;
    c.configure(&group).await;
    c.v("a")
        .write(0, pattern(1, 4096), false)
        .await
        .expect("first write");
    c.v("a").flush().await.expect("flush while reachable");
    c.net.set_down("b", true);
    c.v("a")
        .write(4096, pattern(2, 4096), false)
        .await
        .expect("a write is queued while the secondary is away");
    let err = c.v("a").flush().await.unwrap_err();
    assert!(matches!(err, EngineError::ReplicateTimeout { .. }), "{err}");
    // FUA is a flush of one write: it waits too.
    let err = c.v("a").write(0, pattern(3, 4096), true).await.unwrap_err();
    assert!(matches!(err, EngineError::ReplicateTimeout { .. }), "{err}");
    c.net.set_down("b", false);
    let seq = c.v("a").flush().await.expect("flush once it is back");
    c.wait_in_sync("a").await;
    assert!(c.v("b").status().durable_seq >= seq);
    assert_eq!(
        c.v("b").read(0, 8192).await.unwrap(),
        c.v("a").read(0, 8192).await.unwrap()
    );
    assert_eq!(c.v("b").read(4096, 4096).await.unwrap(), pattern(2, 4096));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrade_policy_goes_on_and_resyncs_only_dirty_regions() {
    let c = Cluster::new(&["a", "b"], SIZE, fast_config()).await;
    c.configure(&c.group("a", 1, TransferType::Sync, FailurePolicy::Degrade))
        .await;
    let mut model = vec![0u8; SIZE as usize];
    write(&mut model, c.v("a"), 0, pattern(1, SIZE as usize)).await;
    c.wait_in_sync("a").await;
    c.net.set_down("b", true);
    // Two regions change while b is away.
    write(&mut model, c.v("a"), 70_000, pattern(2, 10)).await;
    write(&mut model, c.v("a"), 3 << 20, pattern(3, 10)).await;
    let st = c.v("a").status();
    assert_eq!(
        st.members[0].state,
        MemberState::Unreachable,
        "{:?}",
        st.members
    );
    assert_eq!(
        st.members[0].lag_bytes,
        2 * 65536,
        "only the two touched regions are dirty"
    );
    c.net.set_down("b", false);
    write(&mut model, c.v("a"), 100, pattern(4, 10)).await;
    c.wait_in_sync("a").await;
    c.assert_all_hold(&model).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_crash_and_restart_keeps_acknowledged_writes() {
    let mut c = Cluster::new(&["a", "b"], SIZE, fast_config()).await;
    c.configure(&c.group("a", 1, TransferType::Async, FailurePolicy::Degrade))
        .await;
    let mut model = vec![0u8; SIZE as usize];
    for i in 0..30u64 {
        write(&mut model, c.v("a"), i * 1000, pattern(i, 3000)).await;
    }
    c.crash("a").await;
    c.open("a").await;
    assert_eq!(c.v("a").role(), Role::Primary);
    assert_eq!(c.v("a").status().written_seq, 30);
    write(&mut model, c.v("a"), 5, pattern(99, 10)).await;
    c.wait_in_sync("a").await;
    c.assert_all_hold(&model).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_promotes_a_secondary_and_the_old_primary_rejoins_as_secondary() {
    let mut c = Cluster::new(&["a", "b", "c"], SIZE, fast_config()).await;
    c.configure(&c.group("a", 1, TransferType::Sync, FailurePolicy::Degrade))
        .await;
    let mut model = vec![0u8; SIZE as usize];
    for i in 0..20u64 {
        write(&mut model, c.v("a"), i * 8192, pattern(i, 5000)).await;
    }
    c.crash("a").await;
    c.v("b").promote(2).await.expect("promote");
    while c.v("c").epoch() != 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = c.v("c").promote(2).await.unwrap_err();
    assert!(
        matches!(err, EngineError::StaleEpoch { .. }),
        "c already follows b at epoch 2: {err}"
    );
    for i in 20..30u64 {
        write(&mut model, c.v("b"), i * 8192, pattern(i, 5000)).await;
    }
    // The old primary restarts believing it is primary at epoch 1; b's
    // hand-shake at epoch 2 makes it a secondary and resyncs it.
    c.open("a").await;
    c.wait_in_sync("b").await;
    assert_eq!(c.v("a").role(), Role::Secondary);
    assert_eq!(c.v("a").epoch(), 2);
    c.assert_all_hold(&model).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_gets_a_full_copy_while_writes_continue() {
    let mut c = Cluster::new(&["a"], SIZE, fast_config()).await;
    let solo = c.group("a", 1, TransferType::Sync, FailurePolicy::Block);
    c.configure(&solo).await;
    let mut model = vec![0u8; SIZE as usize];
    write(&mut model, c.v("a"), 0, pattern(7, SIZE as usize)).await;
    c.dir("b").create_replica(VOL, "b", SIZE).unwrap();
    c.open("b").await;
    let both = c.group("a", 1, TransferType::Sync, FailurePolicy::Block);
    c.configure(&both).await;
    for i in 0..20u64 {
        write(&mut model, c.v("a"), i * 100_000, pattern(100 + i, 1000)).await;
    }
    c.wait_in_sync("a").await;
    c.assert_all_hold(&model).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_epoch_and_bad_messages_are_refused_without_change() {
    let c = Cluster::new(&["a", "b"], SIZE, fast_config()).await;
    c.configure(&c.group("a", 1, TransferType::Sync, FailurePolicy::Block))
        .await;
    c.v("a").write(0, pattern(1, 100), false).await.unwrap();
    c.wait_in_sync("a").await;
    let b = c.v("b");
    let before = b.status();
    let data = b.read(0, 200).await.unwrap();
    let req = |epoch: u64, msg: PeerMessage| PeerRequest {
        volume_id: VOL.into(),
        epoch,
        msg,
    };
    let rec =
        |seq: u64, epoch: u64, offset: u64| WriteRecord::new(seq, epoch, offset, pattern(seq, 50));
    let cases: Vec<(PeerRequest, &str)> = vec![
        (
            req(
                0,
                PeerMessage::Append {
                    records: vec![rec(2, 0, 0)],
                },
            ),
            "StaleEpoch",
        ),
        (
            req(
                3,
                PeerMessage::Append {
                    records: vec![rec(2, 1, 0)],
                },
            ),
            "EpochMismatch",
        ),
        (
            req(
                1,
                PeerMessage::Append {
                    records: vec![rec(3, 1, 0)],
                },
            ),
            "SeqGap",
        ),
        (
            req(
                1,
                PeerMessage::Append {
                    records: vec![rec(1, 1, 0)],
                },
            ),
            "DuplicateSeq",
        ),
        (
            req(
                1,
                PeerMessage::Append {
                    records: vec![rec(2, 1, 0), rec(4, 1, 0)],
                },
            ),
            "SeqGap",
        ),
        (
            req(
                1,
                PeerMessage::Append {
                    records: vec![rec(2, 1, SIZE - 10)],
                },
            ),
            "OutOfRange",
        ),
        (
            req(1, PeerMessage::Append { records: vec![] }),
            "InvalidField",
        ),
        (
            req(
                0,
                PeerMessage::Hello {
                    primary: "x".into(),
                },
            ),
            "StaleEpoch",
        ),
        (
            req(1, PeerMessage::Regions { regions: vec![] }),
            "NotResyncing",
        ),
    ];
    for (r, want) in cases {
        let err = match b.begin_peer(r).await {
            Err(e) => e,
            Ok(_) => panic!("accepted a message that should fail with {want}"),
        };
        assert!(
            format!("{err:?}").starts_with(want),
            "want {want}, got {err:?}"
        );
    }
    let mut bad = rec(2, 1, 0);
    bad.crc ^= 1;
    let err = b
        .begin_peer(req(1, PeerMessage::Append { records: vec![bad] }))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, EngineError::ChecksumMismatch { seq: 2, .. }),
        "{err}"
    );
    let huge = WriteRecord::new(2, 1, 0, Bytes::from(vec![0u8; 9 << 20]));
    let err = b
        .begin_peer(req(
            1,
            PeerMessage::Append {
                records: vec![huge],
            },
        ))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, EngineError::MessageTooLarge { .. }), "{err}");
    let after = b.status();
    assert_eq!(
        (after.epoch, after.written_seq, after.role),
        (before.epoch, before.written_seq, before.role)
    );
    assert_eq!(b.read(0, 200).await.unwrap(), data);
    // A configure at an older epoch is refused too.
    let err = b
        .configure(c.group("b", 1, TransferType::Sync, FailurePolicy::Block))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::EpochConflict { .. }), "{err}");
    let err = b
        .configure(c.group("b", 0, TransferType::Sync, FailurePolicy::Block))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::InvalidField {
                field: "group.epoch",
                ..
            }
        ),
        "{err}"
    );
}

/// A small tmpfs mounted for the test's lifetime (needs root).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount")
            .success();
        assert!(ok, "mount tmpfs at {} (needs root)", path.display());
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Write until a write fails. Returns the model of acknowledged writes and
/// the failed write (its bytes may or may not have landed).
async fn fill_until_error(c: &Cluster, max: u64) -> (Vec<u8>, Option<(EngineError, u64, Bytes)>) {
    let mut model = vec![0u8; (1 << 20) as usize];
    for i in 0..max {
        let off = (i % 15) * 65536;
        let data = pattern(i, 65536);
        match c.v("a").write(off, data.clone(), false).await {
            Ok(_) => model[off as usize..off as usize + 65536].copy_from_slice(&data),
            Err(e) => return (model, Some((e, off, data))),
        }
    }
    (model, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_on_a_secondary_fails_block_writes_and_degrades_degrade_groups() {
    for policy in [FailurePolicy::Block, FailurePolicy::Degrade] {
        let mut c = Cluster::new(&["a"], 1 << 20, fast_config()).await;
        let _fs = Tmpfs::mount(&c.root.path().join("b"), "2m");
        c.dir("b").create_replica(VOL, "b", 1 << 20).unwrap();
        c.open("b").await;
        c.configure(&c.group("a", 1, TransferType::Sync, policy))
            .await;
        let (model, err) = fill_until_error(&c, 64).await;
        match policy {
            FailurePolicy::Block => {
                let (err, off, data) =
                    err.expect("writes must fail once the secondary's disk is full");
                // The failed write was never acknowledged: either content is allowed there.
                let got = c.v("a").read(off, data.len() as u64).await.unwrap();
                assert!(got == data || got[..] == model[off as usize..off as usize + data.len()]);
                let mut model = model.clone();
                model[off as usize..off as usize + data.len()].copy_from_slice(&got);
                assert!(
                    c.v("a").read(0, 1 << 20).await.unwrap()[..] == model[..],
                    "acknowledged write lost"
                );
                assert!(
                    matches!(&err, EngineError::SecondaryRefused { reason, .. } if reason.contains("no space")),
                    "{err}"
                );
            }
            FailurePolicy::Degrade => {
                assert!(err.is_none(), "Degrade goes on: {:?}", err.map(|e| e.0));
                assert!(
                    c.v("a").read(0, 1 << 20).await.unwrap()[..] == model[..],
                    "acknowledged write lost"
                );
                let st = c.v("a").status();
                assert_ne!(st.members[0].state, MemberState::InSync, "{:?}", st.members);
                assert!(
                    st.members[0].message.contains("no space"),
                    "{:?}",
                    st.members
                );
            }
        }
        for v in c.vols.values() {
            v.close().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_lag_bound_holds_writes_back_then_applies_the_policy() {
    for policy in [FailurePolicy::Block, FailurePolicy::Degrade] {
        let c = Cluster::new(&["a", "b"], SIZE, fast_config()).await;
        let mut g = c.group("a", 1, TransferType::Async, policy);
        g.max_lag_bytes = 256 * 1024;
        c.configure(&g).await;
        c.v("a").write(0, pattern(0, 4096), false).await.unwrap();
        c.wait_in_sync("a").await;
        c.net.set_down("b", true);
        let mut failure = None;
        let mut accepted = 0u64;
        for i in 0..40u64 {
            match c.v("a").write(i * 65536, pattern(i, 65536), false).await {
                Ok(_) => accepted += 1,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let st = c.v("a").status();
        match policy {
            FailurePolicy::Block => {
                let e = failure.expect("the lag bound must stop writes");
                assert!(matches!(e, EngineError::ReplicateTimeout { .. }), "{e}");
                // The lag never passed the bound by more than one write.
                assert!(
                    st.members[0].lag_bytes <= 256 * 1024 + 65536,
                    "{:?}",
                    st.members
                );
                assert!(accepted >= 4, "writes under the bound go on: {accepted}");
            }
            FailurePolicy::Degrade => {
                assert!(failure.is_none(), "{failure:?}");
                assert_ne!(st.members[0].state, MemberState::InSync);
            }
        }
        c.net.set_down("b", false);
        c.wait_in_sync("a").await;
        let primary = c.v("a").read(0, SIZE).await.unwrap();
        assert!(
            c.v("b").read(0, SIZE).await.unwrap() == primary,
            "b differs after catching up"
        );
        for v in c.vols.values() {
            v.close().await;
        }
    }
}

/// A Sync+Block primary whose write is waiting on its secondaries when a
/// newer primary's hand-shake makes it step down must not acknowledge that
/// write: the new primary does not hold it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_superseded_while_a_sync_write_waits_fails_the_write() {
    let config = roam_engine::EngineConfig {
        ack_timeout: Duration::from_secs(20),
        ..fast_config()
    };
    let c = Cluster::new(&["a", "b", "c"], SIZE, config).await;
    c.configure(&c.group("a", 1, TransferType::Sync, FailurePolicy::Block))
        .await;
    c.v("a").write(0, pattern(1, 100), false).await.unwrap();
    c.wait_in_sync("a").await;
    // a can no longer reach its secondaries; its next write waits for them.
    c.net.set_down("b", true);
    c.net.set_down("c", true);
    let old = c.v("a").clone();
    let pending = tokio::spawn(async move { old.write(4096, pattern(2, 100), false).await });
    while c.v("a").status().written_seq < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // b is promoted past a; its hand-shake reaches a, which steps down.
    c.v("b").promote(2).await.expect("promote b");
    let outcome = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the write ends once a steps down")
        .expect("write task");
    let err = outcome.expect_err("a write the new primary lacks was acknowledged");
    assert!(
        matches!(
            err,
            EngineError::StaleEpoch {
                held: 2,
                got: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(c.v("a").role(), Role::Secondary);
    assert_ne!(c.v("b").read(4096, 100).await.unwrap(), pattern(2, 100));
}

/// Whatever the failure policy, a primary whose secondaries refuse its write
/// at a newer epoch fences itself and fails the write (and the next ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_at_a_newer_epoch_fences_the_old_primary() {
    for policy in [FailurePolicy::Block, FailurePolicy::Degrade] {
        let c = Cluster::new(&["a", "b", "c"], SIZE, fast_config()).await;
        c.configure(&c.group("a", 1, TransferType::Sync, policy))
            .await;
        c.v("a").write(0, pattern(1, 100), false).await.unwrap();
        c.wait_in_sync("a").await;
        // The new primary cannot reach a, so a still believes in epoch 1.
        c.net.set_down("a", true);
        c.v("b").promote(2).await.expect("promote b");
        while c.v("c").epoch() != 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let err = c
            .v("a")
            .write(4096, pattern(2, 100), false)
            .await
            .expect_err("a write refused at a newer epoch was acknowledged");
        assert!(
            matches!(err, EngineError::Fenced { .. }),
            "{policy:?}: {err}"
        );
        let status = c.v("a").status();
        assert!(status.fenced, "{policy:?}: a is fenced");
        let next = c.v("a").write(8192, pattern(3, 100), false).await;
        assert!(
            matches!(next, Err(EngineError::Fenced { .. })),
            "{policy:?}: {next:?}"
        );
        for dc in ["b", "c"] {
            assert_ne!(
                c.v(dc).read(4096, 100).await.unwrap(),
                pattern(2, 100),
                "{policy:?}: {dc} holds the refused write"
            );
        }
    }
}

/// A region copy interrupted after its regions went out, then the member
/// re-created empty: it gets a full copy. The interrupted copy's regions
/// alone once passed for everything it lacked, and the member claimed
/// InSync without the data written before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_recreated_after_an_interrupted_copy_gets_a_full_copy() {
    let mut c = Cluster::new_sim(&["a", "b"], SIZE, fast_config()).await;
    c.configure(&c.group("a", 1, TransferType::Sync, FailurePolicy::Degrade))
        .await;
    for mib in 0..SIZE >> 20 {
        c.v("a")
            .write(mib << 20, pattern(mib + 1, 1 << 20), false)
            .await
            .expect("write while in sync");
    }
    c.wait_in_sync("a").await;
    c.net.set_down("b", true);
    c.v("a")
        .write(0, pattern(9, 4096), false)
        .await
        .expect("Degrade goes on without b");
    // b takes the copy's first message and then fails on its data file.
    c.sims["b"].fail_writes("data", Some(5));
    c.net.set_down("b", false);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let st = c.v("a").status();
        let b = st.members.iter().find(|m| m.data_center == "b").unwrap();
        if b.message.contains("Input/output error") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the copy to b never failed: {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.crash("b").await;
    c.add_sim("b", SIZE).await;
    c.wait_in_sync("a").await;
    let want = c.v("a").read(0, SIZE).await.unwrap();
    assert!(
        c.v("b").read(0, SIZE).await.unwrap() == want,
        "the re-created member claims InSync without the data written before it"
    );
}
