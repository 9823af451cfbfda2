//! Per-volume I/O counters for the storage system's metrics: host writes
//! and their bytes, flushes and the time they took. Counted where the
//! operation succeeded, with relaxed atomics (they are statistics, not
//! state: nothing is decided from them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub(crate) struct IoCounters {
    writes: AtomicU64,
    write_bytes: AtomicU64,
    flushes: AtomicU64,
    flush_micros: AtomicU64,
}

/// A copy of a volume's counters since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoSnapshot {
    /// Writes acknowledged on this replica as primary.
    pub writes: u64,
    pub write_bytes: u64,
    /// Flushes completed (durable here and on every in-sync Sync member).
    pub flushes: u64,
    /// Total time those flushes took, in microseconds.
    pub flush_micros: u64,
}

impl IoCounters {
    pub fn wrote(&self, bytes: u64) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.write_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn flushed(&self, took: Duration) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flush_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> IoSnapshot {
        IoSnapshot {
            writes: self.writes.load(Ordering::Relaxed),
            write_bytes: self.write_bytes.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            flush_micros: self.flush_micros.load(Ordering::Relaxed),
        }
    }
}
