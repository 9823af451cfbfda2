//! The in-memory cache: writes the primary holds until every streaming
//! secondary has acknowledged them (claim 17: "wait for data in the cache ...
//! then free the cache"). Ordered by sequence number, contiguous.

use std::collections::VecDeque;
use std::time::Instant;

use crate::types::WriteRecord;

struct Entry {
    rec: WriteRecord,
    /// Bytes of all records up to and including this one since the cache began.
    cum_bytes: u64,
    at: Instant,
}

#[derive(Default)]
pub struct WriteCache {
    entries: VecDeque<Entry>,
    /// `cum_bytes` of the last popped record.
    popped_bytes: u64,
    total_bytes: u64,
}

impl WriteCache {
    pub fn push(&mut self, rec: WriteRecord) {
        self.total_bytes += rec.data.len() as u64;
        self.entries.push_back(Entry {
            rec,
            cum_bytes: self.total_bytes,
            at: Instant::now(),
        });
    }

    /// Sequence number of the oldest record held, if any.
    pub fn first_seq(&self) -> Option<u64> {
        self.entries.front().map(|e| e.rec.seq)
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.total_bytes - self.popped_bytes
    }

    fn index_of(&self, seq: u64) -> Option<usize> {
        let first = self.first_seq()?;
        let i = seq.checked_sub(first)? as usize;
        (i < self.entries.len()).then_some(i)
    }

    /// Records from `from_seq` on, up to `max_bytes` (at least one) and `max_count`.
    pub fn batch_from(&self, from_seq: u64, max_bytes: u64, max_count: usize) -> Vec<WriteRecord> {
        let Some(start) = self.index_of(from_seq) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for e in self.entries.range(start..) {
            if !out.is_empty()
                && (bytes + e.rec.data.len() as u64 > max_bytes || out.len() >= max_count)
            {
                break;
            }
            bytes += e.rec.data.len() as u64;
            out.push(e.rec.clone());
        }
        out
    }

    /// Every record after `seq`.
    pub fn after(&self, seq: u64) -> impl Iterator<Item = &WriteRecord> {
        let start = self.index_of(seq + 1).unwrap_or(self.entries.len());
        self.entries.range(start..).map(|e| &e.rec)
    }

    /// Bytes and age of what a member that acknowledged `acked` still lacks.
    pub fn lag_after(&self, acked: u64) -> (u64, f64) {
        match self.index_of(acked + 1) {
            None => (0, 0.0),
            Some(i) => {
                let before = if i == 0 {
                    self.popped_bytes
                } else {
                    self.entries[i - 1].cum_bytes
                };
                (
                    self.total_bytes - before,
                    self.entries[i].at.elapsed().as_secs_f64(),
                )
            }
        }
    }

    /// Drop records up to and including `seq`.
    pub fn pop_through(&mut self, seq: u64) {
        while let Some(e) = self.entries.front() {
            if e.rec.seq > seq {
                break;
            }
            self.popped_bytes = e.cum_bytes;
            self.entries.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.popped_bytes = self.total_bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(seq: u64, len: usize) -> WriteRecord {
        WriteRecord::new(seq, 1, 0, Bytes::from(vec![0u8; len]))
    }

    #[test]
    fn lag_and_batches_follow_acks() {
        let mut c = WriteCache::default();
        for s in 1..=4 {
            c.push(rec(s, 10));
        }
        assert_eq!(c.lag_after(0).0, 40);
        assert_eq!(c.lag_after(2).0, 20);
        assert_eq!(c.lag_after(4).0, 0);
        let b = c.batch_from(2, 15, 10);
        assert_eq!(b.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2]);
        c.pop_through(2);
        assert_eq!(c.first_seq(), Some(3));
        assert_eq!(c.bytes(), 20);
        assert!(c.batch_from(2, 100, 10).is_empty());
        assert_eq!(c.after(3).map(|r| r.seq).collect::<Vec<_>>(), vec![4]);
    }
}
