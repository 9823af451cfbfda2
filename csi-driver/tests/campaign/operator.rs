//! The operator's part, played by the campaign through the storage API the
//! operator uses, with the operator's rules (operator/src/volume/plan.rs):
//! configure every member at the primary's epoch, create a replica that is
//! missing, move the primary on request with `TransferPrimary`, and, once the
//! primary has not answered (or stayed fenced) for a grace period, promote
//! the most up-to-date reachable member of the recorded in-sync set (highest
//! durable position; ties to the first data center) at an epoch above every
//! one held, then configure the others.
//!
//! It keeps the directory too ([`DirectoryRecord`]), as the real operator
//! does: every change of primary is recorded there before the storage call
//! (intent first), and a failover waits out every lease the directory
//! granted to another member before it promotes, so that the old primary
//! has stopped acknowledging, whatever the policy, before the new one starts.
//!
//! Its calls leave from the operator's own network namespace, so a partition
//! can cut a storage system off from the operator alone. Every change of
//! primary is recorded with what the checker needs: when it was asked for,
//! what the old primary last reported of the new one, and what the new
//! primary held the moment it took over (read before any host is told).

use std::time::{Duration, Instant};

use roam_proto::storage::storage_client::StorageClient;
use roam_proto::storage::{
    ConfigureGroupRequest, CreateReplicaRequest, FailurePolicy, GetReplicaRequest, GroupSpec,
    Member, PromoteRequest, ReplicaStatus, Role, SyncLevel, TransferPrimaryRequest, TransferType,
};
use tokio::sync::watch;
use tonic::transport::Channel;

use super::checker::{Snapshot, read_snapshot};
use super::workload::Reign;
use super::world::{Topology, channel};
use crate::support::directory::DirectoryRecord;

/// How long the primary may not answer before the operator fails over.
pub const GRACE: Duration = Duration::from_millis(800);
/// Timeout of a status or configuration call.
const CALL: Duration = Duration::from_millis(500);
/// Timeout of a change of primary (the storage system's own bound is 30 s).
const CHANGE: Duration = Duration::from_secs(15);

#[derive(Clone, Debug)]
pub enum ChangeKind {
    /// Forced promotion. `reported_applied`: the new primary's applied
    /// position in the last status the old primary gave (None if none).
    Failover { reported_applied: Option<u64> },
    /// Planned change of primary.
    Transfer,
    /// The storage systems report a primary the operator did not ask for
    /// (a transfer whose answer was lost).
    Adopted,
}

#[derive(Clone, Debug)]
pub struct Change {
    pub kind: ChangeKind,
    pub from: Reign,
    pub to: Reign,
    /// When the operator asked for it.
    pub asked: Duration,
    /// When the new primary was told to take over: for a failover, after
    /// the old primary's lease ran out.
    pub promoted: Duration,
    /// What the new primary held when it took over.
    pub snapshot: Option<Snapshot>,
}

/// How a trial's group replicates.
#[derive(Clone, Copy, Debug)]
pub struct Replication {
    pub transfer: TransferType,
    /// Sync only.
    pub level: SyncLevel,
    pub policy: FailurePolicy,
}

pub struct Operator {
    topology: Topology,
    volume: String,
    size: u64,
    replication: Replication,
    calls: Vec<StorageClient<Channel>>,
    changes_client: Vec<StorageClient<Channel>>,
    host: Vec<StorageClient<Channel>>,
    pub primary: usize,
    pub epoch: u64,
    target: watch::Sender<Reign>,
    lost_since: Option<Instant>,
    last_primary: Option<ReplicaStatus>,
    pub changes: Vec<Change>,
    pub log: Vec<String>,
    base: Instant,
    directory: DirectoryRecord,
}

type Obs = Result<ReplicaStatus, tonic::Status>;

