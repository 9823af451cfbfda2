//! Writes the seed corpus (`corpus/<target>/seed-*`): a few well-formed
//! inputs per target that reach past the first checks, for the fuzzer to
//! mutate. `cargo run --example seed_corpus` in this directory; the output
//! is committed.

use bytes::Bytes;
use prost::Message;
use roam_engine::WriteRecord;
use roam_engine::cache::journal::encode;
use roam_proto::replication as rp;
use roam_proto::storage as sp;

fn chunk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn peer(epoch: u64, body: rp::peer_request::Body) -> Vec<u8> {
    rp::PeerRequest {
        volume_id: "v".into(),
        epoch,
        body: Some(body),
    }
    .encode_to_vec()
}

fn append(epoch: u64, seqs: std::ops::RangeInclusive<u64>) -> rp::peer_request::Body {
    rp::peer_request::Body::Append(rp::AppendBatch {
        records: seqs
            .map(|seq| rp::WriteRecord {
                seq,
                epoch,
                offset: seq * 4096,
                data: Bytes::from(vec![seq as u8; 4096]),
                ..Default::default()
            })
            .collect(),
    })
}

fn hello(epoch: u64) -> Vec<u8> {
    peer(
        epoch,
        rp::peer_request::Body::Hello(rp::Hello {
            primary: "dc-a".into(),
        }),
    )
}

fn write(dir: &str, name: &str, data: &[u8]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(dir);
    std::fs::create_dir_all(&path).expect("corpus dir");
    std::fs::write(path.join(name), data).expect("write seed");
}

fn peer_message() {
    use rp::peer_request::Body;
    let mut streaming = vec![1u8];
    chunk(&mut streaming, &hello(1));
    chunk(&mut streaming, &peer(1, append(1, 1..=3)));
    chunk(&mut streaming, &peer(1, append(1, 4..=4)));
    chunk(&mut streaming, &peer(1, append(1, 6..=6)));
    chunk(&mut streaming, &peer(0, append(1, 5..=5)));
    write("peer_message", "seed-append", &streaming);

    let mut resync = vec![1u8];
    chunk(&mut resync, &hello(2));
    chunk(
        &mut resync,
        &peer(2, Body::ResyncBegin(rp::ResyncBegin { full: true })),
    );
    chunk(
        &mut resync,
        &peer(
            2,
            Body::Regions(rp::RegionBatch {
                regions: vec![rp::Region {
                    offset: 65536,
                    data: Bytes::from(vec![7u8; 65536]),
                    crc: 0,
                }],
            }),
        ),
    );
    chunk(
        &mut resync,
        &peer(
            2,
            Body::ResyncDone(rp::ResyncDone {
                seq: 9,
                applied_epoch: 2,
                history: vec![rp::EpochStart {
                    epoch: 2,
                    first_seq: 1,
                    ..Default::default()
                }],
            }),
        ),
    );
    chunk(&mut resync, &peer(2, append(2, 10..=11)));
    write("peer_message", "seed-resync", &resync);

    let mut take = vec![1u8];
    chunk(&mut take, &hello(1));
    chunk(&mut take, &peer(1, append(1, 1..=2)));
    chunk(
        &mut take,
        &peer(
            2,
            Body::TakePrimary(rp::TakePrimary {
                group: Some(sp::GroupSpec {
                    members: vec![
                        sp::Member {
                            data_center: "dc-a".into(),
                            endpoint: "http://a".into(),
                        },
                        sp::Member {
                            data_center: "dc-b".into(),
                            endpoint: "http://b".into(),
                        },
                    ],
                    primary: "dc-b".into(),
                    epoch: 2,
                    transfer_type: 1,
                    failure_policy: 1,
                    max_lag_bytes: 0,
                    max_lag_seconds: 0,
                    sync_level: 1,
                }),
                last_seq: 2,
            }),
        ),
    );
    write("peer_message", "seed-take-primary", &take);

    let mut raw = vec![0u8];
    chunk(&mut raw, &peer(1, append(1, 1..=1)));
    chunk(&mut raw, &[0x0a, 0x01, 0x76, 0x10, 0x01, 0x5a, 0x00]);
    write("peer_message", "seed-raw", &raw);
}

