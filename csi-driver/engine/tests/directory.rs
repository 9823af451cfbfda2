//! The in-sync set recorded in the directory and the primary's lease
//! (finding 3: a primary cut off from its peers and from the directory must
//! stop acknowledging before another member may start).

mod common;

use std::time::Duration;

use common::directory::MemDirectory;
use common::*;
use roam_engine::{EngineError, FailurePolicy, Role, TransferType};

const SIZE: u64 = 4 << 20;
const LEASE: Duration = Duration::from_secs(2);

async fn attached(c: &Cluster, dir: &MemDirectory) {
    for (dc, v) in &c.vols {
        v.attach_directory(dir.seen_from(dc));
    }
    // The first renewal is under way; wait until a write may go.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while c.v("a").write(0, pattern(0, 512), false).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "no lease granted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Degrade and Async, the primary cut off from its peer and from the
/// directory: it never goes on alone (the directory cannot record the peer
/// out of sync), its lease runs out, and the operator's promotion after the
/// lease finds it stopped. On heal, the old primary follows the new one and
/// nothing it was cut off with shows up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_primary_stops_before_another_is_promoted() {
    for (transfer, policy) in [
        (TransferType::Sync, FailurePolicy::Degrade),
        (TransferType::Async, FailurePolicy::Degrade),
        (TransferType::Async, FailurePolicy::Block),
    ] {
        let c = Cluster::new(&["a", "b"], SIZE, fast_config()).await;
        c.configure(&c.group("a", 1, transfer, policy)).await;
        let dir = MemDirectory::new(1, LEASE);
        attached(&c, &dir).await;
        c.v("a").write(4096, pattern(1, 4096), false).await.unwrap();
        c.v("a").flush().await.unwrap();
        c.wait_in_sync("a").await;

        // a is cut off from b and from the directory; it keeps running.
        c.net.set_down("b", true);
        c.net.set_down("a", true);
        dir.cut_off("a", true);
        let old = c.v("a").clone();
        let isolated = tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..200u64 {
                if old.write(8192, pattern(100 + i, 4096), false).await.is_ok() {
                    acked.push((i, std::time::Instant::now()));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            acked
        });
        dir.fail_over("b", 2)
            .await
            .expect("b is in the recorded set");
        let promoted_at = std::time::Instant::now();
        c.v("b").promote(2).await.expect("promote b");
        // b takes writes once its own first lease is granted.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Err(e) = c.v("b").write(0, pattern(2, 4096), false).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "b never took a write: {e}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let acked = isolated.await.expect("writer");
        let late: Vec<_> = acked.iter().filter(|(_, at)| *at >= promoted_at).collect();
        assert!(
            late.is_empty(),
            "{transfer:?}/{policy:?}: the old primary acknowledged after the promotion: {late:?}"
        );
        let err = c
            .v("a")
            .write(8192, pattern(9, 4096), false)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                EngineError::LeaseExpired { .. } | EngineError::Fenced { .. }
            ),
            "{transfer:?}/{policy:?}: {err}"
        );
        if transfer == TransferType::Sync {
            assert!(
                acked.is_empty(),
                "Sync/Degrade: a write went on without a member the directory never recorded out of sync"
            );
        }

        // Heal: a follows b at epoch 2 and holds b's data, not its own.
        c.net.set_down("a", false);
        c.net.set_down("b", false);
        dir.cut_off("a", false);
        c.wait_in_sync("b").await;
        assert_eq!(c.v("a").role(), Role::Secondary);
        let b = c.v("b").read(0, SIZE).await.unwrap();
        assert!(c.v("a").read(0, SIZE).await.unwrap() == b);
        assert_eq!(
            &b[4096..8192],
            &pattern(1, 4096)[..],
            "the flushed write survived"
        );
        for v in c.vols.values() {
            v.close().await;
        }
    }
}

/// Degrade with the directory reachable: a member that does not answer is
/// recorded out of sync in the directory before writes go on without it,
/// and back in sync after its resync; the operator refuses to promote it
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_leaves_and_rejoins_the_recorded_set() {
    let c = Cluster::new(&["a", "b"], SIZE, fast_config()).await;
    c.configure(&c.group("a", 1, TransferType::Sync, FailurePolicy::Degrade))
        .await;
    let dir = MemDirectory::new(1, LEASE);
    attached(&c, &dir).await;
    c.wait_in_sync("a").await;
    c.net.set_down("b", true);
    c.v("a")
        .write(0, pattern(1, 4096), false)
        .await
        .expect("Degrade goes on once b is recorded out of sync");
    assert!(dir.out_of_sync().contains("b"), "{:?}", dir.out_of_sync());
    assert!(dir.fail_over("b", 2).await.is_err(), "b lacks a write");
    c.net.set_down("b", false);
    c.wait_in_sync("a").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while dir.out_of_sync().contains("b") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never rejoined the recorded set"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.assert_all_hold(&c.v("a").read(0, SIZE).await.unwrap())
        .await;
}

/// Sync + Degrade with the directory cut off: a member that does not answer
/// cannot be recorded out of sync, so the write fails instead of going on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_directory_a_write_never_goes_on_alone() {
    let c = Cluster::new(&["a", "b"], SIZE, fast_config()).await;
    c.configure(&c.group("a", 1, TransferType::Sync, FailurePolicy::Degrade))
        .await;
    // A long lease, so the write fails for the record, not the lease.
    let dir = MemDirectory::new(1, Duration::from_secs(30));
    attached(&c, &dir).await;
    c.wait_in_sync("a").await;
    c.net.set_down("b", true);
    dir.cut_off("a", true);
    let err = c
        .v("a")
        .write(0, pattern(1, 4096), false)
        .await
        .expect_err("a write went on without b and without the directory's record");
    assert!(matches!(err, EngineError::Directory { .. }), "{err}");
    assert!(c.v("a").status().members[0].in_sync);
}
