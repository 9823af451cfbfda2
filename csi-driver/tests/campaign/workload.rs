//! The workload: writers that send numbered, checksummed 4 KiB blocks
//! (`support::blocks`) to the primary the operator names, flush every few
//! writes, and keep a history of every write and flush: where it went, at
//! which epoch, when it was sent and when (if ever) it was acknowledged.
//!
//! Each writer owns its blocks, so a block's generations are written in
//! order. When the operator moves the primary, a straggler goes on writing
//! to the old one at its old epoch for a while, the way a host that has not
//! heard of the change would: any write the old primary still acknowledges
//! then shows up in the history.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roam_proto::storage::storage_client::StorageClient;
use roam_proto::storage::{FlushRequest, WriteRequest};
use tokio::sync::watch;
use tonic::transport::Channel;

use super::world::{Topology, channel};
use crate::support::blocks;

pub const BLOCK: u64 = blocks::BLOCK as u64;
/// Blocks the writers cover (`0..MAIN_BLOCKS`).
pub const MAIN_BLOCKS: u64 = 1024;
/// Blocks the stragglers cover: 8 sets of 32 from here.
pub const STRAGGLER_BASE: u64 = 1024;
pub const STRAGGLER_SET: u64 = 32;
pub const STRAGGLER_BLOCKS: u64 = 8 * STRAGGLER_SET;
const WRITERS: u64 = 3;
/// A flush after every this many writes of one writer; one write in
/// `FUA_EVERY` is a FUA write.
const FLUSH_EVERY: u64 = 12;
const FUA_EVERY: u64 = 37;
/// How long a straggler keeps writing to a primary that was replaced.
const STRAGGLE: Duration = Duration::from_millis(1500);
/// How long a host waits for one call (longer than a Block group waits for a
/// secondary, so that its refusal, not the timeout, answers).
const CALL_TIMEOUT: Duration = Duration::from_secs(4);

/// Who accepted a write: the storage system and the epoch the host wrote at.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Reign {
    pub node: usize,
    pub epoch: u64,
}

#[derive(Clone, Debug)]
pub struct WriteEv {
    pub block: u64,
    pub generation: u64,
    pub reign: Reign,
    pub fua: bool,
    pub sent: Duration,
    pub acked: Option<Duration>,
    pub seq: u64,
    pub straggler: bool,
}

#[derive(Clone, Debug)]
pub struct FlushEv {
    pub reign: Reign,
    pub sent: Duration,
    pub done: Option<Duration>,
}

#[derive(Default)]
pub struct History {
    pub writes: Vec<WriteEv>,
    pub flushes: Vec<FlushEv>,
    /// Highest generation ever sent, per block.
    pub max_sent: HashMap<u64, u64>,
}

impl History {
    fn sent(&mut self, ev: WriteEv) -> usize {
        let g = self.max_sent.entry(ev.block).or_default();
        *g = (*g).max(ev.generation);
        self.writes.push(ev);
        self.writes.len() - 1
    }

    pub fn acked_writes(&self) -> usize {
        self.writes.iter().filter(|w| w.acked.is_some()).count()
    }
}

struct Shared {
    history: Mutex<History>,
    stop: AtomicBool,
    base: Instant,
    clients: Vec<StorageClient<Channel>>,
    volume: String,
    /// Generations of the straggler blocks, shared by every straggler.
    straggler_gens: Mutex<Vec<u64>>,
}