fn journal_replay() {
    // Structured: 6 records, the fourth torn.
    let mut s = vec![1u8, 0, 1, 6, 0, 1];
    for (flaws, fill) in [(0u8, 1u8), (16, 2), (0, 3), (8, 4), (0, 5), (0, 6)] {
        s.push(flaws);
        s.extend_from_slice(&(u16::from(fill) * 8).to_le_bytes());
        s.push(7);
        s.push(fill);
        if flaws & 8 == 8 {
            s.push(100);
        }
    }
    write("journal_replay", "seed-structured", &s);
    // Structured, past a checkpoint, with a gap and a bad checksum.
    let mut g = vec![1u8, 2, 1, 5, 0, 1];
    for flaws in [0u8, 0, 1, 4, 2] {
        g.push(flaws);
        g.extend_from_slice(&300u16.to_le_bytes());
        g.push(1);
        g.push(0x5a);
    }
    write("journal_replay", "seed-gap", &g);
    // Raw journal bytes: three records, then zeros.
    let mut raw = vec![0u8, 0, 1];
    for seq in 1..=3u64 {
        let rec = WriteRecord::new(seq, 1, seq * 512, Bytes::from(vec![seq as u8; 512]));
        encode(&rec, &mut raw);
    }
    raw.extend_from_slice(&[0u8; 64]);
    write("journal_replay", "seed-raw", &raw);
}

fn storage_request() {
    let mut s = Vec::new();
    let id = |s: &mut Vec<u8>, n: u8| {
        s.push(0);
        s.push(n);
    };
    // CreateReplica v0, 1 MiB.
    s.push(0);
    id(&mut s, 0);
    s.push(5);
    // ConfigureGroup: dc-a primary at epoch 1, Sync, Block, alone.
    s.push(5);
    id(&mut s, 0);
    chunk(&mut s, &[0]);
    s.extend_from_slice(&[0, 1, 1, 1, 1, 0, 0]);
    // Write at epoch 1, offset 4096, 512 bytes, FUA.
    s.push(9);
    id(&mut s, 0);
    s.push(1);
    s.push(0);
    s.extend_from_slice(&8u16.to_le_bytes());
    s.push(1);
    chunk(&mut s, &[0xab; 512]);
    // Read it back, flush, read past the end.
    s.push(8);
    id(&mut s, 0);
    s.push(1);
    s.push(0);
    s.extend_from_slice(&8u16.to_le_bytes());
    s.push(0);
    s.extend_from_slice(&512u16.to_le_bytes());
    s.push(10);
    id(&mut s, 0);
    s.push(1);
    s.push(11);
    id(&mut s, 0);
    s.push(1);
    s.push(1);
    s.extend_from_slice(&u64::MAX.to_le_bytes());
    s.push(1);
    s.extend_from_slice(&u64::MAX.to_le_bytes());
    // Expand, get, list, delete.
    s.push(2);
    id(&mut s, 0);
    s.push(5);
    s.push(3);
    id(&mut s, 0);
    s.push(4);
    id(&mut s, 0);
    s.push(1);
    id(&mut s, 0);
    write("storage_request", "seed-life-cycle", &s);

    // Hostile ids and sizes.
    // CreateReplica of "..", then of ids taken from the input.
    let mut h = vec![0, 4, 5, 0, 7];
    chunk(&mut h, b"../escape");
    h.push(3);
    h.push(0);
    h.push(7);
    chunk(&mut h, &[b'a'; 200]);
    h.push(3);
    h.push(0);
    h.push(0);
    h.push(6);
    write("storage_request", "seed-hostile", &h);
}

fn main() {
    peer_message();
    journal_replay();
    storage_request();
}
