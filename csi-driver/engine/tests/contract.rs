//! The durability contract under the faults found in the engine: one test
//! per finding, each on the in-process cluster (real journal code, the
//! simulated disk where a power cut or a failed sync is the fault).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use roam_engine::transport::{PeerMessage, PeerRequest};
use roam_engine::{EngineError, FailurePolicy, MemberState, Role, TransferType};

const SIZE: u64 = 4 << 20;

async fn write(model: &mut [u8], v: &roam_engine::Volume, offset: u64, data: Bytes) -> u64 {
    let seq = v.write(offset, data.clone(), false).await.expect("write");
    model[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
    seq
}

/// The scenario: Sync + Block, the secondary killed, then the
/// primary killed and restarted while the secondary is still down. A write
/// and a flush must not succeed: the flushed write would exist in one data
/// center only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_primary_does_not_go_on_alone_under_sync_block() {
    let mut c = Cluster::sim_sync_pair(SIZE, FailurePolicy::Block).await;
    c.v("a").flush().await.expect("flush");
    c.crash("b").await;
    let refused = c.v("a").write(4096, pattern(2, 4096), false).await;
    assert!(refused.is_err(), "a write with b down was acknowledged");
    c.crash("a").await;
    c.open("a").await;
    let outcome = async {
        c.v("a").write(8192, pattern(3, 4096), false).await?;
        c.v("a").flush().await
    }
    .await;
    assert!(
        outcome.is_err(),
        "a restarted primary acknowledged a write and a flush without its only secondary"
    );
    let st = c.v("a").status();
    assert_ne!(st.members[0].state, MemberState::InSync, "{:?}", st.members);
}

/// Finding 1: a secondary emptied and re-created while away reports applied
/// 0; it must get every region, not only those dirtied since it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_secondary_gets_a_full_copy() {
    let mut c = Cluster::new(&["a", "b"], SIZE, fast_config()).await;
    c.configure(&c.group("a", 1, TransferType::Sync, FailurePolicy::Degrade))
        .await;
    let mut model = vec![0u8; SIZE as usize];
    for i in 0..8u64 {
        write(&mut model, c.v("a"), i * 300_000, pattern(i, 5000)).await;
    }
    c.wait_in_sync("a").await;
    c.net.set_down("b", true);
    write(&mut model, c.v("a"), 3 << 20, pattern(50, 100)).await;
    // b's replica is deleted and created again, empty.
    c.crash("b").await;
    c.dir("b").delete().expect("delete b");
    c.dir("b")
        .create_replica(VOL, "b", SIZE)
        .expect("re-create b");
    c.open("b").await;
    c.net.set_down("b", false);
    c.wait_in_sync("a").await;
    assert!(
        c.v("b").read(0, SIZE).await.unwrap()[..] == model[..],
        "b claims InSync but lacks writes made before it was re-created"
    );
}

/// Finding 2: after a primary restart every member tracks; the Async lag
/// bound still holds writes back for a member that cannot be reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_lag_bound_holds_after_a_primary_restart() {
    let mut c = Cluster::new_sim(&["a", "b"], SIZE, fast_config()).await;
    let mut g = c.group("a", 1, TransferType::Async, FailurePolicy::Block);
    g.max_lag_bytes = 256 * 1024;
    c.configure(&g).await;
    c.v("a").write(0, pattern(0, 4096), false).await.unwrap();
    c.wait_in_sync("a").await;
    c.net.set_down("b", true);
    c.crash("a").await;
    c.open("a").await;
    let mut accepted = 0u64;
    let mut failure = None;
    for i in 0..40u64 {
        match c.v("a").write(i * 65536, pattern(i, 65536), false).await {
            Ok(_) => accepted += 1,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let e = failure.expect("the lag bound must stop writes after a restart too");
    assert!(matches!(e, EngineError::ReplicateTimeout { .. }), "{e}");
    assert!(
        accepted <= 6,
        "accepted {accepted} writes past a 256 KiB bound"
    );
}

/// Finding 2 (Degrade): after a restart the unreachable member is recorded
/// out of sync before a write goes on without it, and the record survives a
/// crash; the member rejoins after its resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_recorded_out_of_sync_before_writes_go_on_without_it() {
    let mut c = Cluster::new_sim(&["a", "b"], SIZE, fast_config()).await;
    c.configure(&c.group("a", 1, TransferType::Sync, FailurePolicy::Degrade))
        .await;
    let mut model = vec![0u8; SIZE as usize];
    write(&mut model, c.v("a"), 0, pattern(1, 4096)).await;
    c.wait_in_sync("a").await;
    c.net.set_down("b", true);
    c.crash("a").await;
    c.open("a").await;
    let started = std::time::Instant::now();
    write(&mut model, c.v("a"), 4096, pattern(2, 4096)).await;
    c.v("a").flush().await.expect("flush");
    assert!(
        started.elapsed() >= c.config.ack_timeout,
        "the write went on without waiting for the in-sync member"
    );
    assert!(!c.v("a").status().members[0].in_sync);
    c.crash("a").await;
    c.open("a").await;
    assert!(
        !c.v("a").status().members[0].in_sync,
        "the out-of-sync record did not survive a crash"
    );
    c.net.set_down("b", false);
    c.wait_in_sync("a").await;
    assert!(c.v("a").status().members[0].in_sync);
    c.assert_all_hold(&model).await;
}

