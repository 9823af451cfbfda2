//! The lease and the recorded in-sync set, each shown by one scenario on the
//! campaign's real processes (kill -9, nftables partitions), with the
//! campaign's operator as the directory:
//!
//! - a primary cut off from its peers and from the directory acknowledges
//!   nothing once the new primary was told to take over (Async, Block and
//!   Degrade): the operator waited out its lease;
//! - a primary killed and started again at its old epoch after a failover
//!   acknowledges nothing from a host that was not told;
//! - a member recorded out of sync is never promoted.

use std::time::{Duration, Instant};

use roam_proto::storage::{FailurePolicy, SyncLevel, TransferType, WriteRequest};

use super::VOLUME;
use super::operator::{ChangeKind, Operator};
use super::world::{World, channel};
use crate::support::blocks;
use crate::support::directory::DirectoryRecord;

async fn group(
    transfer: TransferType,
    policy: FailurePolicy,
) -> (World, Operator, DirectoryRecord, Instant) {
    let base = Instant::now();
    let replication = super::Replication {
        transfer,
        level: SyncLevel::Write,
        policy,
    };
    let (world, op, _target, record) = super::start_group(replication, base)
        .await
        .expect("the group");
    (world, op, record, base)
}

fn write(epoch: u64, n: u64) -> WriteRequest {
    let offset = (n % 64) * blocks::BLOCK as u64;
    WriteRequest {
        volume_id: VOLUME.into(),
        epoch,
        offset,
        data: blocks::encode(offset, n + 1),
        fua: false,
    }
}

/// Writes to storage system `i` at `epoch` until one is acknowledged (the
/// first lease is granted moments after the group is configured).
async fn first_write(world: &World, i: usize, epoch: u64) {
    let mut c = channel(&world.topology.host[i], Duration::from_secs(3));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.write(write(epoch, 0)).await {
            Ok(_) => return,
            Err(s) => assert!(
                Instant::now() < deadline,
                "dc-{i} took no write at epoch {epoch}: {s}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reconciles until the operator moved the primary away from `from`.
async fn until_failed_over(op: &mut Operator, from: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while op.primary == from {
        assert!(
            Instant::now() < deadline,
            "no failover from dc-{from}: {:#?}",
            op.log
        );
        op.reconcile(true).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn an_isolated_primary_stops_before_another_is_promoted() {
    for policy in [FailurePolicy::Degrade, FailurePolicy::Block] {
        let (mut world, mut op, _record, base) = group(TransferType::Async, policy).await;
        first_write(&world, 0, 1).await;
        world.isolate(0, true, true);
        // Its host goes on writing to it, as one not yet told would.
        let host = world.topology.host[0].clone();
        let writer = tokio::spawn(async move {
            let mut c = channel(&host, Duration::from_secs(3));
            let mut acked = Vec::new();
            let until = Instant::now() + Duration::from_secs(5);
            let mut n = 1;
            while Instant::now() < until {
                if c.write(write(1, n)).await.is_ok() {
                    acked.push(base.elapsed());
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            acked
        });
        until_failed_over(&mut op, 0).await;
        let change = op.changes.last().expect("the failover").clone();
        assert!(matches!(change.kind, ChangeKind::Failover { .. }));
        let acked = writer.await.expect("the isolated primary's writer");
        let late: Vec<_> = acked.iter().filter(|t| **t >= change.promoted).collect();
        assert!(
            late.is_empty(),
            "{policy:?}: the isolated dc-0 acknowledged {} write(s) after dc-{} was told to take over at {:?}: {late:?}",
            late.len(),
            change.to.node,
            change.promoted
        );
        // The new primary does take writes.
        first_write(&world, change.to.node, change.to.epoch).await;
        world.heal_all().await;
    }
}

pub async fn a_restarted_primary_acknowledges_nothing_at_its_old_epoch() {
    let (mut world, mut op, _record, _base) =
        group(TransferType::Async, FailurePolicy::Degrade).await;
    first_write(&world, 0, 1).await;
    world.kill9(0);
    until_failed_over(&mut op, 0).await;
    // Started again before the operator configured it: it still holds
    // epoch 1 as primary, and a host that was not told writes to it. Its
    // peers, which would tell it of epoch 2, are out of its reach (the
    // directory is not): only the directory can stop it.
    world.isolate(0, true, false);
    world.restart(0).await;
    let mut c = channel(&world.topology.host[0], Duration::from_secs(3));
    for n in 1..=30 {
        let reply = c.write(write(1, n)).await;
        assert!(
            reply.is_err(),
            "the restarted dc-0 acknowledged write {n} at epoch 1 after the failover to dc-{} at {}",
            op.primary,
            op.epoch
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    world.heal(0);
}

pub async fn a_member_recorded_out_of_sync_is_not_promoted() {
    let (mut world, mut op, record, _base) =
        group(TransferType::Sync, FailurePolicy::Degrade).await;
    first_write(&world, 0, 1).await;
    // dc-1 is lost; the primary records it out of sync (Degrade, after the
    // ack timeout) and goes on.
    world.kill9(1);
    let mut c = channel(&world.topology.host[0], Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 1;
    while !record.out_of_sync().contains("dc-1") {
        assert!(Instant::now() < deadline, "dc-1 never recorded out of sync");
        let _ = c.write(write(1, n)).await;
        n += 1;
    }
    // Then the primary's data center is lost, dc-1 comes back behind, and
    // the operator sees no other member: dc-2 is cut off from it.
    world.kill9(0);
    world.restart(1).await;
    world.isolate(2, false, true);
    // Long past the grace period and the lease: nobody is promoted.
    let until = Instant::now() + super::operator::GRACE + crate::support::directory::LEASE * 3;
    while Instant::now() < until {
        op.reconcile(true).await;
        assert_eq!(
            op.primary,
            0,
            "promoted dc-{} although the directory records {:?} out of sync: {:#?}",
            op.primary,
            record.out_of_sync(),
            op.log
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // dc-2, in the set, is promoted once the operator sees it.
    world.heal(2);
    until_failed_over(&mut op, 0).await;
    assert_eq!(op.primary, 2);
}
