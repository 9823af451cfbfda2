//! The faults a trial picks from, each done for real to the processes of
//! the trial ([`World`]) while the workload writes, and undone afterwards.
//! At most one data center is ever lost at a time: a storage system that is
//! killed and kept down until the operator fails over is the only one down
//! (the one exception is the scenario of issue 9's report, a primary that
//! restarts while a secondary is down, and even there the secondary is back
//! before the primary's data center is lost).

use std::sync::Arc;
use std::time::{Duration, Instant};

use roam_proto::storage::DeleteReplicaRequest;
use tokio::sync::Mutex;

use super::operator::Operator;
use super::rng::Rng;
use super::world::{World, channel};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// kill -9 of the primary, kept down until the operator fails over.
    KillPrimary,
    /// kill -9 of a secondary, started again after a while.
    KillSecondary,
    /// kill -9 of the old or the new primary while a transfer runs.
    KillDuringTransfer,
    /// A secondary falls behind, comes back, and it or the primary is
    /// killed while it catches up.
    KillDuringResync,
    /// SIGSTOP of the primary (long enough for a failover, or not).
    StopPrimary,
    /// SIGSTOP of a secondary.
    StopSecondary,
    /// The primary cut off from its peers and the operator, not its host.
    PartitionPrimary,
    /// A secondary cut off from everyone.
    PartitionSecondary,
    /// The operator cut off from the primary, which still reaches its peers.
    PartitionOperator,
    /// The primary's data directory fills up.
    FullDiskPrimary,
    /// A secondary's data directory fills up.
    FullDiskSecondary,
    /// A secondary is killed, the primary is killed and restarted, the
    /// secondary comes back, then the primary's data center is lost.
    PrimaryRestartSecondaryDown,
    /// A secondary's replica is deleted; the operator creates it again.
    DeleteRecreate,
    /// A planned change of primary while the writes go on.
    TransferMidWrite,
    /// A forced failover while the old primary still runs (the operator lost
    /// sight of it).
    FailoverMidWrite,
}

pub const ALL: &[FaultKind] = &[
    FaultKind::KillPrimary,
    FaultKind::KillSecondary,
    FaultKind::KillDuringTransfer,
    FaultKind::KillDuringResync,
    FaultKind::StopPrimary,
    FaultKind::StopSecondary,
    FaultKind::PartitionPrimary,
    FaultKind::PartitionSecondary,
    FaultKind::PartitionOperator,
    FaultKind::FullDiskPrimary,
    FaultKind::FullDiskSecondary,
    FaultKind::PrimaryRestartSecondaryDown,
    FaultKind::DeleteRecreate,
    FaultKind::TransferMidWrite,
    FaultKind::FailoverMidWrite,
];

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillPrimary => "kill-primary",
            FaultKind::KillSecondary => "kill-secondary",
            FaultKind::KillDuringTransfer => "kill-during-transfer",
            FaultKind::KillDuringResync => "kill-during-resync",
            FaultKind::StopPrimary => "sigstop-primary",
            FaultKind::StopSecondary => "sigstop-secondary",
            FaultKind::PartitionPrimary => "partition-primary",
            FaultKind::PartitionSecondary => "partition-secondary",
            FaultKind::PartitionOperator => "partition-operator",
            FaultKind::FullDiskPrimary => "full-disk-primary",
            FaultKind::FullDiskSecondary => "full-disk-secondary",
            FaultKind::PrimaryRestartSecondaryDown => "primary-restart-secondary-down",
            FaultKind::DeleteRecreate => "delete-recreate",
            FaultKind::TransferMidWrite => "transfer-mid-write",
            FaultKind::FailoverMidWrite => "failover-mid-write",
        }
    }

    pub fn from_name(name: &str) -> Option<FaultKind> {
        ALL.iter().copied().find(|k| k.name() == name)
    }
}

fn ms(d: u64) -> Duration {
    Duration::from_millis(d)
}

async fn primary(op: &Arc<Mutex<Operator>>) -> (usize, u64) {
    let op = op.lock().await;
    (op.primary, op.epoch)
}

/// A secondary of the current primary, picked by `rng`.
async fn secondary(op: &Arc<Mutex<Operator>>, rng: &mut Rng, nodes: usize) -> usize {
    let (p, _) = primary(op).await;
    let others: Vec<usize> = (0..nodes).filter(|i| *i != p).collect();
    *rng.pick(&others)
}

/// Waits (bounded) until the operator has moved the primary away from `from`.
async fn until_moved(op: &Arc<Mutex<Operator>>, from: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if primary(op).await.0 != from {
            return true;
        }
        tokio::time::sleep(ms(50)).await;
    }
    false
}