/// Finding 4: a primary that lost its unsynced tail in a power cut reopens
/// with a shorter log; the sequence numbers it hands out next carry
/// different data, and a secondary holding the old ones must be told apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_reopened_after_a_power_cut_does_not_reuse_sequence_numbers() {
    let mut c = Cluster::new_sim(&["a", "b"], SIZE, fast_config()).await;
    c.configure(&c.group("a", 1, TransferType::Async, FailurePolicy::Degrade))
        .await;
    for i in 0..5u64 {
        c.v("a")
            .write(i * 4096, pattern(i, 4096), false)
            .await
            .unwrap();
    }
    c.v("a").flush().await.unwrap();
    // Not synced on a (a slow disk), but b holds them.
    c.sims["a"].stall_syncs("journal", true);
    // In regions nothing else writes: only a copy based on the sequence
    // history can repair them on b.
    for i in 5..10u64 {
        c.v("a")
            .write((2 << 20) + i * 4096, pattern(i, 4096), false)
            .await
            .unwrap();
    }
    c.wait_in_sync("a").await;
    c.net.set_down("b", true);
    c.power_cut("a", None).await;
    c.open("a").await;
    let reopened_at = c.v("a").status().written_seq;
    assert!(reopened_at < 10, "the power cut kept unsynced writes");
    let mut expected = c.v("a").read(0, SIZE).await.unwrap().to_vec();
    // Different data under the sequence numbers b already holds, and more.
    for i in 0..8u64 {
        write(
            &mut expected,
            c.v("a"),
            100_000 + i * 70_000,
            pattern(100 + i, 3000),
        )
        .await;
    }
    c.net.set_down("b", false);
    c.wait_in_sync("a").await;
    assert!(
        c.v("b").read(0, SIZE).await.unwrap()[..] == expected[..],
        "b reports InSync but holds writes the primary does not"
    );
}

/// Finding 5: a copy that lowers a secondary's position lowers its durable
/// watermark too; a write acknowledged after it survives a power cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durable_watermark_follows_a_copy_down() {
    let mut c = Cluster::new_sim(&["a", "b"], SIZE, fast_config()).await;
    c.configure(&c.group("a", 1, TransferType::Sync, FailurePolicy::Degrade))
        .await;
    for i in 0..5u64 {
        c.v("a")
            .write(i * 4096, pattern(i, 4096), false)
            .await
            .unwrap();
    }
    c.v("a").flush().await.unwrap();
    c.sims["a"].stall_syncs("journal", true);
    for i in 5..10u64 {
        c.v("a")
            .write(i * 4096, pattern(i, 4096), false)
            .await
            .unwrap();
    }
    c.wait_in_sync("a").await;
    // b holds 1..=10; a loses 6..=10 to a power cut, so b is ahead of a's
    // reopened position and gets a copy down to it.
    c.net.set_down("b", true);
    c.power_cut("a", None).await;
    c.open("a").await;
    let low = c.v("a").status().written_seq;
    assert!(low < 10);
    c.net.set_down("b", false);
    c.wait_in_sync("a").await;
    assert_eq!(c.v("b").status().written_seq, low);
    // One more write: Sync, so acknowledged means durable on b.
    let seq = c.v("a").write(0, pattern(77, 4096), false).await.unwrap();
    c.v("a").flush().await.unwrap();
    c.power_cut("b", None).await;
    c.open("b").await;
    assert!(
        c.v("b").status().written_seq >= seq,
        "b acknowledged write {seq} before it was durable"
    );
    assert_eq!(c.v("b").read(0, 4096).await.unwrap(), pattern(77, 4096));
}

