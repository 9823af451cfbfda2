//! The checker: reads what the members hold and judges the history against
//! the contract (docs/architecture.md, "The replication contract"):
//!
//! - Sync: a write acknowledged before a flush that completed (or a FUA
//!   write acknowledged) is durable. Every durable write is on each new
//!   primary the moment it takes over, and on the final primary and every
//!   member it reports in sync.
//! - Async: at a forced failover, what may be lost is at most what status
//!   reported: the new primary holds every write of the old primary up to
//!   the position the old primary last reported for it. Later writes of the
//!   old primary are exempt from then on.
//! - A planned change of primary loses nothing acknowledged before it was
//!   asked for.
//! - Never two primaries: two storage systems did not accept writes in
//!   overlapping periods (each accepted a write sent after the other had
//!   acknowledged one).
//! - InSync means identical: a member the primary reports in sync at its own
//!   position holds the primary's bytes, every one of them.
//!
//! A write counts as durable only through a flush to the same storage system
//! at the same epoch: a flush vouches for the writes its primary acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use roam_proto::storage::ReadRequest;
use roam_proto::storage::storage_client::StorageClient;
use tonic::transport::Channel;

use super::operator::{Change, ChangeKind};
use super::workload::{BLOCK, History, MAIN_BLOCKS, Reign, STRAGGLER_BASE, STRAGGLER_BLOCKS};
use crate::support::blocks;

/// What one member held at one moment, per block the workload writes:
/// the generation, or why the block is unreadable.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub generations: HashMap<u64, Result<u64, String>>,
}

/// The blocks the workload writes, as (first block, count) ranges.
const RANGES: [(u64, u64); 2] = [(0, MAIN_BLOCKS), (STRAGGLER_BASE, STRAGGLER_BLOCKS)];

/// Reads `len` bytes at `offset` of the replica, whatever its role.
pub async fn read_replica(
    client: &mut StorageClient<Channel>,
    volume: &str,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, String> {
    const CHUNK: u64 = 1 << 20;
    let mut out = Vec::with_capacity(len as usize);
    let mut at = offset;
    while at < offset + len {
        let n = CHUNK.min(offset + len - at);
        let data = client
            .read_replica(ReadRequest {
                volume_id: volume.into(),
                epoch: 0,
                offset: at,
                length: n as u32,
            })
            .await
            .map_err(|s| format!("ReadReplica at {at}: {s}"))?
            .into_inner()
            .data;
        if data.len() as u64 != n {
            return Err(format!(
                "ReadReplica at {at}: {} bytes, asked {n}",
                data.len()
            ));
        }
        out.extend_from_slice(&data);
        at += n;
    }
    Ok(out)
}

/// Decodes the workload's blocks out of a whole-volume image.
pub fn snapshot_of(image: &[u8]) -> Snapshot {
    let mut generations = HashMap::new();
    for (first, count) in RANGES {
        for b in first..first + count {
            let at = (b * BLOCK) as usize;
            let g = blocks::decode(b * BLOCK, &image[at..at + BLOCK as usize]);
            generations.insert(b, g);
        }
    }
    Snapshot { generations }
}

/// Reads the workload's blocks of a replica.
pub async fn read_snapshot(
    client: &mut StorageClient<Channel>,
    volume: &str,
) -> Result<Snapshot, String> {
    let mut generations = HashMap::new();
    for (first, count) in RANGES {
        let data = read_replica(client, volume, first * BLOCK, count * BLOCK).await?;
        for (k, chunk) in data.chunks(BLOCK as usize).enumerate() {
            let b = first + k as u64;
            generations.insert(b, blocks::decode(b * BLOCK, chunk));
        }
    }
    Ok(Snapshot { generations })
}

fn secs(d: Duration) -> String {
    format!("+{:.3}s", d.as_secs_f64())
}

/// When each acknowledged write became durable (a FUA write: when it was
/// acknowledged; otherwise when the first flush sent to its primary at its
/// epoch after its acknowledgement completed). None: never.
fn durable_at(h: &History) -> Vec<Option<Duration>> {
    let mut flushes: HashMap<Reign, Vec<(Duration, Duration)>> = HashMap::new();
    for f in &h.flushes {
        if let Some(done) = f.done {
            flushes.entry(f.reign).or_default().push((f.sent, done));
        }
    }
    h.writes
        .iter()
        .map(|w| {
            let acked = w.acked?;
            if w.fua {
                return Some(acked);
            }
            flushes
                .get(&w.reign)?
                .iter()
                .filter(|(sent, _)| *sent >= acked)
                .map(|(_, done)| *done)
                .min()
        })
        .collect()
}

/// The history and what the members held, judged. Returns the violations.
pub struct Judge<'a> {
    pub history: &'a History,
    pub changes: &'a [Change],
    pub async_group: bool,
    pub data_centers: &'a [String],
    /// What the final primary and each member it reports in sync hold.
    pub finals: Vec<(usize, Snapshot)>,
}

