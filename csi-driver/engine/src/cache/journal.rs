//! The persistent journal: every write is written here before it is
//! acknowledged, so an acknowledged write survives a crash of the process;
//! a flush waits until the journal is synced, so a flushed write also
//! survives a crash of the machine. These are a disk's semantics with a
//! volatile write cache, which filesystems are built for: ext4 and xfs flush
//! (or write with FUA) wherever they need a write to be on stable storage.
//!
//! Expected flow: [`Journal::append`] writes the encoded record into the
//! file (the page cache) under a lock and wakes the commit thread; the thread
//! calls `sync` once for everything written since the last one (group
//! commit: concurrent writes share one fdatasync), then publishes the durable
//! sequence number on a watch channel that flushes await
//! ([`Journal::wait_durable`]). The thread syncs as soon as there is anything
//! to sync, so writes never wait for it and a flush right after a write finds
//! its sync already under way.
//!
//! Record format (little endian): magic `u32`, payload length `u32`, seq, epoch,
//! offset (`u64` each), crc32c `u32` (see [`crate::types::record_crc_in`]),
//! incarnation `u64`, payload.
//! Replay ([`decode_all`]) stops at the first record that is torn or fails its
//! checksum: such a record was never acknowledged.
//!
//! The file is written over, not appended to, in the steady state: the commit
//! thread extends it with zeros in [`GROW_BYTES`] steps ahead of the records,
//! and [`Journal::reset`] (after a checkpoint) starts again at offset 0
//! without shrinking the file. An fdatasync of blocks that are already
//! allocated and written needs no filesystem metadata commit, which roughly
//! doubles the rate of small synced writes compared with appending to a
//! growing file. What lies past the newest record is zeros or records of an
//! older generation: replay stops at the zeros (bad magic), at a torn or
//! corrupt record, and the caller stops at the first record that does not
//! continue the sequence (seq + 1, term not lower), which every record of
//! an older generation fails. A reset zeroes the first header (and syncs)
//! before anything new is written, so an empty journal replays as empty.
//!
//! Caveat: [`Journal::reset`] waits for the commit thread to be idle;
//! callers hold off new appends meanwhile.

use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use crate::backend::Backend;
use crate::error::{EngineError, Result};
use crate::types::WriteRecord;

const MAGIC: u32 = 0x524f_414d; // "ROAM"
const HEADER: usize = 4 + 4 + 8 + 8 + 8 + 4 + 8;
/// How far ahead of the newest record the file is extended with zeros.
pub const GROW_BYTES: u64 = 4 << 20;

/// Encode one record in journal format, appending to `out`.
pub fn encode(rec: &WriteRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&(rec.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&rec.seq.to_le_bytes());
    out.extend_from_slice(&rec.epoch.to_le_bytes());
    out.extend_from_slice(&rec.offset.to_le_bytes());
    out.extend_from_slice(&rec.crc.to_le_bytes());
    out.extend_from_slice(&rec.incarnation.to_le_bytes());
    out.extend_from_slice(&rec.data);
}

/// Decode records from the start of `buf` up to the first invalid one, or
/// the first that does not continue the sequence (seq + 1, term not lower).
/// Returns the records and the number of bytes they occupy.
pub fn decode_all(buf: &Bytes) -> (Vec<WriteRecord>, usize) {
    let mut out: Vec<WriteRecord> = Vec::new();
    let mut pos = 0usize;
    while buf.len() - pos >= HEADER {
        let h = &buf[pos..pos + HEADER];
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i..i + 8]);
            u64::from_le_bytes(b)
        };
        if u32_at(0) != MAGIC {
            break;
        }
        let len = u32_at(4) as usize;
        let (seq, epoch, offset, crc) = (u64_at(8), u64_at(16), u64_at(24), u32_at(32));
        let incarnation = u64_at(36);
        if buf.len() - pos - HEADER < len {
            break;
        }
        let data = buf.slice(pos + HEADER..pos + HEADER + len);
        let rec = WriteRecord {
            seq,
            epoch,
            incarnation,
            offset,
            data,
            crc,
        };
        if !rec.crc_ok() {
            break;
        }
        // A record that does not continue the one before it belongs to an
        // older generation of the reused file.
        if let Some(prev) = out.last()
            && (rec.seq != prev.seq + 1 || rec.term() < prev.term())
        {
            break;
        }
        out.push(rec);
        pos += HEADER + len;
    }
    (out, pos)
}