/// Does one fault of `kind` and undoes it; returns what was done.
pub async fn inject(
    kind: FaultKind,
    world: &mut World,
    op: &Arc<Mutex<Operator>>,
    rng: &mut Rng,
    volume: &str,
) -> String {
    let n = world.topology.len();
    let dc = |i: usize| format!("dc-{i}");
    match kind {
        FaultKind::KillPrimary => {
            let (p, _) = primary(op).await;
            world.kill9(p);
            let moved = until_moved(op, p, Duration::from_secs(15)).await;
            tokio::time::sleep(ms(rng.range(100, 500))).await;
            world.restart(p).await;
            format!("kill -9 {} (failover: {moved})", dc(p))
        }
        FaultKind::KillSecondary => {
            let s = secondary(op, rng, n).await;
            let hold = rng.range(200, 1200);
            world.kill9(s);
            tokio::time::sleep(ms(hold)).await;
            world.restart(s).await;
            format!("kill -9 {} for {hold} ms", dc(s))
        }
        FaultKind::KillDuringTransfer => {
            let (p, _) = primary(op).await;
            let t = secondary(op, rng, n).await;
            let victim = if rng.chance(50) { p } else { t };
            let delay = rng.range(0, 150);
            let op2 = op.clone();
            let transfer = tokio::spawn(async move { op2.lock().await.transfer(t).await });
            tokio::time::sleep(ms(delay)).await;
            world.kill9(victim);
            let outcome = transfer.await.expect("transfer task");
            // Long enough for the operator to fail over if the primary is gone.
            tokio::time::sleep(ms(rng.range(300, 1800))).await;
            world.restart(victim).await;
            format!(
                "transfer {} -> {}, kill -9 {} after {delay} ms ({})",
                dc(p),
                dc(t),
                dc(victim),
                if outcome.is_ok() {
                    "transfer done"
                } else {
                    "transfer failed"
                }
            )
        }
        FaultKind::KillDuringResync => {
            let s = secondary(op, rng, n).await;
            let behind = rng.range(300, 1200);
            world.kill9(s);
            tokio::time::sleep(ms(behind)).await;
            world.restart(s).await;
            let delay = rng.range(0, 300);
            tokio::time::sleep(ms(delay)).await;
            let (p, _) = primary(op).await;
            let victim = if rng.chance(50) { s } else { p };
            world.kill9(victim);
            if victim == p {
                until_moved(op, p, Duration::from_secs(15)).await;
            } else {
                tokio::time::sleep(ms(rng.range(200, 1000))).await;
            }
            world.restart(victim).await;
            format!(
                "kill -9 {} for {behind} ms, then kill -9 {} {delay} ms into its catch-up",
                dc(s),
                dc(victim)
            )
        }
        FaultKind::StopPrimary | FaultKind::StopSecondary => {
            let i = if kind == FaultKind::StopPrimary {
                primary(op).await.0
            } else {
                secondary(op, rng, n).await
            };
            let hold = rng.range(300, 1800);
            world.stop(i);
            tokio::time::sleep(ms(hold)).await;
            world.cont(i);
            format!("SIGSTOP {} for {hold} ms", dc(i))
        }
        FaultKind::PartitionPrimary | FaultKind::PartitionOperator => {
            let (p, _) = primary(op).await;
            let peers = kind == FaultKind::PartitionPrimary;
            world.isolate(p, peers, true);
            let moved = until_moved(op, p, Duration::from_secs(10)).await;
            // The old primary's host goes on writing to it meanwhile.
            tokio::time::sleep(ms(rng.range(200, 800))).await;
            world.heal(p);
            format!(
                "{} cut off from {} (failover: {moved})",
                dc(p),
                if peers {
                    "its peers and the operator"
                } else {
                    "the operator"
                }
            )
        }
        FaultKind::PartitionSecondary => {
            let s = secondary(op, rng, n).await;
            let hold = rng.range(300, 1500);
            world.isolate(s, true, true);
            tokio::time::sleep(ms(hold)).await;
            world.heal(s);
            format!("{} cut off from everyone for {hold} ms", dc(s))
        }
        FaultKind::FullDiskPrimary | FaultKind::FullDiskSecondary => {
            let i = if kind == FaultKind::FullDiskPrimary {
                primary(op).await.0
            } else {
                secondary(op, rng, n).await
            };
            let hold = rng.range(300, 1500);
            world.fill_disk(i);
            tokio::time::sleep(ms(hold)).await;
            world.free_disk(i);
            // A failed write stops the replica's journal until it is opened
            // again: the administrator frees space and restarts it.
            world.restart(i).await;
            format!("{} disk full for {hold} ms, then restarted", dc(i))
        }
        FaultKind::PrimaryRestartSecondaryDown => {
            let (p, _) = primary(op).await;
            let s = secondary(op, rng, n).await;
            world.kill9(s);
            tokio::time::sleep(ms(rng.range(100, 400))).await;
            world.kill9(p);
            world.restart(p).await;
            let hold = rng.range(500, 1500);
            tokio::time::sleep(ms(hold)).await;
            world.restart(s).await;
            tokio::time::sleep(ms(rng.range(0, 300))).await;
            world.kill9(p);
            let moved = until_moved(op, p, Duration::from_secs(15)).await;
            tokio::time::sleep(ms(200)).await;
            world.restart(p).await;
            format!(
                "kill -9 {s}, restart {p}, {hold} ms of writes, {s} back, then {p} lost (failover: {moved})",
                s = dc(s),
                p = dc(p)
            )
        }
        FaultKind::DeleteRecreate => {
            let s = secondary(op, rng, n).await;
            let mut c = channel(&world.topology.operator[s], Duration::from_secs(10));
            let deleted = c
                .delete_replica(DeleteReplicaRequest {
                    volume_id: volume.into(),
                })
                .await;
            // The operator's loop creates it again and configures it.
            tokio::time::sleep(ms(rng.range(500, 1500))).await;
            format!(
                "replica on {} deleted ({})",
                dc(s),
                if deleted.is_ok() { "ok" } else { "refused" }
            )
        }
        FaultKind::TransferMidWrite => {
            let (p, _) = primary(op).await;
            let t = secondary(op, rng, n).await;
            let outcome = op.lock().await.transfer(t).await;
            format!(
                "transfer {} -> {} ({})",
                dc(p),
                dc(t),
                if outcome.is_ok() { "done" } else { "failed" }
            )
        }
        FaultKind::FailoverMidWrite => {
            let (p, _) = primary(op).await;
            let done = op.lock().await.force_failover().await;
            tokio::time::sleep(ms(rng.range(300, 1000))).await;
            format!("forced failover away from running {} ({done})", dc(p))
        }
    }
}