impl Judge<'_> {
    pub fn run(&self) -> Vec<String> {
        let h = self.history;
        let durable = durable_at(h);
        let mut must = vec![false; h.writes.len()];
        let mut exempt = vec![false; h.writes.len()];
        let mut violations = Vec::new();
        let mut changes: Vec<&Change> = self.changes.iter().collect();
        changes.sort_by_key(|c| c.asked);
        for c in changes {
            let t = c.asked;
            for (i, w) in h.writes.iter().enumerate() {
                let Some(acked) = w.acked else { continue };
                if acked > t {
                    continue;
                }
                match c.kind {
                    ChangeKind::Failover { reported_applied } if self.async_group => {
                        if w.reign == c.from {
                            if w.seq > reported_applied.unwrap_or(0) {
                                exempt[i] = true;
                            } else {
                                must[i] = true;
                            }
                        }
                    }
                    ChangeKind::Failover { .. } => {}
                    ChangeKind::Transfer | ChangeKind::Adopted => {
                        if w.reign == c.from {
                            must[i] = true;
                        }
                    }
                }
                if durable[i].is_some_and(|d| d <= t) {
                    must[i] = true;
                }
            }
            let what = format!(
                "{:?} from {}@{} to {}@{} asked at {}",
                c.kind,
                self.data_centers[c.from.node],
                c.from.epoch,
                self.data_centers[c.to.node],
                c.to.epoch,
                secs(t)
            );
            // A new primary killed by a fault before it could be read is
            // judged at the end only.
            if let Some(s) = &c.snapshot {
                self.holds(
                    s,
                    &must,
                    &exempt,
                    &durable,
                    &format!("new primary after {what}"),
                    &mut violations,
                );
            }
        }
        for (i, d) in durable.iter().enumerate() {
            if d.is_some() {
                must[i] = true;
            }
        }
        for (node, s) in &self.finals {
            self.holds(
                s,
                &must,
                &exempt,
                &durable,
                &format!("{} at the end", self.data_centers[*node]),
                &mut violations,
            );
            self.well_formed(
                s,
                &format!("{} at the end", self.data_centers[*node]),
                &mut violations,
            );
        }
        self.one_primary_at_a_time(&mut violations);
        violations
    }

    /// Every required write is held (the block's generation is the write's or later).
    fn holds(
        &self,
        s: &Snapshot,
        must: &[bool],
        exempt: &[bool],
        durable: &[Option<Duration>],
        whom: &str,
        out: &mut Vec<String>,
    ) {
        let mut need: BTreeMap<u64, usize> = BTreeMap::new();
        for (i, w) in self.history.writes.iter().enumerate() {
            if must[i] && !exempt[i] {
                let e = need.entry(w.block).or_insert(i);
                if self.history.writes[*e].generation < w.generation {
                    *e = i;
                }
            }
        }
        let mut lost = Vec::new();
        for (block, i) in need {
            let w = &self.history.writes[i];
            match s.generations.get(&block) {
                Some(Ok(g)) if *g >= w.generation => {}
                held => lost.push(format!(
                    "block {block} holds {held:?}, generation {} was acknowledged by {}@{} (seq {}{}) at {}{}",
                    w.generation,
                    self.data_centers[w.reign.node],
                    w.reign.epoch,
                    w.seq,
                    if w.straggler { ", a host that was not told of the change" } else { "" },
                    secs(w.acked.unwrap_or_default()),
                    match durable[i] {
                        Some(d) => format!(", durable at {}", secs(d)),
                        None => String::new(),
                    }
                )),
            }
        }
        if !lost.is_empty() {
            out.push(format!(
                "{whom}: {} acknowledged write(s) lost, first: {}",
                lost.len(),
                lost[0]
            ));
        }
    }

    /// No torn, misplaced or corrupt block, and nothing never sent.
    fn well_formed(&self, s: &Snapshot, whom: &str, out: &mut Vec<String>) {
        let mut bad = Vec::new();
        for (block, g) in &s.generations {
            let sent = self.history.max_sent.get(block).copied().unwrap_or(0);
            match g {
                Err(e) => bad.push(e.clone()),
                Ok(g) if *g > sent => bad.push(format!(
                    "block {block} holds generation {g}, never sent (max {sent})"
                )),
                Ok(_) => {}
            }
        }
        if !bad.is_empty() {
            bad.sort();
            out.push(format!(
                "{whom}: {} bad block(s), first: {}",
                bad.len(),
                bad[0]
            ));
        }
    }

    /// Two storage systems each accepted a write sent after the other had
    /// acknowledged one: their periods of accepting writes overlap.
    fn one_primary_at_a_time(&self, out: &mut Vec<String>) {
        // Per reign: the latest send and the earliest acknowledgement of
        // its acknowledged writes.
        let mut reigns: BTreeMap<Reign, (Duration, Duration)> = BTreeMap::new();
        for w in &self.history.writes {
            let Some(acked) = w.acked else { continue };
            let e = reigns.entry(w.reign).or_insert((w.sent, acked));
            e.0 = e.0.max(w.sent);
            e.1 = e.1.min(acked);
        }
        let list: Vec<_> = reigns.into_iter().collect();
        for (i, (a, (a_last_sent, a_first_ack))) in list.iter().enumerate() {
            for (b, (b_last_sent, b_first_ack)) in &list[i + 1..] {
                if a.node != b.node && a_last_sent > b_first_ack && b_last_sent > a_first_ack {
                    out.push(format!(
                        "two primaries: {}@{} acknowledged a write sent at {} after {}@{} had acknowledged one at {}, which acknowledged a write sent at {} after the first's at {}",
                        self.data_centers[a.node],
                        a.epoch,
                        secs(*a_last_sent),
                        self.data_centers[b.node],
                        b.epoch,
                        secs(*b_first_ack),
                        secs(*b_last_sent),
                        secs(*a_first_ack),
                    ));
                }
            }
        }
    }
}

/// The first block where two images differ, described.
pub fn first_difference(primary: &[u8], member: &[u8]) -> Option<String> {
    if primary.len() != member.len() {
        return Some(format!("sizes {} and {}", primary.len(), member.len()));
    }
    let differing = primary
        .chunks(BLOCK as usize)
        .zip(member.chunks(BLOCK as usize))
        .filter(|(a, b)| a != b)
        .count();
    let (k, (a, b)) = primary
        .chunks(BLOCK as usize)
        .zip(member.chunks(BLOCK as usize))
        .enumerate()
        .find(|(_, (a, b))| a != b)?;
    let off = k as u64 * BLOCK;
    Some(format!(
        "{differing} block(s) differ, first at offset {off}: primary {:?}, member {:?}",
        blocks::decode(off, a),
        blocks::decode(off, b)
    ))
}
