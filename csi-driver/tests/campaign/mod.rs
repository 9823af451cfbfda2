//! The seeded fault campaign (`make faults`): trials of real faults against
//! storage systems run as separate processes, one per data center, each in
//! its network namespace; the campaign plays the operator through the
//! storage API; a workload writes checksummed blocks and keeps a history;
//! a checker judges the history and what every member holds against the
//! replication contract (docs/faults.md).
//!
//! Environment:
//! - `FAULT_TRIALS=N`: run trials with seeds `FAULT_FIRST_SEED..+N`
//!   (defaults 50 and 1).
//! - `FAULT_SEED=S`: run the one trial of seed S (a replay).
//! - `FAULT_PROFILE=short`: leave out the kinds listed in
//!   [`SHORT_RUN_EXCLUDED`] (the run in `make test`).
//! - `FAULT_KINDS=a,b`: only these kinds (names as printed).
//!
//! Every trial prints one line; the run ends with
//! `N trials, M faults, V violations`, then each violation with its seed and
//! the command that replays it, and fails if there was any.

mod checker;
mod faults;
pub mod lease;
mod operator;
mod rng;
mod workload;
mod world;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use roam_proto::storage::{FailurePolicy, MemberState, SyncLevel, TransferType};
use tokio::sync::{Mutex, watch};

use crate::support::directory::DirectoryRecord;
use faults::FaultKind;
use operator::{Operator, Replication};
use rng::Rng;
use workload::{Reign, Workload};
use world::World;

/// Kinds left out of the short run in `make test`, each because it still
/// finds violations (issue 9); `make faults` runs them all. Remove a kind
/// here once it passes, with a seed that replays it. Empty since the
/// storage systems hold a lease from the directory the campaign's operator
/// keeps: the seven kinds once listed (kill-primary 2070,
/// kill-during-transfer 2034, kill-during-resync 2023, partition-primary
/// 2008/2052/2100, partition-operator 2039, failover-mid-write 2096,
/// primary-restart-secondary-down 2076), all Async split brain, are
/// replayed by [`FINDING_SEEDS`].
pub const SHORT_RUN_EXCLUDED: &[FaultKind] = &[];

const VOLUME: &str = "campaign";
const VOLUME_BYTES: u64 = 8 << 20;
/// Each data directory: the volume, a journal that grows until its 64 MiB
/// checkpoint, and room to spare.
const DISK_BYTES: u64 = 96 << 20;
const NODES: u8 = 3;
/// A trial takes 5 to 40 s. One still running after this is stuck (a call
/// that never returned): it is stopped, its storage systems and network go
/// with it, and it counts as an error with its seed to replay, instead of
/// holding up the rest of the campaign.
const TRIAL_LIMIT: Duration = Duration::from_secs(300);
/// Salt of the random stream that picks a Sync trial's level.
const LEVEL_STREAM: u64 = 0x5359_4e43_4c56_4c00;

struct Outcome {
    seed: u64,
    label: String,
    faults: Vec<FaultKind>,
    violations: Vec<String>,
    error: Option<String>,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
    })
}

fn kinds_from_env() -> Vec<FaultKind> {
    let mut kinds: Vec<FaultKind> = match std::env::var("FAULT_KINDS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|n| {
                FaultKind::from_name(n.trim()).unwrap_or_else(|| {
                    let names: Vec<_> = faults::ALL.iter().map(|k| k.name()).collect();
                    panic!(
                        "FAULT_KINDS: unknown kind {n:?}; kinds: {}",
                        names.join(",")
                    )
                })
            })
            .collect(),
        _ => faults::ALL.to_vec(),
    };
    if std::env::var("FAULT_PROFILE").is_ok_and(|p| p == "short") {
        kinds.retain(|k| !SHORT_RUN_EXCLUDED.contains(k));
    }
    kinds
}

pub async fn run_from_env() {
    let kinds = kinds_from_env();
    let seeds: Vec<u64> = match env_u64("FAULT_SEED") {
        Some(s) => vec![s],
        None => {
            let first = env_u64("FAULT_FIRST_SEED").unwrap_or(1);
            let n = env_u64("FAULT_TRIALS").unwrap_or(50);
            (first..first + n).collect()
        }
    };
    run(seeds, kinds).await;
}

/// The seeds of the campaign's findings of issue 9, each replayed with every
/// kind (as they were found): split brain and lost writes in Async groups
/// before the directory's lease (see the list's history in docs/faults.md);
/// and 1637: a replica re-created after an interrupted region copy got only
/// that copy's regions and claimed InSync (about one run in four before the
/// fix: it depends on where the kill lands).
pub const FINDING_SEEDS: &[u64] = &[2070, 2034, 2023, 2008, 2052, 2100, 2039, 2096, 2076, 1637];

/// Replays [`FINDING_SEEDS`].
pub async fn run_findings() {
    run(FINDING_SEEDS.to_vec(), faults::ALL.to_vec()).await;
}