/// Durable position published by the commit thread.
#[derive(Debug, Clone, Default)]
pub struct Durable {
    pub seq: u64,
    /// Set once a write or sync failed (OS error number, message); the
    /// journal accepts nothing more until the replica is opened again.
    pub failed: Option<(Option<i32>, String)>,
}

/// What appends and the commit thread share.
struct Written {
    /// Newest record in the file (in the page cache, maybe not yet synced).
    last_seq: u64,
    /// Bytes of records written to the file so far (the write position).
    file_len: u64,
    /// Bytes the file holds (written records and zeros past them).
    allocated: u64,
    /// The commit thread is in an fdatasync.
    syncing: bool,
    shutdown: bool,
}

struct Shared {
    written: Mutex<Written>,
    wake: Condvar,
    idle: Condvar,
    durable_tx: watch::Sender<Durable>,
}

pub struct Journal {
    volume: String,
    file: Arc<dyn Backend>,
    shared: Arc<Shared>,
    durable: watch::Receiver<Durable>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Journal {
    /// Read what the journal holds, then start the commit thread. Records past
    /// the first invalid one are cut off.
    pub fn open(volume: &str, file: Arc<dyn Backend>) -> Result<(Self, Vec<WriteRecord>)> {
        let size = file
            .size()
            .map_err(|e| EngineError::journal(volume, "size", e))?;
        let mut raw = vec![0u8; size as usize];
        file.read_at(0, &mut raw)
            .map_err(|e| EngineError::journal(volume, "read", e))?;
        let (records, valid) = decode_all(&Bytes::from(raw));
        if (valid as u64) < size {
            file.resize(valid as u64)
                .map_err(|e| EngineError::journal(volume, "truncate", e))?;
        }
        let last_seq = records.last().map(|r| r.seq).unwrap_or(0);
        let (tx, rx) = watch::channel(Durable {
            seq: last_seq,
            failed: None,
        });
        let shared = Arc::new(Shared {
            written: Mutex::new(Written {
                last_seq,
                file_len: valid as u64,
                allocated: valid as u64,
                syncing: false,
                shutdown: false,
            }),
            wake: Condvar::new(),
            idle: Condvar::new(),
            durable_tx: tx,
        });
        let thread_shared = shared.clone();
        let thread_file = file.clone();
        let name = volume.to_string();
        let thread = std::thread::Builder::new()
            .name("roam-journal".into())
            .spawn(move || commit_loop(&name, &thread_shared, thread_file.as_ref()))
            .map_err(|e| EngineError::journal(volume, "spawn commit thread", e))?;
        let journal = Self {
            volume: volume.to_string(),
            file,
            shared,
            durable: rx,
            thread: Mutex::new(Some(thread)),
        };
        Ok((journal, records))
    }

    /// Write a record to the file (the page cache: it survives a crash of
    /// this process from here on) and wake the commit thread, which makes it
    /// durable with the next fdatasync. Records must be appended in sequence
    /// order. A failed write stops the journal: this and every later append
    /// and wait fail until the replica is opened again.
    pub fn append(&self, rec: &WriteRecord) -> Result<()> {
        let mut buf = Vec::with_capacity(HEADER + rec.data.len());
        encode(rec, &mut buf);
        let mut w = lock(&self.shared.written);
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let at = w.file_len;
        let end = at + buf.len() as u64;
        let result = extend_with_zeros(self.file.as_ref(), w.allocated, end)
            .and_then(|grown| self.file.write_at(at, &buf).map(|()| grown));
        match result {
            Ok(grown) => {
                w.allocated = grown;
                w.file_len = end;
                w.last_seq = rec.seq;
                self.shared.wake.notify_one();
                Ok(())
            }
            Err(e) => {
                stop(&self.volume, &self.shared, &mut w, &e);
                Err(EngineError::journal(&self.volume, "write", e))
            }
        }
    }

    /// The error that stopped the journal, if one did.
    /// The durable position as the commit thread publishes it.
    pub fn watch_durable(&self) -> watch::Receiver<Durable> {
        self.durable.clone()
    }

    pub(crate) fn failure(&self) -> Option<EngineError> {
        let d = self.durable.borrow();
        let (errno, reason) = d.failed.as_ref()?;
        let source = match errno {
            Some(n) => std::io::Error::from_raw_os_error(*n),
            None => std::io::Error::other(reason.clone()),
        };
        Some(EngineError::journal(&self.volume, "commit", source))
    }

    /// Wait until `seq` is durable (synced to the disk). Cancellation safe.
    pub async fn wait_durable(&self, seq: u64) -> Result<()> {
        let mut rx = self.durable.clone();
        let reached = rx
            .wait_for(|d| d.seq >= seq || d.failed.is_some())
            .await
            .map_err(|_| EngineError::Closed {
                volume: self.volume.clone(),
            })?
            .seq
            >= seq;
        match self.failure() {
            Some(e) if !reached => Err(e),
            _ => Ok(()),
        }
    }

    pub fn durable_seq(&self) -> u64 {
        self.durable.borrow().seq
    }

    /// Declare everything up to `seq` durable without a record: after a
    /// region copy, the real volume (synced) holds it and the journal is empty.
    pub fn advance_to(&self, seq: u64) {
        let mut w = lock(&self.shared.written);
        if w.last_seq < seq {
            w.last_seq = seq;
        }
        self.shared
            .durable_tx
            .send_modify(|d| d.seq = d.seq.max(seq));
    }

    /// Set the position to exactly `seq`, lower or higher, when the journal
    /// is empty: after a region copy the real volume (synced) holds every
    /// write up to `seq` and nothing past it. The durable watermark moves
    /// with it; left higher, later appends below the old watermark would
    /// count as durable before any sync.
    pub fn rebase(&self, seq: u64) {
        let mut w = lock(&self.shared.written);
        debug_assert_eq!(w.file_len, 0, "rebase of a journal that holds records");
        w.last_seq = seq;
        self.shared.durable_tx.send_modify(|d| d.seq = seq);
    }

    /// Bytes of records in the journal file.
    pub fn len(&self) -> u64 {
        lock(&self.shared.written).file_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Blocking: wait for every written record to be durable, then empty the
    /// file. The caller guarantees nothing is appended meanwhile and that the
    /// real volume already holds (synced) every record.
    pub fn reset(&self) -> Result<()> {
        let mut w = lock(&self.shared.written);
        while (w.syncing || w.last_seq > self.durable_seq()) && self.failure().is_none() {
            w = self.shared.idle.wait(w).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(e) = self.failure() {
            return Err(e);
        }
        // Keep the file (its blocks stay allocated and written); make its
        // first record invalid so it replays as empty until overwritten.
        if w.allocated >= HEADER as u64 {
            self.file
                .write_at(0, &[0u8; HEADER])
                .and_then(|()| self.file.sync())
                .map_err(|e| EngineError::journal(&self.volume, "reset", e))?;
        }
        w.file_len = 0;
        Ok(())
    }
}

impl Journal {
    /// Sync what is written, stop the commit thread and wait for it.
    pub fn shutdown(&self) {
        lock(&self.shared.written).shutdown = true;
        self.shared.wake.notify_one();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        lock(&self.shared.written).shutdown = true;
        self.shared.wake.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Record a failed write or sync: waiters get the error, the thread stops.
fn stop(volume: &str, shared: &Shared, w: &mut Written, e: &std::io::Error) {
    tracing::error!(volume, error = %e, "journal write or sync failed; the journal stops");
    shared
        .durable_tx
        .send_modify(|d| d.failed = Some((e.raw_os_error(), e.to_string())));
    w.shutdown = true;
    shared.wake.notify_one();
    shared.idle.notify_all();
}

/// The commit thread: whenever records were written since the last sync, one
/// fdatasync covers all of them (group commit), then the durable sequence
/// number is published. It syncs eagerly rather than on request, so a flush
/// that follows a write finds the sync already under way.
fn commit_loop(volume: &str, shared: &Shared, file: &dyn Backend) {
    let tx = &shared.durable_tx;
    loop {
        let target = {
            let mut w = lock(&shared.written);
            loop {
                let failed = tx.borrow().failed.is_some();
                if w.last_seq > tx.borrow().seq && !failed {
                    break;
                }
                shared.idle.notify_all();
                if w.shutdown || failed {
                    return;
                }
                w = shared.wake.wait(w).unwrap_or_else(|e| e.into_inner());
            }
            w.syncing = true;
            w.last_seq
        };
        let result = file.sync();
        let mut w = lock(&shared.written);
        w.syncing = false;
        match result {
            Ok(()) => tx.send_modify(|d| d.seq = d.seq.max(target)),
            Err(e) => {
                stop(volume, shared, &mut w, &e);
                return;
            }
        }
    }
}

/// Writes zeros from `allocated` so that the file holds at least `end`
/// bytes plus [`GROW_BYTES`] of room when it is short of `end`; returns the
/// file's new length. The next sync makes them durable with the records.
fn extend_with_zeros(file: &dyn Backend, allocated: u64, end: u64) -> std::io::Result<u64> {
    if end <= allocated {
        return Ok(allocated);
    }
    let target = end + GROW_BYTES;
    let zeros = vec![0u8; (1 << 20) as usize];
    let mut at = allocated;
    while at < target {
        let n = (target - at).min(zeros.len() as u64) as usize;
        file.write_at(at, &zeros[..n])?;
        at += n as u64;
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, data: &[u8]) -> WriteRecord {
        WriteRecord::new(seq, 1, seq * 10, Bytes::copy_from_slice(data))
    }

    #[test]
    fn decode_stops_at_torn_or_corrupt_record() {
        let mut buf = Vec::new();
        encode(&rec(1, b"abc"), &mut buf);
        encode(&rec(2, b"defg"), &mut buf);
        let full = buf.len();
        encode(&rec(3, b"hij"), &mut buf);
        // Torn third record.
        let torn = Bytes::copy_from_slice(&buf[..buf.len() - 1]);
        let (recs, valid) = decode_all(&torn);
        assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(valid, full);
        // Corrupt payload of the second record.
        let mut bad = buf.clone();
        bad[HEADER + 3 + HEADER] ^= 0xff;
        let (recs, _) = decode_all(&Bytes::from(bad));
        assert_eq!(recs.len(), 1);
    }

    #[test]
    fn decode_stops_at_a_record_of_an_older_generation() {
        let mut buf = Vec::new();
        encode(&rec(11, b"new"), &mut buf);
        encode(&rec(12, b"new"), &mut buf);
        let new_end = buf.len();
        // Left over from before a reset: valid on its own, out of sequence.
        encode(&rec(3, b"old"), &mut buf);
        encode(&rec(4, b"old"), &mut buf);
        let (recs, valid) = decode_all(&Bytes::from(buf.clone()));
        assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![11, 12]);
        assert_eq!(valid, new_end);
        // Same next seq but a lower epoch (a diverged history) stops too.
        let mut buf = Vec::new();
        encode(
            &WriteRecord::new(5, 3, 0, Bytes::from_static(b"a")),
            &mut buf,
        );
        encode(
            &WriteRecord::new(6, 2, 0, Bytes::from_static(b"b")),
            &mut buf,
        );
        let (recs, _) = decode_all(&Bytes::from(buf));
        assert_eq!(recs.len(), 1);
    }

    #[tokio::test]
    async fn reset_reuses_the_file_and_replays_only_the_new_generation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal");
        let file: Arc<dyn Backend> =
            Arc::new(crate::backend::FileBackend::open(&path).expect("open journal file"));
        let (journal, replayed) = Journal::open("v", file.clone()).expect("open");
        assert!(replayed.is_empty());
        for seq in 1..=20 {
            journal
                .append(&rec(seq, &[seq as u8; 100]))
                .expect("append");
        }
        journal.wait_durable(20).await.expect("durable");
        let grown = file.size().expect("size");
        assert!(grown >= GROW_BYTES, "the file is extended ahead: {grown}");

        journal.reset().expect("reset");
        assert_eq!(file.size().expect("size"), grown, "reset keeps the file");
        // Written over the start of the older generation, in place.
        for seq in 21..=23 {
            journal
                .append(&rec(seq, &[seq as u8; 100]))
                .expect("append");
        }
        journal.wait_durable(23).await.expect("durable");
        assert_eq!(file.size().expect("size"), grown, "no growth on reuse");
        journal.shutdown();
        drop(journal);
        let (journal, replayed) = Journal::open("v", file.clone()).expect("reopen");
        assert_eq!(
            replayed.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![21, 22, 23],
            "records of the older generation past the new ones are not replayed"
        );
        assert_eq!(&replayed[0].data[..], &[21u8; 100][..]);

        journal.reset().expect("reset again");
        journal.shutdown();
        drop(journal);
        let (_journal, replayed) = Journal::open("v", file).expect("reopen after reset");
        assert!(replayed.is_empty(), "a reset journal replays as empty");
    }
}