impl Shared {
    fn now(&self) -> Duration {
        self.base.elapsed()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One write, recorded before it is sent and when it is answered.
    async fn write(
        &self,
        reign: Reign,
        block: u64,
        generation: u64,
        fua: bool,
        straggler: bool,
    ) -> bool {
        let offset = block * BLOCK;
        let at = self.lock().sent(WriteEv {
            block,
            generation,
            reign,
            fua,
            sent: self.now(),
            acked: None,
            seq: 0,
            straggler,
        });
        let mut client = self.clients[reign.node].clone();
        let reply = client
            .write(WriteRequest {
                volume_id: self.volume.clone(),
                epoch: reign.epoch,
                offset,
                data: blocks::encode(offset, generation),
                fua,
            })
            .await;
        match reply {
            Ok(r) => {
                let now = self.now();
                let mut h = self.lock();
                h.writes[at].acked = Some(now);
                h.writes[at].seq = r.into_inner().seq;
                true
            }
            Err(_) => false,
        }
    }

    async fn flush(&self, reign: Reign) -> bool {
        let sent = self.now();
        let mut client = self.clients[reign.node].clone();
        let ok = client
            .flush(FlushRequest {
                volume_id: self.volume.clone(),
                epoch: reign.epoch,
            })
            .await
            .is_ok();
        let done = ok.then(|| self.now());
        self.lock().flushes.push(FlushEv { reign, sent, done });
        ok
    }
}

pub struct Workload {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    pub fn start(
        topology: &Topology,
        volume: &str,
        target: watch::Receiver<Reign>,
        seed: u64,
        base: Instant,
    ) -> Workload {
        let shared = Arc::new(Shared {
            history: Mutex::new(History::default()),
            stop: AtomicBool::new(false),
            base,
            clients: topology
                .host
                .iter()
                .map(|e| channel(e, CALL_TIMEOUT))
                .collect(),
            volume: volume.to_owned(),
            straggler_gens: Mutex::new(vec![0; STRAGGLER_BLOCKS as usize]),
        });
        let mut tasks = Vec::new();
        for t in 0..WRITERS {
            let (shared, target) = (shared.clone(), target.clone());
            tasks.push(tokio::spawn(async move {
                writer(shared, target, t, seed).await;
            }));
        }
        let s = shared.clone();
        tasks.push(tokio::spawn(async move {
            stragglers(s, target).await;
        }));
        Workload { shared, tasks }
    }

    pub async fn stop(self) -> History {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        std::mem::take(&mut *self.shared.lock())
    }
}

async fn writer(shared: Arc<Shared>, target: watch::Receiver<Reign>, t: u64, seed: u64) {
    let mine: Vec<u64> = (t..MAIN_BLOCKS).step_by(WRITERS as usize).collect();
    let mut generation = vec![0u64; mine.len()];
    let mut x = (seed ^ t.wrapping_mul(0x9e37_79b9)) | 1;
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let reign = *target.borrow();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = (x % mine.len() as u64) as usize;
        generation[k] += 1;
        n += 1;
        let ok = shared
            .write(
                reign,
                mine[k],
                generation[k],
                n.is_multiple_of(FUA_EVERY),
                false,
            )
            .await;
        let ok = ok && (!n.is_multiple_of(FLUSH_EVERY) || shared.flush(reign).await);
        if !ok {
            // Refused or unanswered: ask the operator's view again shortly.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

/// Starts a straggler on the old primary each time the operator names a new one.
async fn stragglers(shared: Arc<Shared>, mut target: watch::Receiver<Reign>) {
    let mut current = *target.borrow_and_update();
    let mut count = 0u64;
    let mut running = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(50), target.changed()).await {
            Ok(Ok(())) => {
                let next = *target.borrow_and_update();
                if next != current {
                    let (s, old, set) = (shared.clone(), current, count % 8);
                    running.push(tokio::spawn(async move { straggle(s, old, set).await }));
                    count += 1;
                    current = next;
                }
            }
            Ok(Err(_)) => break,
            Err(_) => {}
        }
    }
    for r in running {
        let _ = r.await;
    }
}

async fn straggle(shared: Arc<Shared>, old: Reign, set: u64) {
    let until = Instant::now() + STRAGGLE;
    let mut i = 0u64;
    while Instant::now() < until && !shared.stop.load(Ordering::Relaxed) {
        let k = set * STRAGGLER_SET + i % STRAGGLER_SET;
        i += 1;
        let generation = {
            let mut gens = shared
                .straggler_gens
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            gens[k as usize] += 1;
            gens[k as usize]
        };
        let ok = shared
            .write(old, STRAGGLER_BASE + k, generation, false, true)
            .await
            && shared.flush(old).await;
        if !ok {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}