impl Operator {
    pub fn new(
        topology: &Topology,
        volume: &str,
        size: u64,
        replication: Replication,
        base: Instant,
        directory: DirectoryRecord,
    ) -> (Operator, watch::Receiver<Reign>) {
        let (target, rx) = watch::channel(Reign { node: 0, epoch: 1 });
        let op = Operator {
            topology: topology.clone(),
            volume: volume.to_owned(),
            size,
            replication,
            calls: topology.operator.iter().map(|e| channel(e, CALL)).collect(),
            changes_client: topology
                .operator
                .iter()
                .map(|e| channel(e, CHANGE))
                .collect(),
            host: topology.host.iter().map(|e| channel(e, CHANGE)).collect(),
            primary: 0,
            epoch: 1,
            target,
            lost_since: None,
            last_primary: None,
            changes: Vec::new(),
            log: Vec::new(),
            base,
            directory,
        };
        (op, rx)
    }

    fn note(&mut self, what: String) {
        let t = self.base.elapsed().as_secs_f64();
        self.log.push(format!("+{t:.3}s operator: {what}"));
    }

    pub fn now(&self) -> Duration {
        self.base.elapsed()
    }

    pub fn group(&self) -> GroupSpec {
        GroupSpec {
            members: (0..self.topology.len())
                .map(|i| Member {
                    data_center: self.topology.data_centers[i].clone(),
                    endpoint: self.topology.peer[i].clone(),
                })
                .collect(),
            primary: self.topology.data_centers[self.primary].clone(),
            epoch: self.epoch,
            transfer_type: self.replication.transfer as i32,
            failure_policy: self.replication.policy as i32,
            max_lag_bytes: 0,
            max_lag_seconds: 0,
            sync_level: self.replication.level as i32,
        }
    }

    /// Creates the replica on every member and configures the group.
    pub async fn create(&mut self) -> Result<(), String> {
        for i in 0..self.topology.len() {
            self.create_on(i).await?;
        }
        for i in 0..self.topology.len() {
            // The first definition persists a new replica's metadata: on
            // a loaded machine longer than a status call may take.
            let mut c = self.changes_client[i].clone();
            self.configure_with(&mut c, i).await?;
        }
        Ok(())
    }

    async fn create_on(&mut self, i: usize) -> Result<(), String> {
        // Allocating the real volume takes longer than a status call,
        // the more so on a loaded machine.
        self.changes_client[i]
            .create_replica(CreateReplicaRequest {
                volume_id: self.volume.clone(),
                size_bytes: self.size,
            })
            .await
            .map(|_| ())
            .map_err(|s| format!("CreateReplica on {}: {s}", self.topology.data_centers[i]))
    }

    async fn configure(&mut self, i: usize) -> Result<(), String> {
        let mut c = self.calls[i].clone();
        self.configure_with(&mut c, i).await
    }

    async fn configure_with(
        &self,
        client: &mut StorageClient<Channel>,
        i: usize,
    ) -> Result<(), String> {
        let group = self.group();
        client
            .configure_group(ConfigureGroupRequest {
                volume_id: self.volume.clone(),
                group: Some(group),
            })
            .await
            .map(|_| ())
            .map_err(|s| format!("ConfigureGroup on {}: {s}", self.topology.data_centers[i]))
    }

    async fn observe(&self) -> Vec<Obs> {
        let calls = self.calls.iter().map(|c| {
            let mut c = c.clone();
            let volume = self.volume.clone();
            async move {
                c.get_replica(GetReplicaRequest { volume_id: volume })
                    .await
                    .map(tonic::Response::into_inner)
            }
        });
        futures::future::join_all(calls).await
    }

    fn publish(
        &mut self,
        kind: ChangeKind,
        to: usize,
        epoch: u64,
        asked: Duration,
        promoted: Duration,
        snapshot: Option<Snapshot>,
    ) {
        let from = Reign {
            node: self.primary,
            epoch: self.epoch,
        };
        self.primary = to;
        self.epoch = epoch;
        self.lost_since = None;
        self.last_primary = None;
        self.note(format!(
            "{kind:?}: primary {} at epoch {epoch} (was {} at {})",
            self.topology.data_centers[to], self.topology.data_centers[from.node], from.epoch
        ));
        self.changes.push(Change {
            kind,
            from,
            to: Reign { node: to, epoch },
            asked,
            promoted,
            snapshot,
        });
        let _ = self.target.send(Reign { node: to, epoch });
    }

