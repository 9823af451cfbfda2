//! Resync: what an absent or new member lacks, as a map of 64 KiB regions.
//!
//! While a member is not streaming (unreachable, refused, out of sync, new),
//! every write on the primary marks its regions here. When the member comes
//! back, only the marked regions travel; a new member, or one whose history
//! diverged, gets every region (a full background copy). Writes continue during
//! the copy and re-mark what they touch, so the copy repeats until the map is
//! empty, then the member switches to streaming at the current sequence number.
//! The map is persisted at every checkpoint (see the volume), so a restart of
//! the primary still knows what each member lacks.

use crate::backend::PersistedDirtyMap;
use crate::types::REGION_SIZE;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirtyMap {
    /// The member lacks nothing at or below this sequence number outside the map.
    pub since_seq: u64,
    bits: Vec<u64>,
    count: u64,
}

impl DirtyMap {
    pub fn new(since_seq: u64) -> Self {
        Self {
            since_seq,
            bits: Vec::new(),
            count: 0,
        }
    }

    /// A map with every region of a `size`-byte volume set.
    pub fn full(size: u64) -> Self {
        let mut m = Self::new(0);
        m.mark(0, size);
        m
    }

    fn set(&mut self, region: u64) {
        let (w, b) = ((region / 64) as usize, region % 64);
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        if self.bits[w] & (1 << b) == 0 {
            self.bits[w] |= 1 << b;
            self.count += 1;
        }
    }

    /// Mark the regions that `[offset, offset+len)` touches.
    pub fn mark(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        for r in offset / REGION_SIZE..=(offset + len - 1) / REGION_SIZE {
            self.set(r);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn regions(&self) -> u64 {
        self.count
    }

    /// Set regions, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.bits.iter().enumerate().flat_map(|(w, &word)| {
            (0..64u64)
                .filter(move |b| word & (1 << b) != 0)
                .map(move |b| w as u64 * 64 + b)
        })
    }

    /// Take every set region, leaving the map empty.
    pub fn take(&mut self) -> DirtyMap {
        let out = DirtyMap {
            since_seq: self.since_seq,
            bits: std::mem::take(&mut self.bits),
            count: self.count,
        };
        self.count = 0;
        out
    }

    /// Add every region of `other`.
    pub fn merge(&mut self, other: &DirtyMap) {
        for r in other.iter() {
            self.set(r);
        }
        self.since_seq = self.since_seq.min(other.since_seq);
    }

    pub fn to_persisted(&self) -> PersistedDirtyMap {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for r in self.iter() {
            match runs.last_mut() {
                Some((start, n)) if *start + *n == r => *n += 1,
                _ => runs.push((r, 1)),
            }
        }
        PersistedDirtyMap {
            since_seq: self.since_seq,
            runs,
            full: false,
            out_of_sync: false,
        }
    }

    pub fn from_persisted(p: &PersistedDirtyMap, size: u64) -> Self {
        if p.full {
            return Self::full(size);
        }
        let mut m = Self::new(p.since_seq);
        for &(start, n) in &p.runs {
            for r in start..start.saturating_add(n).min(size.div_ceil(REGION_SIZE)) {
                m.set(r);
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_every_touched_region_and_round_trips() {
        let mut m = DirtyMap::new(7);
        m.mark(REGION_SIZE - 1, 2); // spans regions 0 and 1
        m.mark(10 * REGION_SIZE, 1);
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![0, 1, 10]);
        let p = m.to_persisted();
        assert_eq!(p.runs, vec![(0, 2), (10, 1)]);
        assert_eq!(DirtyMap::from_persisted(&p, 1 << 30), m);
        let taken = m.take();
        assert!(m.is_empty());
        assert_eq!(taken.regions(), 3);
    }
}