/// Runs one trial per seed with faults of `kinds`, prints the summary and
/// fails on any violation or trial error.
pub async fn run(seeds: Vec<u64>, kinds: Vec<FaultKind>) {
    let names: Vec<_> = kinds.iter().map(|k| k.name()).collect();
    let contiguous = seeds.windows(2).all(|w| w[1] == w[0] + 1);
    let listed = if contiguous {
        format!("{}..={}", seeds[0], seeds[seeds.len() - 1])
    } else {
        let each: Vec<_> = seeds.iter().map(u64::to_string).collect();
        each.join(",")
    };
    eprintln!(
        "fault campaign: {} trial(s), seeds {listed}, kinds {}",
        seeds.len(),
        names.join(",")
    );
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for seed in seeds {
        let kinds = kinds.clone();
        // A trial that panics (a storage system that never starts) is an
        // error of that trial, not the end of the campaign.
        let mut running = tokio::spawn(trial(seed, kinds));
        let failed = |error: String| Outcome {
            seed,
            label: String::new(),
            faults: Vec::new(),
            violations: Vec::new(),
            error: Some(error),
        };
        let outcome = match tokio::time::timeout(TRIAL_LIMIT, &mut running).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => failed(format!("trial panicked: {e}")),
            Err(_) => {
                // Dropping the trial's future drops its world: the storage
                // systems are killed and the namespaces removed.
                running.abort();
                let _ = running.await;
                failed(format!("trial did not finish within {TRIAL_LIMIT:?}"))
            }
        };
        eprintln!(
            "seed {:>5} {:<18} {:<60} {}",
            outcome.seed,
            outcome.label,
            outcome
                .faults
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(","),
            match (&outcome.error, outcome.violations.len()) {
                (Some(e), _) => format!("ERROR {e}"),
                (None, 0) => "ok".to_string(),
                (None, v) => format!("{v} VIOLATION(S)"),
            }
        );
        outcomes.push(outcome);
    }
    let faults: usize = outcomes.iter().map(|o| o.faults.len()).sum();
    let violations: usize = outcomes.iter().map(|o| o.violations.len()).sum();
    let errors: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_some()).collect();
    let mut per_kind: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for o in &outcomes {
        for k in &o.faults {
            let e = per_kind.entry(k.name()).or_default();
            e.0 += 1;
            if !o.violations.is_empty() {
                e.1 += 1;
            }
        }
    }
    eprintln!("faults per kind (trials with a violation):");
    for (k, (n, bad)) in &per_kind {
        eprintln!("  {k:<32} {n:>5} ({bad})");
    }
    eprintln!("{:.0} s in all", started.elapsed().as_secs_f64());
    println!(
        "{} trials, {faults} faults, {violations} violations",
        outcomes.len()
    );
    for o in &outcomes {
        for v in &o.violations {
            println!(
                "violation (seed {}, {} {}): {v}\n  replay: FAULT_SEED={} make faults",
                o.seed,
                o.label,
                o.faults
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(","),
                o.seed
            );
        }
    }
    for o in &errors {
        println!(
            "error (seed {}): {}\n  replay: FAULT_SEED={} make faults",
            o.seed,
            o.error.as_deref().unwrap_or_default(),
            o.seed
        );
    }
    assert!(
        violations == 0 && errors.is_empty(),
        "{violations} violation(s), {} trial error(s)",
        errors.len()
    );
}

async fn trial(seed: u64, kinds: Vec<FaultKind>) -> Outcome {
    let mut rng = Rng::new(seed);
    let transfer = *rng.pick(&[TransferType::Sync, TransferType::Async]);
    let policy = *rng.pick(&[FailurePolicy::Block, FailurePolicy::Degrade]);
    // From a stream of its own, so that a seed picks the same faults and
    // workload whatever the level: seeds recorded before the level existed
    // replay as they did.
    let level = if transfer == TransferType::Sync && Rng::new(seed ^ LEVEL_STREAM).chance(50) {
        SyncLevel::Flush
    } else {
        SyncLevel::Write
    };
    let label = format!(
        "{}/{}",
        match (transfer, level) {
            (TransferType::Async, _) => "async",
            (_, SyncLevel::Flush) => "sync-flush",
            _ => "sync",
        },
        if policy == FailurePolicy::Block {
            "block"
        } else {
            "degrade"
        }
    );
    let mut chosen = vec![*rng.pick(&kinds)];
    if rng.chance(30) {
        chosen.push(*rng.pick(&kinds));
    }
    let mut outcome = Outcome {
        seed,
        label,
        faults: chosen.clone(),
        violations: Vec::new(),
        error: None,
    };
    let replication = Replication {
        transfer,
        level,
        policy,
    };
    match run_trial(seed, &mut rng, replication, &chosen).await {
        Ok(v) => outcome.violations = v,
        Err(e) => outcome.error = Some(e),
    }
    outcome
}

