//! The checksum-verifying writer: several tasks write self-describing 4 KiB
//! blocks to the primary through the storage API's host I/O, each task owning
//! its own blocks (so each block's generations are written in order), and
//! record every acknowledged write with its sequence number.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use roam_proto::storage::storage_client::StorageClient;
use roam_proto::storage::{ReadRequest, WriteRequest};
use tonic::transport::Channel;

use super::blocks::{self, AckLog, BLOCK};

pub struct WriteStream {
    pub log: Arc<Mutex<AckLog>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Option<tonic::Status>>>,
}

impl WriteStream {
    /// Starts `tasks` writers over blocks `0..blocks` of `volume` at `epoch`.
    pub fn start(
        client: StorageClient<Channel>,
        volume: &str,
        epoch: u64,
        blocks: u64,
        tasks: u64,
    ) -> Self {
        let log = Arc::new(Mutex::new(AckLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..tasks)
            .map(|t| {
                let (mut client, log, stop) = (client.clone(), log.clone(), stop.clone());
                let volume = volume.to_owned();
                tokio::spawn(async move {
                    let mine: Vec<u64> = (t..blocks).step_by(tasks as usize).collect();
                    let mut generation = vec![0u64; mine.len()];
                    let mut x = t.wrapping_mul(0x9e37_79b9) | 1;
                    while !stop.load(Ordering::Relaxed) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let k = (x % mine.len() as u64) as usize;
                        let offset = mine[k] * BLOCK as u64;
                        generation[k] += 1;
                        let g = generation[k];
                        log.lock().expect("log").sent(offset, g);
                        let request = WriteRequest {
                            volume_id: volume.clone(),
                            epoch,
                            offset,
                            data: blocks::encode(offset, g),
                            fua: false,
                        };
                        match client.write(request).await {
                            Ok(reply) => {
                                let seq = reply.into_inner().seq;
                                log.lock().expect("log").acked(offset, g, seq);
                            }
                            Err(status) => return Some(status),
                        }
                    }
                    None
                })
            })
            .collect();
        WriteStream {
            log,
            stop,
            tasks: handles,
        }
    }

    /// True once every writer task has ended (each stops at its first error).
    pub fn finished(&self) -> bool {
        self.tasks.iter().all(|t| t.is_finished())
    }

    pub fn acked(&self) -> usize {
        self.log.lock().expect("log").acked_writes()
    }

    /// Stops the writers; returns the log and the first error any of them hit.
    pub async fn stop(self) -> (AckLog, Option<tonic::Status>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut first = None;
        for task in self.tasks {
            if let Some(status) = task.await.expect("writer task") {
                first.get_or_insert(status);
            }
        }
        let log = Arc::try_unwrap(self.log)
            .unwrap_or_else(|_| panic!("writer tasks still hold the log"))
            .into_inner()
            .expect("log");
        (log, first)
    }
}

/// Reads every block the writer touched from `client` (the primary at
/// `epoch`) and checks it against the log: every write acknowledged with a
/// sequence number `<= seq_bound` must be there. Returns the blocks checked.
pub async fn verify(
    client: &mut StorageClient<Channel>,
    volume: &str,
    epoch: u64,
    log: &AckLog,
    seq_bound: u64,
) -> usize {
    let offsets = log.offsets();
    for offset in &offsets {
        let data = client
            .read(ReadRequest {
                volume_id: volume.into(),
                epoch,
                offset: *offset,
                length: BLOCK as u32,
            })
            .await
            .unwrap_or_else(|s| panic!("read block at {offset}: {s}"))
            .into_inner()
            .data;
        if let Err(e) = log.check(*offset, &data, seq_bound) {
            panic!("{e}");
        }
    }
    offsets.len()
}
