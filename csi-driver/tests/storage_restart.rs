//! The scenario with real processes: two `roam-csi storage`
//! processes in their own network namespaces, a Sync + Block volume, the
//! secondary killed with kill -9, then the primary killed and started again
//! while the secondary is still down. A write and a flush must not succeed:
//! a flushed write would exist in one data center only, and losing that
//! data center would lose it although the group is Sync.
//!
//! Root only; run one at a time: `cargo test -p roam-csi --test
//! storage_restart -- --test-threads=1`.

mod support;

use roam_proto::storage::{FailurePolicy, FlushRequest, MemberState, TransferType, WriteRequest};
use support::cluster::Cluster;

const VOLUME: &str = "restart";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_restarted_without_its_secondary_acknowledges_nothing_under_sync_block() {
    let mut cluster = Cluster::start(2, 0, &[]).await;
    let group = cluster.group(&[0, 1], 0, 1, TransferType::Sync, FailurePolicy::Block);
    cluster
        .create_volume(VOLUME, 64 << 20, &[0, 1], group)
        .await;
    let write = |offset: u64, byte: u8| WriteRequest {
        volume_id: VOLUME.into(),
        epoch: 1,
        offset,
        data: vec![byte; 4096],
        fua: false,
    };
    let flush = || FlushRequest {
        volume_id: VOLUME.into(),
        epoch: 1,
    };
    let mut c0 = cluster.client(0).await;
    c0.write(write(0, 1)).await.expect("write with both up");
    c0.flush(flush()).await.expect("flush with both up");

    cluster.nodes[1].kill9();
    let refused = c0.write(write(4096, 2)).await;
    assert!(
        refused.is_err(),
        "a write with the secondary down was acknowledged"
    );

    cluster.nodes[0].restart();
    cluster.wait_ready(0).await;
    let mut c0 = cluster.client(0).await;
    let wrote = c0.write(write(8192, 3)).await;
    let flushed = c0.flush(flush()).await;
    assert!(
        wrote.is_err() && flushed.is_err(),
        "the restarted primary acknowledged without its only secondary: write {:?}, flush {:?}",
        wrote.map(|r| r.into_inner()),
        flushed.map(|r| r.into_inner())
    );
    let status = cluster.status(0, VOLUME).await;
    let dc1 = status
        .members
        .iter()
        .find(|m| m.data_center == "dc-1")
        .expect("dc-1 in the primary's status");
    assert_ne!(dc1.state, MemberState::InSync as i32, "{dc1:?}");
    assert!(
        dc1.in_sync,
        "under Block the member stays in the in-sync set"
    );

    // The secondary comes back: the group takes writes and flushes again.
    cluster.nodes[1].restart();
    cluster.wait_ready(1).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ok = c0.write(write(8192, 4)).await.is_ok() && c0.flush(flush()).await.is_ok();
        if ok {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "writes never resumed after the secondary came back"
        );
    }
}