/// The processes of a trial and its group, created and in sync; the
/// group starts with dc-0 primary at epoch 1 (as [`Operator::new`] has it),
/// and so does the directory's record.
pub(crate) async fn start_group(
    replication: Replication,
    base: Instant,
) -> Result<(World, Operator, watch::Receiver<Reign>, DirectoryRecord), String> {
    let record = DirectoryRecord::new(1, "dc-0");
    let world = World::start(NODES, DISK_BYTES, record.clone()).await;
    let (mut op, target) = Operator::new(
        &world.topology,
        VOLUME,
        VOLUME_BYTES,
        replication,
        base,
        record.clone(),
    );
    op.create().await?;
    op.settle(Duration::from_secs(20))
        .await
        .map_err(|e| format!("initial sync: {e}"))?;
    Ok((world, op, target, record))
}

async fn run_trial(
    seed: u64,
    rng: &mut Rng,
    replication: Replication,
    chosen: &[FaultKind],
) -> Result<Vec<String>, String> {
    let base = Instant::now();
    let (mut world, op, target, _record) = start_group(replication, base).await?;
    let setup = base.elapsed();
    let op = Arc::new(Mutex::new(op));
    let stop = Arc::new(AtomicBool::new(false));
    let looping = {
        let (op, stop) = (op.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                op.lock().await.reconcile(true).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let workload = Workload::start(&world.topology, VOLUME, target, seed, base);
    tokio::time::sleep(Duration::from_millis(rng.range(200, 600))).await;
    let mut done = Vec::new();
    for kind in chosen {
        let t = base.elapsed().as_secs_f64();
        let what = faults::inject(*kind, &mut world, &op, rng, VOLUME).await;
        done.push(format!("+{t:.3}s {}: {what}", kind.name()));
        tokio::time::sleep(Duration::from_millis(rng.range(200, 500))).await;
    }
    let history = workload.stop().await;
    stop.store(true, Ordering::Relaxed);
    let _ = looping.await;
    world.heal_all().await;
    let mut op = Arc::try_unwrap(op)
        .map_err(|_| "operator still shared".to_string())?
        .into_inner();
    let faulted = base.elapsed();
    let settled = op.settle(Duration::from_secs(25)).await;
    let settle = base.elapsed();

    // What every member holds now, and who claims to be in sync.
    let mut images = Vec::new();
    for i in 0..world.topology.len() {
        let mut c = world::channel(&world.topology.host[i], Duration::from_secs(10));
        images.push(checker::read_replica(&mut c, VOLUME, 0, VOLUME_BYTES).await);
    }
    let p = op.primary;
    let primary_status = match &settled {
        Ok(s) => Some(s.clone()),
        Err(_) => {
            let mut c = world::channel(&world.topology.host[p], Duration::from_secs(5));
            c.get_replica(roam_proto::storage::GetReplicaRequest {
                volume_id: VOLUME.into(),
            })
            .await
            .ok()
            .map(tonic::Response::into_inner)
        }
    };
    let mut violations = Vec::new();
    let mut finals = Vec::new();
    match &images[p] {
        Ok(img) => finals.push((p, checker::snapshot_of(img))),
        Err(e) => violations.push(format!("the final primary dc-{p} could not be read: {e}")),
    }
    if let (Some(status), Ok(primary_image)) = (&primary_status, &images[p]) {
        for m in &status.members {
            let Some(j) = world
                .topology
                .data_centers
                .iter()
                .position(|d| *d == m.data_center)
            else {
                continue;
            };
            if m.state != MemberState::InSync as i32 || m.applied_seq != status.written_seq {
                continue;
            }
            match &images[j] {
                Ok(img) => {
                    if let Some(d) = checker::first_difference(primary_image, img) {
                        violations.push(format!(
                            "{} is reported in sync at seq {} but differs from the primary: {d}",
                            m.data_center, m.applied_seq
                        ));
                    }
                    finals.push((j, checker::snapshot_of(img)));
                }
                Err(e) => violations.push(format!(
                    "{} (in sync) could not be read: {e}",
                    m.data_center
                )),
            }
        }
    }
    let judge = checker::Judge {
        history: &history,
        changes: &op.changes,
        async_group: replication.transfer == TransferType::Async,
        data_centers: &world.topology.data_centers,
        finals,
    };
    violations.extend(judge.run());
    let acked = history.acked_writes();
    if !violations.is_empty() || std::env::var("FAULT_VERBOSE").is_ok() {
        eprintln!(
            "--- seed {seed}: {acked} writes acknowledged, {} flushes; set up by {:.1}s, faults done by {:.1}s, settled by {:.1}s, judged by {:.1}s",
            history.flushes.len(),
            setup.as_secs_f64(),
            faulted.as_secs_f64(),
            settle.as_secs_f64(),
            base.elapsed().as_secs_f64()
        );
        for d in &done {
            eprintln!("  {d}");
        }
        for l in &op.log {
            eprintln!("  {l}");
        }
        if let Err(e) = &settled {
            eprintln!("  settle: {e}");
        }
        for v in &violations {
            eprintln!("  VIOLATION: {v}");
        }
    }
    if let Err(e) = settled {
        // Not a breach of the contract (it says nothing of liveness), but
        // said, so that a stuck group is seen.
        eprintln!("seed {seed}: the group did not settle: {e}");
    }
    drop(world);
    Ok(violations)
}