    /// One pass of the operator's loop. Returns what every member reported.
    pub async fn reconcile(&mut self, failover: bool) -> Vec<Obs> {
        let obs = self.observe().await;
        // A primary at a newer epoch than recorded: a transfer went through
        // although its answer was lost. Record it.
        let newer = obs
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.as_ref().ok().map(|s| (i, s)))
            .filter(|(_, s)| s.role == Role::Primary as i32 && s.epoch > self.epoch)
            .max_by_key(|(_, s)| s.epoch)
            .map(|(i, s)| (i, s.epoch));
        if let Some((i, epoch)) = newer {
            self.directory
                .record_primary(epoch, &self.topology.data_centers[i]);
            let snapshot = read_snapshot(&mut self.host[i].clone(), &self.volume)
                .await
                .ok();
            let asked = self.now();
            self.publish(ChangeKind::Adopted, i, epoch, asked, asked, snapshot);
            return obs;
        }
        let p = self.primary;
        match &obs[p] {
            // A primary that stays fenced (a hand-over that failed after the
            // directory moved on) takes no writes: as good as lost.
            Ok(s) if s.role == Role::Primary as i32 && s.epoch == self.epoch && !s.fenced => {
                self.lost_since = None;
                self.last_primary = Some(s.clone());
            }
            _ => {
                self.lost_since.get_or_insert_with(Instant::now);
            }
        }
        if failover && self.lost_since.is_some_and(|t| t.elapsed() >= GRACE) {
            self.failover(&obs).await;
            return obs;
        }
        for (j, o) in obs.iter().enumerate() {
            if j == p {
                continue;
            }
            let needs = match o {
                Ok(s) => {
                    s.epoch < self.epoch
                        || s.role != Role::Secondary as i32
                        || s.group.as_ref().is_none_or(|g| g.epoch != self.epoch)
                }
                Err(status) if status.code() == tonic::Code::NotFound => {
                    if let Err(e) = self.create_on(j).await {
                        self.note(e);
                        continue;
                    }
                    self.note(format!(
                        "created the missing replica on {}",
                        self.topology.data_centers[j]
                    ));
                    true
                }
                Err(_) => false,
            };
            if needs && let Err(e) = self.configure(j).await {
                self.note(e);
            }
        }
        obs
    }

    /// Forced promotion of the most up-to-date reachable member of the
    /// recorded in-sync set, once every lease of another member ran out.
    pub async fn failover(&mut self, obs: &[Obs]) -> bool {
        let p = self.primary;
        let out_of_sync = self.directory.out_of_sync();
        let candidate = obs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != p)
            .filter(|(j, _)| !out_of_sync.contains(&self.topology.data_centers[*j]))
            .filter_map(|(j, o)| o.as_ref().ok().map(|s| (j, s)))
            .filter(|(_, s)| s.role != Role::None as i32)
            .max_by(|(a, sa), (b, sb)| sa.durable_seq.cmp(&sb.durable_seq).then(b.cmp(a)))
            .map(|(j, _)| j);
        let Some(j) = candidate else {
            return false;
        };
        let held = obs
            .iter()
            .filter_map(|o| o.as_ref().ok().map(|s| s.epoch))
            .max()
            .unwrap_or(0);
        let epoch = self.epoch.max(held).max(self.directory.epoch()) + 1;
        let dc = self.topology.data_centers[j].clone();
        let reported_applied = self.last_primary.as_ref().and_then(|s| {
            s.members
                .iter()
                .find(|m| m.data_center == self.topology.data_centers[j])
                .map(|m| m.applied_seq)
        });
        let asked = self.now();
        // Intent first: from here on the directory grants no lease at an
        // older epoch; the old primary's last one runs out by `until`.
        let until = match self.directory.begin_failover(&dc, epoch) {
            Ok(until) => until,
            Err(e) => {
                self.note(format!("failover to {dc} at {epoch}: {e}"));
                return false;
            }
        };
        let waited = until.saturating_duration_since(Instant::now());
        tokio::time::sleep_until(until.into()).await;
        // Async: what the promotion may lose is what the old primary wrote
        // past the candidate's position it last reported.
        let possible_loss = match (&self.last_primary, reported_applied) {
            (Some(s), Some(applied)) => format!("{} writes", s.written_seq.saturating_sub(applied)),
            _ => "unknown (no status of the old primary)".to_string(),
        };
        self.note(format!(
            "failover to {dc} at {epoch}: waited {} ms for the old lease to run out; possible loss {possible_loss}",
            waited.as_millis()
        ));
        let promoted_at = self.now();
        let promoted = self.changes_client[j]
            .promote(PromoteRequest {
                volume_id: self.volume.clone(),
                new_epoch: epoch,
            })
            .await;
        if let Err(s) = promoted {
            self.note(format!(
                "Promote {} at {epoch}: {s}",
                self.topology.data_centers[j]
            ));
            return false;
        }
        let snapshot = read_snapshot(&mut self.host[j].clone(), &self.volume)
            .await
            .ok();
        self.publish(
            ChangeKind::Failover { reported_applied },
            j,
            epoch,
            asked,
            promoted_at,
            snapshot,
        );
        for (k, o) in obs.iter().enumerate() {
            if k != j && o.is_ok() {
                let _ = self.configure(k).await;
            }
        }
        true
    }

    /// Failover now, as after a grace period that ran out (the operator lost
    /// sight of a primary that still runs).
    pub async fn force_failover(&mut self) -> bool {
        let obs = self.observe().await;
        self.failover(&obs).await
    }

    /// Planned change of primary to `to`.
    pub async fn transfer(&mut self, to: usize) -> Result<(), String> {
        let epoch = self.epoch + 1;
        let asked = self.now();
        let p = self.primary;
        // Intent first: a restarted old primary, its fence forgotten, gets
        // no lease at the old epoch, whatever became of the hand-over.
        if let Err(e) = self
            .directory
            .begin_transfer(&self.topology.data_centers[to], epoch)
        {
            let e = format!("TransferPrimary to {}: {e}", self.topology.data_centers[to]);
            self.note(e.clone());
            return Err(e);
        }
        let reply = self.changes_client[p]
            .transfer_primary(TransferPrimaryRequest {
                volume_id: self.volume.clone(),
                target: self.topology.data_centers[to].clone(),
                new_epoch: epoch,
            })
            .await;
        match reply {
            Ok(_) => {
                let snapshot = read_snapshot(&mut self.host[to].clone(), &self.volume)
                    .await
                    .ok();
                self.publish(ChangeKind::Transfer, to, epoch, asked, asked, snapshot);
                Ok(())
            }
            Err(s) => {
                let e = format!(
                    "TransferPrimary to {} at {epoch}: {s}",
                    self.topology.data_centers[to]
                );
                self.note(e.clone());
                Err(e)
            }
        }
    }

    /// Reconciles until the primary reports every member in sync at its own
    /// position (or `within` passes). Returns the primary's status then.
    pub async fn settle(&mut self, within: Duration) -> Result<ReplicaStatus, String> {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            let obs = self.reconcile(true).await;
            if let Ok(s) = &obs[self.primary]
                && s.role == Role::Primary as i32
                && s.epoch == self.epoch
            {
                let others_at_epoch = obs
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != self.primary)
                    .all(|(_, o)| o.as_ref().is_ok_and(|m| m.epoch == self.epoch));
                let in_sync = s.members.len() + 1 == self.topology.len()
                    && s.members.iter().all(|m| {
                        m.state == roam_proto::storage::MemberState::InSync as i32
                            && m.applied_seq == s.written_seq
                    });
                if others_at_epoch && in_sync {
                    return Ok(s.clone());
                }
                last = format!("{:?}", s.members);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("not in sync after {within:?}: {last}"))
    }
}
