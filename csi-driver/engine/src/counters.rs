//! Per-volume I/O counters for the storage system's metrics: host reads,
//! writes and flushes, their bytes, and a latency histogram of each. Counted
//! where the operation succeeded, with relaxed atomics (they are statistics,
//! not state: nothing is decided from them), so counting takes no lock on
//! the I/O path: an observation is three `fetch_add`s.
//!
//! A histogram's buckets are powers of two of microseconds
//! ([`LATENCY_BUCKETS_MICROS`]), from 16 µs (a read from the page cache) to
//! about 8.4 s (a Sync write waiting for a slow secondary); its count is the
//! sum of its buckets, so the count and the buckets of one snapshot always
//! agree even while writers go on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Exponent of the smallest bucket bound: 2^4 µs = 16 µs.
const FIRST_EXP: u32 = 4;
/// Buckets with a finite bound; one more counts everything above the last.
const FINITE_BUCKETS: usize = 20;

/// The histograms' upper bounds, microseconds: 16, 32, ..., 8_388_608.
pub const LATENCY_BUCKETS_MICROS: [u64; FINITE_BUCKETS] = {
    let mut b = [0u64; FINITE_BUCKETS];
    let mut i = 0;
    while i < FINITE_BUCKETS {
        b[i] = 1 << (FIRST_EXP + i as u32);
        i += 1;
    }
    b
};

/// A latency histogram with fixed bounds, updated without a lock.
#[derive(Debug, Default)]
struct Latency {
    /// Observations per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; FINITE_BUCKETS + 1],
    sum_micros: AtomicU64,
}

/// The bucket of an observation of `micros`: the first bound not below it.
fn bucket_of(micros: u64) -> usize {
    if micros <= LATENCY_BUCKETS_MICROS[0] {
        return 0;
    }
    // ceil(log2(micros)) - FIRST_EXP, capped at the overflow bucket.
    let exp = u64::BITS - (micros - 1).leading_zeros();
    ((exp - FIRST_EXP) as usize).min(FINITE_BUCKETS)
}

impl Latency {
    fn observe(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LatencySnapshot {
        let mut buckets = [0u64; FINITE_BUCKETS + 1];
        for (to, from) in buckets.iter_mut().zip(&self.buckets) {
            *to = from.load(Ordering::Relaxed);
        }
        LatencySnapshot {
            buckets,
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

/// A copy of one latency histogram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Observations per bucket of [`LATENCY_BUCKETS_MICROS`], not
    /// cumulative; the last entry counts those above the last bound.
    pub buckets: [u64; FINITE_BUCKETS + 1],
    /// Total of every observation, microseconds.
    pub sum_micros: u64,
}

impl LatencySnapshot {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

#[derive(Debug, Default)]
pub(crate) struct IoCounters {
    read_bytes: AtomicU64,
    write_bytes: AtomicU64,
    reads: Latency,
    writes: Latency,
    flushes: Latency,
}

/// A copy of a volume's counters since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoSnapshot {
    /// Host reads served by this replica as primary.
    pub reads: LatencySnapshot,
    pub read_bytes: u64,
    /// Host writes acknowledged by this replica as primary (from the call
    /// to the acknowledgement: journal, and for Sync every in-sync member).
    pub writes: LatencySnapshot,
    pub write_bytes: u64,
    /// Flushes completed (durable here and on every in-sync Sync member).
    pub flushes: LatencySnapshot,
}

impl IoCounters {
    pub fn read(&self, bytes: u64, took: Duration) {
        self.reads.observe(took);
        self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn wrote(&self, bytes: u64, took: Duration) {
        self.writes.observe(took);
        self.write_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn flushed(&self, took: Duration) {
        self.flushes.observe(took);
    }

    pub fn snapshot(&self) -> IoSnapshot {
        IoSnapshot {
            reads: self.reads.snapshot(),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            writes: self.writes.snapshot(),
            write_bytes: self.write_bytes.load(Ordering::Relaxed),
            flushes: self.flushes.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_observation_lands_in_the_first_bucket_whose_bound_holds_it() {
        for (micros, bucket) in [
            (0, 0),
            (1, 0),
            (16, 0),
            (17, 1),
            (32, 1),
            (33, 2),
            (1000, 6), // 1024 µs
            (8_388_608, FINITE_BUCKETS - 1),
            (8_388_609, FINITE_BUCKETS),
            (u64::MAX, FINITE_BUCKETS),
        ] {
            assert_eq!(bucket_of(micros), bucket, "{micros} µs");
            assert!(
                bucket == FINITE_BUCKETS || micros <= LATENCY_BUCKETS_MICROS[bucket],
                "{micros} µs above its bound"
            );
            assert!(
                bucket == 0 || micros > LATENCY_BUCKETS_MICROS[bucket - 1],
                "{micros} µs belongs to an earlier bucket"
            );
        }
    }

    #[test]
    fn snapshots_count_what_was_observed() {
        let c = IoCounters::default();
        c.read(4096, Duration::from_micros(20));
        c.wrote(512, Duration::from_millis(3));
        c.wrote(512, Duration::from_secs(20));
        c.flushed(Duration::from_micros(5));
        let s = c.snapshot();
        assert_eq!((s.reads.count(), s.read_bytes), (1, 4096));
        assert_eq!(s.reads.buckets[1], 1);
        assert_eq!((s.writes.count(), s.write_bytes), (2, 1024));
        assert_eq!(s.writes.buckets[FINITE_BUCKETS], 1);
        assert_eq!(s.writes.sum_micros, 20_003_000);
        assert_eq!((s.flushes.count(), s.flushes.buckets[0]), (1, 1));
    }
}
