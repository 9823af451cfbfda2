//! Self-describing blocks and a log of acknowledged writes.
//!
//! Every 4 KiB block the writer sends carries its own offset, a generation
//! (1, 2, ... per block), filler derived from both, and a CRC32C of the rest.
//! Reading a block back tells which generation it holds, or that it is torn,
//! misplaced or corrupt. An all-zero block was never written.

use std::collections::HashMap;

pub const BLOCK: usize = 4096;

pub fn encode(offset: u64, generation: u64) -> Vec<u8> {
    let mut block = vec![0u8; BLOCK];
    block[0..8].copy_from_slice(&offset.to_le_bytes());
    block[8..16].copy_from_slice(&generation.to_le_bytes());
    let mut x = offset ^ generation.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
    for chunk in block[16..BLOCK - 4].chunks_mut(8) {
        // xorshift64: cheap filler that differs per block and generation.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let crc = crc32c::crc32c(&block[..BLOCK - 4]);
    block[BLOCK - 4..].copy_from_slice(&crc.to_le_bytes());
    block
}

/// The generation held by a block read at `offset` (0: never written).
pub fn decode(offset: u64, block: &[u8]) -> Result<u64, String> {
    if block.len() != BLOCK {
        return Err(format!("block at {offset}: {} bytes", block.len()));
    }
    if block.iter().all(|b| *b == 0) {
        return Ok(0);
    }
    let crc = u32::from_le_bytes(block[BLOCK - 4..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&block[..BLOCK - 4]) != crc {
        return Err(format!(
            "block at {offset}: checksum mismatch (torn or corrupt)"
        ));
    }
    let stored = u64::from_le_bytes(block[0..8].try_into().expect("8 bytes"));
    if stored != offset {
        return Err(format!(
            "block at {offset} holds the block of offset {stored}"
        ));
    }
    Ok(u64::from_le_bytes(
        block[8..16].try_into().expect("8 bytes"),
    ))
}

/// What the writer sent and what was acknowledged, per block.
#[derive(Default)]
pub struct AckLog {
    /// Per block offset: (generation, write sequence number) of every
    /// acknowledged write, in order.
    acked: HashMap<u64, Vec<(u64, u64)>>,
    /// Per block offset: the highest generation sent (acknowledged or not).
    sent: HashMap<u64, u64>,
}

impl AckLog {
    pub fn sent(&mut self, offset: u64, generation: u64) {
        let g = self.sent.entry(offset).or_default();
        *g = (*g).max(generation);
    }

    pub fn acked(&mut self, offset: u64, generation: u64, seq: u64) {
        self.acked
            .entry(offset)
            .or_default()
            .push((generation, seq));
    }

    pub fn acked_writes(&self) -> usize {
        self.acked.values().map(Vec::len).sum()
    }

    pub fn offsets(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.sent.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Checks one block read back: it must hold at least the newest
    /// generation acknowledged with a sequence number `<= seq_bound`, and no
    /// more than the newest generation sent.
    pub fn check(&self, offset: u64, block: &[u8], seq_bound: u64) -> Result<(), String> {
        let held = decode(offset, block)?;
        let must = self
            .acked
            .get(&offset)
            .into_iter()
            .flatten()
            .filter(|(_, seq)| *seq <= seq_bound)
            .map(|(g, _)| *g)
            .max()
            .unwrap_or(0);
        let sent = self.sent.get(&offset).copied().unwrap_or(0);
        if held < must {
            return Err(format!(
                "block at {offset}: holds generation {held}, but generation {must} was acknowledged (lost write)"
            ));
        }
        if held > sent {
            return Err(format!(
                "block at {offset}: holds generation {held}, never sent (max {sent})"
            ));
        }
        Ok(())
    }
}
