//! Property tests against a model (proptest).
//!
//! A failing case prints the minimal input that fails, and proptest stores its
//! seed in `tests/properties.regressions` beside this file; the next run
//! replays it first. Commit that file to keep the case. More cases:
//! `PROPTEST_CASES=500 cargo test -p roam-engine --test properties`.
//!
//! Crashes here are real: replicas live on a simulated machine
//! ([`roam_engine::backend::sim`]) whose power cut drops every write not yet
//! synced and may tear the last one; a killed process keeps what it wrote
//! (the page cache) but nothing it had not written yet.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use roam_engine::backend::sim::SimMachine;
use roam_engine::transport::local::LocalTransport;
use roam_engine::transport::{PeerMessage, PeerRequest};
use roam_engine::{
    EngineConfig, FailurePolicy, GroupSpec, MemberSpec, Role, SyncLevel, TransferType, Volume,
    WriteRecord,
};

const SIZE: u64 = 1 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[derive(Debug, Clone)]
enum Delivery {
    /// Deliver records `first..first+count` (1-based) as one batch.
    Batch { first: u64, count: u64 },
    /// The secondary's machine loses power (unsynced writes dropped, the
    /// last one torn), then it restarts.
    Crash,
}

fn delivery(n: u64) -> impl Strategy<Value = Delivery> {
    prop_oneof![
        8 => (1..=n, 1..4u64).prop_map(|(first, count)| Delivery::Batch { first, count }),
        1 => Just(Delivery::Crash),
    ]
}

async fn open_secondary(net: &LocalTransport, sim: &SimMachine, config: &EngineConfig) -> Volume {
    Volume::open(VOL, sim.files(), Arc::new(net.clone()), config.clone())
        .await
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    /// Reordered, duplicated and gapped delivery, with power cuts: the
    /// secondary applies each write exactly once, in order; a refused batch
    /// changes nothing; a power cut keeps at least what was durable and loses
    /// only a tail of what was acknowledged.
    #[test]
    fn secondary_applies_in_order_exactly_once(
        writes in prop::collection::vec((0..SIZE - 4096, 1..4096usize), 1..24),
        schedule in prop::collection::vec(delivery(24), 1..60),
        checkpoint_small in any::<bool>(),
    ) {
        let rt = runtime();
        rt.block_on(async {
            let n = writes.len() as u64;
            let records: Vec<WriteRecord> = writes.iter().enumerate()
                .map(|(i, &(off, len))| WriteRecord::new(i as u64 + 1, 1, off, pattern(i as u64, len)))
                .collect();
            let sim = SimMachine::replica(VOL, "b", SIZE);
            let net = LocalTransport::default();
            let config = EngineConfig { checkpoint_bytes: if checkpoint_small { 8192 } else { 64 << 20 }, ..fast_config() };
            let mut v = open_secondary(&net, &sim, &config).await;
            let group = GroupSpec {
                members: vec![
                    MemberSpec { data_center: "a".into(), endpoint: "nowhere".into() },
                    MemberSpec { data_center: "b".into(), endpoint: "b".into() },
                ],
                primary: "a".into(), epoch: 1, ..Default::default()
            };
            v.configure(group).await.unwrap();
            let mut model = vec![0u8; SIZE as usize];
            let mut applied = 0u64;
            for d in schedule {
                match d {
                    Delivery::Crash => {
                        // An acknowledged batch is in the journal file; only
                        // what was durable is sure to outlive the power cut.
                        let durable = v.status().durable_seq;
                        sim.power_cut(Some(0.5));
                        v.close().await;
                        v = open_secondary(&net, &sim, &config).await;
                        prop_assert_eq!(v.role(), Role::Secondary);
                        let kept = v.status().written_seq;
                        prop_assert!(durable <= kept && kept <= applied, "reopened at {} with {} durable and {} acknowledged", kept, durable, applied);
                        applied = kept;
                        model.fill(0);
                        for r in &records[..applied as usize] {
                            model[r.offset as usize..r.end() as usize].copy_from_slice(&r.data);
                        }
                    }
                    Delivery::Batch { first, count } => {
                        if first > n { continue; }
                        let last = (first + count - 1).min(n);
                        let batch: Vec<WriteRecord> = records[first as usize - 1..last as usize].to_vec();
                        let req = PeerRequest { volume_id: VOL.into(), epoch: 1, msg: PeerMessage::Append { records: batch.clone() } };
                        let result = match v.begin_peer(req).await {
                            Ok(fut) => fut.await.map(|_| ()),
                            Err(e) => Err(e),
                        };
                        let should_accept = first == applied + 1;
                        prop_assert_eq!(result.is_ok(), should_accept, "batch {}..={} with applied {}: {:?}", first, last, applied, result);
                        if should_accept {
                            for r in &batch {
                                model[r.offset as usize..r.end() as usize].copy_from_slice(&r.data);
                            }
                            applied = last;
                        }
                    }
                }
                prop_assert_eq!(v.status().written_seq, applied);
            }
            let got = v.read(0, SIZE).await.unwrap();
            prop_assert!(got[..] == model[..], "secondary content differs from the in-order model");
            v.close().await;
            Ok(())
        })?;
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        offset: u64,
        len: usize,
        seed: u64,
    },
    Flush,
    /// Power cut of the primary's (true) or the secondary's machine; the
    /// last unsynced write lands torn at this fraction of its sectors.
    PowerCut {
        primary: bool,
        tear: Option<u8>,
    },
    /// kill -9 of the primary's or the secondary's process.
    Kill {
        primary: bool,
    },
    Partition,
    Heal,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0..SIZE - 70_000, 1..70_000usize, any::<u64>()).prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        3 => Just(Op::Flush),
        1 => (any::<bool>(), prop::option::of(0..=100u8)).prop_map(|(primary, tear)| Op::PowerCut { primary, tear }),
        1 => any::<bool>().prop_map(|primary| Op::Kill { primary }),
        1 => Just(Op::Partition),
        1 => Just(Op::Heal),
    ]
}

