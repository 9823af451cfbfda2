//! Property tests against a model (proptest).
//!
//! A failing case prints the minimal input that fails, and proptest stores its
//! seed in `tests/properties.regressions` beside this file; the next run
//! replays it first. Commit that file to keep the case. More cases:
//! `PROPTEST_CASES=500 cargo test -p roam-engine --test properties`.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use roam_engine::backend::ReplicaDir;
use roam_engine::transport::local::LocalTransport;
use roam_engine::transport::{PeerMessage, PeerRequest};
use roam_engine::{
    EngineConfig, FailurePolicy, GroupSpec, MemberSpec, Role, TransferType, Volume, WriteRecord,
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
    /// Restart the secondary.
    Crash,
}

fn delivery(n: u64) -> impl Strategy<Value = Delivery> {
    prop_oneof![
        8 => (1..=n, 1..4u64).prop_map(|(first, count)| Delivery::Batch { first, count }),
        1 => Just(Delivery::Crash),
    ]
}

async fn open_secondary(net: &LocalTransport, dir: &ReplicaDir, config: &EngineConfig) -> Volume {
    Volume::open(
        VOL,
        dir.files().unwrap(),
        Arc::new(net.clone()),
        config.clone(),
    )
    .await
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    /// Reordered, duplicated and gapped delivery, with restarts: the secondary
    /// applies each write exactly once, in order; a refused batch changes nothing.
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
            let root = tempfile::tempdir().unwrap();
            let dir = ReplicaDir::new(root.path(), VOL);
            dir.create_replica(VOL, "b", SIZE).unwrap();
            let net = LocalTransport::default();
            let config = EngineConfig { checkpoint_bytes: if checkpoint_small { 8192 } else { 64 << 20 }, ..fast_config() };
            let mut v = open_secondary(&net, &dir, &config).await;
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
                        v.close().await;
                        v = open_secondary(&net, &dir, &config).await;
                        prop_assert_eq!(v.role(), Role::Secondary);
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
    Write { offset: u64, len: usize, seed: u64 },
    CrashPrimary,
    CrashSecondary,
    Partition,
    Heal,
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0..SIZE - 70_000, 1..70_000usize, any::<u64>()).prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        1 => Just(Op::CrashPrimary),
        1 => Just(Op::CrashSecondary),
        1 => Just(Op::Partition),
        1 => Just(Op::Heal),
        1 => Just(Op::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 12,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    /// Random writes, crashes of either replica and partitions: every
    /// acknowledged write reads back from the primary at once, and from every
    /// replica once the group is whole again.
    #[test]
    fn every_acknowledged_write_survives_crashes_and_partitions(
        ops in prop::collection::vec(op(), 1..30),
        sync in any::<bool>(),
    ) {
        let rt = runtime();
        rt.block_on(async {
            let config = EngineConfig { checkpoint_bytes: 200_000, ..fast_config() };
            let mut c = Cluster::new(&["a", "b"], SIZE, config).await;
            let transfer = if sync { TransferType::Sync } else { TransferType::Async };
            c.configure(&c.group("a", 1, transfer, FailurePolicy::Degrade)).await;
            let mut model = vec![0u8; SIZE as usize];
            for op in ops {
                match op {
                    Op::Write { offset, len, seed } => {
                        let data: Bytes = pattern(seed, len);
                        c.v("a").write(offset, data.clone(), false).await.expect("write");
                        model[offset as usize..offset as usize + len].copy_from_slice(&data);
                    }
                    Op::CrashPrimary => { c.crash("a").await; c.open("a").await; }
                    Op::CrashSecondary => { c.crash("b").await; c.open("b").await; }
                    Op::Partition => c.net.set_down("b", true),
                    Op::Heal => c.net.set_down("b", false),
                    Op::Flush => { c.v("a").flush().await.expect("flush"); }
                }
                let got = c.v("a").read(0, SIZE).await.unwrap();
                prop_assert!(got[..] == model[..], "primary lost an acknowledged write");
            }
            c.net.set_down("b", false);
            c.wait_in_sync("a").await;
            c.assert_all_hold(&model).await;
            for v in c.vols.values() { v.close().await; }
            Ok(())
        })?;
    }
}
