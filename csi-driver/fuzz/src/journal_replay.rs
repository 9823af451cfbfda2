//! Fuzz target `journal_replay`: a replica opened on any journal file, as
//! after a crash at any moment (a torn tail, a record of an older
//! generation, garbage). The input is a mode byte, the checkpoint the
//! metadata records, and either raw journal bytes or (mode bit 0) a list of
//! records the harness encodes in journal format with seeded flaws: a gap,
//! an older epoch, a bad checksum, a torn end, a write past the volume.
//!
//! Checked: decoding stops at the first bad record and what it returns
//! encodes back to exactly the bytes it consumed; opening never fails on a
//! journal's content; the replica reports the position it replayed to and
//! holds exactly the checkpointed image plus those records, in order; a
//! second open changes nothing.

use bytes::Bytes;
use roam_engine::WriteRecord;
use roam_engine::backend::VolumeMeta;
use roam_engine::cache::journal::{decode_all, encode};

use crate::peer_message::{open, secondary_files, secondary_meta};
use crate::{Input, block_on};

const SIZE: u64 = 256 << 10;

fn structured(input: &mut Input) -> Vec<u8> {
    let mut out = Vec::new();
    let count = input.u8() % 16;
    let mut seq = u64::from(input.u8() % 8);
    let mut epoch = u64::from(input.u8() % 3) + 1;
    for _ in 0..count {
        let flaws = input.u8();
        seq += if flaws & 1 == 1 { 2 } else { 1 };
        if flaws & 2 == 2 {
            epoch = epoch.saturating_sub(1);
        } else if flaws & 16 == 16 {
            epoch += 1;
        }
        let offset = u64::from(input.u16()) * 512 % (SIZE + 8192);
        let len = (usize::from(input.u8() % 16) + 1) * 512;
        let fill = input.u8();
        let mut rec = WriteRecord::new(seq, epoch, offset, Bytes::from(vec![fill; len]));
        if flaws & 4 == 4 {
            rec.crc ^= 1;
        }
        encode(&rec, &mut out);
        if flaws & 8 == 8 {
            out.truncate(out.len() - 1 - usize::from(input.u8()) % len);
            break;
        }
    }
    out
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let checkpoint = u64::from(input.u8() % 8);
    let checkpoint_epoch = u64::from(input.u8() % 3);
    let journal = if mode & 1 == 1 {
        structured(&mut input)
    } else {
        input.bytes(usize::MAX).to_vec()
    };

    let buf = Bytes::from(journal.clone());
    let (records, valid) = decode_all(&buf);
    assert!(valid <= buf.len());
    let mut again = Vec::new();
    for r in &records {
        assert!(r.crc_ok(), "decoded a record that fails its checksum");
        encode(r, &mut again);
    }
    assert!(
        again[..] == buf[..valid],
        "decoded records do not encode back to their bytes"
    );
    for w in records.windows(2) {
        assert!(
            w[1].seq == w[0].seq + 1 && w[1].epoch >= w[0].epoch,
            "decoded records out of sequence"
        );
    }

    let base: Vec<u8> = (0..SIZE).map(|i| (i / 512) as u8).collect();
    let meta = VolumeMeta {
        size_bytes: SIZE,
        epoch: checkpoint_epoch.max(1),
        checkpoint_seq: checkpoint,
        checkpoint_epoch,
        ..secondary_meta()
    };
    let (file, journal, store) = secondary_files(meta, base.clone(), journal);
    block_on(async {
        let vol = open(&file, &journal, &store).await;
        let at = vol.status().written_seq;
        assert!(
            at >= checkpoint,
            "opened behind its checkpoint: {at} < {checkpoint}"
        );
        let replayed: Vec<&WriteRecord> = records
            .iter()
            .filter(|r| r.seq > checkpoint && r.seq <= at)
            .collect();
        assert_eq!(
            replayed.len() as u64,
            at - checkpoint,
            "reports position {at} but the journal holds only {} records after {checkpoint}",
            replayed.len()
        );
        let mut expect = base.clone();
        for r in &replayed {
            assert!(r.end() <= SIZE, "replayed a write past the volume");
            expect[r.offset as usize..r.end() as usize].copy_from_slice(&r.data);
        }
        assert!(
            file.bytes() == expect,
            "the replica does not hold what was replayed"
        );
        vol.close().await;
        let vol = open(&file, &journal, &store).await;
        assert_eq!(
            vol.status().written_seq,
            at,
            "a second open moved the position"
        );
        assert!(file.bytes() == expect, "a second open changed the data");
        vol.close().await;
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn corpus_and_regressions_replay() {
        let n = crate::replay_dir("corpus/journal_replay", super::run)
            + crate::replay_dir("regressions/journal_replay", super::run);
        assert!(n > 0, "no input replayed");
    }
}