/// What the writer saw: every write in order, whether it was acknowledged,
/// and how many of them a completed flush covered.
#[derive(Default)]
struct History {
    writes: Vec<(u64, Bytes, bool)>,
    /// Acknowledged writes before this index were followed by a completed flush.
    flushed: usize,
}

impl History {
    /// Where `content` fails the contract: every acknowledged write before a
    /// completed flush is there, unless a later write (acknowledged or not)
    /// covers the same byte; bytes no flushed write covers hold zeros or any
    /// write that covered them.
    fn violation(&self, content: &[u8]) -> Option<String> {
        let mut owner: Vec<Option<usize>> = vec![None; content.len()];
        for (i, (off, data, acked)) in self.writes.iter().enumerate().take(self.flushed) {
            if *acked {
                let off = *off as usize;
                owner[off..off + data.len()].fill(Some(i));
            }
        }
        for (p, got) in content.iter().enumerate() {
            let (want, after) = match owner[p] {
                Some(i) => {
                    let (off, data, _) = &self.writes[i];
                    (data[p - *off as usize], i + 1)
                }
                None => (0, 0),
            };
            if *got == want {
                continue;
            }
            let later = self.writes[after..].iter().any(|(off, data, _)| {
                let off = *off as usize;
                p >= off && p < off + data.len() && data[p - off] == *got
            });
            if !later {
                return Some(format!(
                    "byte {p} is {got}, a flushed write left {want} (owner {:?})",
                    owner[p]
                ));
            }
        }
        None
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 12,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    /// Random writes and flushes, power cuts (torn writes included), kills
    /// and partitions of a Sync group of two data centers, at either sync
    /// level. Then every
    /// machine loses power at once: the primary and every member it counts
    /// in sync hold every write acknowledged before a completed flush, so
    /// the loss of either data center loses none of them; and once the group
    /// is whole again every member is byte-identical to the primary.
    #[test]
    fn flushed_writes_survive_power_cuts_and_the_loss_of_either_data_center(
        ops in prop::collection::vec(op(), 1..30),
        degrade in any::<bool>(),
        flush_level in any::<bool>(),
    ) {
        let rt = runtime();
        rt.block_on(async {
            let config = EngineConfig {
                checkpoint_bytes: 200_000,
                ack_timeout: std::time::Duration::from_millis(300),
                ..fast_config()
            };
            let mut c = Cluster::new_sim(&["a", "b"], SIZE, config).await;
            let policy = if degrade { FailurePolicy::Degrade } else { FailurePolicy::Block };
            let mut group = c.group("a", 1, TransferType::Sync, policy);
            if flush_level {
                group.sync_level = SyncLevel::Flush;
            }
            c.configure(&group).await;
            let mut h = History::default();
            for op in &ops {
                match op {
                    Op::Write { offset, len, seed } => {
                        let data: Bytes = pattern(*seed, *len);
                        let acked = c.v("a").write(*offset, data.clone(), false).await.is_ok();
                        h.writes.push((*offset, data, acked));
                    }
                    Op::Flush => {
                        if c.v("a").flush().await.is_ok() {
                            h.flushed = h.writes.len();
                        }
                    }
                    Op::PowerCut { primary, tear } => {
                        let dc = if *primary { "a" } else { "b" };
                        if *primary {
                            // A disk's contract: what was not flushed may be
                            // gone, and a later flush does not bring it back.
                            let flushed = h.flushed;
                            for w in &mut h.writes[flushed..] {
                                w.2 = false;
                            }
                        }
                        c.power_cut(dc, tear.map(|t| t as f64 / 100.0)).await;
                        c.open(dc).await;
                    }
                    Op::Kill { primary } => {
                        let dc = if *primary { "a" } else { "b" };
                        c.crash(dc).await;
                        c.open(dc).await;
                    }
                    Op::Partition => c.net.set_down("b", true),
                    Op::Heal => c.net.set_down("b", false),
                }
            }
            // Whom the primary counts in sync: a failover may promote them.
            let in_sync: Vec<String> = c.v("a").status().members.iter()
                .filter(|m| m.in_sync).map(|m| m.data_center.clone()).collect();
            for dc in ["a", "b"] {
                c.power_cut(dc, Some(0.5)).await;
            }
            for dc in ["a", "b"] {
                c.open(dc).await;
            }
            let mut holders = vec!["a".to_string()];
            holders.extend(in_sync);
            for dc in &holders {
                let got = c.v(dc).read(0, SIZE).await.unwrap();
                if let Some(v) = h.violation(&got) {
                    prop_assert!(false, "{} (counted in sync) lost a flushed write: {}", dc, v);
                }
            }
            c.net.set_down("b", false);
            c.wait_in_sync("a").await;
            let primary = c.v("a").read(0, SIZE).await.unwrap();
            if let Some(v) = h.violation(&primary) {
                prop_assert!(false, "the primary lost a flushed write after resync: {}", v);
            }
            prop_assert!(c.v("b").read(0, SIZE).await.unwrap() == primary, "b claims InSync but differs from the primary");
            for v in c.vols.values() { v.close().await; }
            Ok(())
        })?;
    }
}