/// Finding 6: a write whose journal record cannot be written must not
/// reach the data file (it would be in no journal and no dirty map).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_in_the_journal_does_not_reach_the_data_file() {
    let mut c = Cluster::new_sim(&["a", "b"], SIZE, fast_config()).await;
    c.configure(&c.group("a", 1, TransferType::Sync, FailurePolicy::Block))
        .await;
    let mut model = vec![0u8; SIZE as usize];
    write(&mut model, c.v("a"), 0, pattern(1, 4096)).await;
    c.wait_in_sync("a").await;
    c.sims["a"].fail_writes("journal", Some(libc::EIO));
    let err = c.v("a").write(0, pattern(2, 4096), false).await;
    assert!(err.is_err(), "a write the journal refused was acknowledged");
    assert!(
        c.v("a").read(0, 4096).await.unwrap() == pattern(1, 4096),
        "the data file holds a write that is in no journal"
    );
    // Reopened (the journal works again), the group agrees byte for byte.
    c.sims["a"].fail_writes("journal", None);
    c.crash("a").await;
    c.open("a").await;
    write(&mut model, c.v("a"), 8192, pattern(3, 4096)).await;
    c.wait_in_sync("a").await;
    c.assert_all_hold(&model).await;
}

/// Finding 7: a failed fsync of the data file in a checkpoint is never
/// retried into a journal reset; the replica stops until reopened, and the
/// reopen replays what the lost pages held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_data_sync_in_a_checkpoint_loses_nothing_flushed() {
    let config = roam_engine::EngineConfig {
        checkpoint_bytes: 64 * 1024,
        ..fast_config()
    };
    let mut c = Cluster::new_sim(&["a"], SIZE, config).await;
    c.configure(&c.group("a", 1, TransferType::Sync, FailurePolicy::Block))
        .await;
    c.sims["a"].fail_next_sync("data");
    let mut model = vec![0u8; SIZE as usize];
    let mut flushed = model.clone();
    for i in 0..40u64 {
        let data = pattern(i, 16 * 1024);
        let off = i * 16 * 1024;
        match c.v("a").write(off, data.clone(), false).await {
            Ok(_) => model[off as usize..off as usize + data.len()].copy_from_slice(&data),
            Err(_) => break,
        }
        if c.v("a").flush().await.is_ok() {
            flushed.clone_from(&model);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.power_cut("a", None).await;
    c.open("a").await;
    assert!(
        c.v("a").read(0, SIZE).await.unwrap()[..] == flushed[..],
        "a flushed write was lost after a failed data-file sync"
    );
}

/// Finding 8: a planned transfer confirms that every in-sync secondary
/// holds everything, not only the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_waits_for_every_in_sync_secondary() {
    let c = Cluster::new(&["a", "b", "c"], SIZE, fast_config()).await;
    c.configure(&c.group("a", 1, TransferType::Async, FailurePolicy::Block))
        .await;
    c.v("a").write(0, pattern(1, 4096), false).await.unwrap();
    c.wait_in_sync("a").await;
    c.net.set_down("c", true);
    c.v("a").write(4096, pattern(2, 4096), false).await.unwrap();
    let err = c
        .v("a")
        .transfer_primary("b", 2)
        .await
        .expect_err("a transfer went on while an in-sync member lacked a write");
    assert!(
        matches!(err, EngineError::TransferFailed { ref reason, .. } if reason.contains("c")),
        "{err}"
    );
    // Refused before the hand-over: a is primary and takes writes again.
    assert_eq!(c.v("a").role(), Role::Primary);
    c.v("a")
        .write(8192, pattern(3, 4096), false)
        .await
        .expect("write after the refused transfer");
    c.net.set_down("c", false);
    c.wait_in_sync("a").await;
    c.v("a").transfer_primary("b", 2).await.expect("transfer");
}

/// Finding 9: a target that refuses the hand-over because a copy into it is
/// unfinished says so with a typed code; the old primary takes writes again
/// instead of staying fenced as "outcome unknown".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_hand_over_has_a_typed_code_and_unfences_the_primary() {
    let c = Cluster::new(&["a", "b"], SIZE, fast_config()).await;
    c.configure(&c.group("a", 1, TransferType::Sync, FailurePolicy::Block))
        .await;
    c.v("a").write(0, pattern(1, 4096), false).await.unwrap();
    c.wait_in_sync("a").await;
    // A target that is not ready: the hand-over names a write it lacks.
    let req = PeerRequest {
        volume_id: VOL.into(),
        epoch: 2,
        msg: PeerMessage::TakePrimary {
            group: c.group("b", 2, TransferType::Sync, FailurePolicy::Block),
            last_seq: 99,
        },
    };
    let err = match c.v("b").begin_peer(req).await {
        Err(e) => e,
        Ok(_) => panic!("a hand-over past the target's position was accepted"),
    };
    assert_eq!(
        err.refusal_code(),
        roam_engine::RefusalCode::NotReady,
        "{err}"
    );
    let unfinished = EngineError::ResyncUnfinished { volume: VOL.into() };
    assert_eq!(
        unfinished.refusal_code(),
        roam_engine::RefusalCode::NotReady
    );
    assert_eq!(c.v("b").role(), Role::Secondary);
    c.v("a")
        .write(4096, pattern(2, 4096), false)
        .await
        .expect("a still takes writes");
}
