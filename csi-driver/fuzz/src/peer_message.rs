//! Fuzz target `peer_message`: what a secondary does with whatever reaches
//! its peer port. Each input is a flags byte and a series of
//! length-prefixed protobuf messages; each is decoded as a
//! `roam.replication.v1.PeerRequest` (prost), converted as the server does
//! (`convert::request_from_proto`) and handed to a secondary's
//! `Volume::begin_peer`. With flag bit 0 the harness first sets the volume
//! id and recomputes every checksum, so the messages get past the first
//! checks and reach the ordering, epoch, range and resync rules.
//!
//! Checked: nothing panics; a refused message changes nothing (position,
//! epoch, role, group, data); the replica opens again afterwards, and,
//! unless a region copy was begun, holds the same bytes after its journal
//! is replayed.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use roam_engine::backend::{MetaStore, VolumeMeta};
use roam_engine::{EngineConfig, GroupSpec, MemberSpec, Role, Volume, VolumeFiles};
use roam_proto::replication as rp;

use crate::{Input, MemFile, MemMeta, Nowhere, block_on, convert};

pub const SIZE: u64 = 1 << 20;
const VOLUME: &str = "v";
const MAX_MESSAGES: usize = 64;

fn group() -> GroupSpec {
    GroupSpec {
        members: vec![
            MemberSpec {
                data_center: "dc-a".into(),
                endpoint: "http://a".into(),
            },
            MemberSpec {
                data_center: "dc-b".into(),
                endpoint: "http://b".into(),
            },
        ],
        primary: "dc-a".into(),
        epoch: 1,
        ..GroupSpec::default()
    }
}

pub fn config() -> EngineConfig {
    EngineConfig {
        ack_timeout: Duration::from_millis(50),
        transfer_timeout: Duration::from_millis(100),
        max_backoff: Duration::from_millis(50),
        ..EngineConfig::default()
    }
}

/// Files of a secondary of dc-a at epoch 1, in memory.
pub fn secondary_files(
    meta: VolumeMeta,
    data: Vec<u8>,
    journal: Vec<u8>,
) -> (Arc<MemFile>, Arc<MemFile>, Arc<MemMeta>) {
    let store = Arc::new(MemMeta::default());
    store
        .store(&serde_json::to_vec(&meta).expect("encode meta"))
        .expect("store meta");
    (MemFile::with(data), MemFile::with(journal), store)
}

pub async fn open(data: &Arc<MemFile>, journal: &Arc<MemFile>, meta: &Arc<MemMeta>) -> Volume {
    let files = VolumeFiles {
        data: data.clone(),
        journal: journal.clone(),
        meta: meta.clone(),
        snapshots: Arc::new(roam_engine::backend::NoSnapshots),
    };
    Volume::open(VOLUME, files, Arc::new(Nowhere), config())
        .await
        .expect("a replica whose files were written only by the engine opens")
}

pub fn secondary_meta() -> VolumeMeta {
    VolumeMeta {
        volume_id: VOLUME.into(),
        size_bytes: SIZE,
        role: Role::Secondary,
        epoch: 1,
        data_center: "dc-b".into(),
        group: Some(group()),
        ..VolumeMeta::default()
    }
}

/// Sets the volume id and every checksum right.
fn fix_up(msg: &mut rp::PeerRequest) {
    msg.volume_id = VOLUME.into();
    match &mut msg.body {
        Some(rp::peer_request::Body::Append(a)) => {
            for r in &mut a.records {
                r.offset %= 2 * SIZE;
                r.crc = roam_engine::record_crc(r.seq, r.epoch, r.offset, &r.data);
            }
        }
        Some(rp::peer_request::Body::Regions(g)) => {
            for r in &mut g.regions {
                r.offset %= 2 * SIZE;
                r.crc = crc32c::crc32c(&r.data);
            }
        }
        _ => {}
    }
}

/// What a refused message must leave alone.
fn observable(vol: &Volume) -> impl PartialEq + std::fmt::Debug {
    let s = vol.status();
    (
        s.written_seq,
        s.epoch,
        s.role,
        s.fenced,
        s.group,
        s.size_bytes,
    )
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let fix = input.u8() & 1 == 1;
    let (file, journal, meta) =
        secondary_files(secondary_meta(), vec![0; SIZE as usize], Vec::new());
    block_on(async {
        let vol = open(&file, &journal, &meta).await;
        let mut copying = false;
        for _ in 0..MAX_MESSAGES {
            if input.is_empty() {
                break;
            }
            let Ok(mut msg) = rp::PeerRequest::decode(input.chunk()) else {
                continue;
            };
            if fix {
                fix_up(&mut msg);
            }
            let Ok(req) = convert::request_from_proto(msg) else {
                continue;
            };
            let resync = matches!(
                req.msg,
                roam_engine::transport::PeerMessage::ResyncBegin { .. }
            );
            let before = (observable(&vol), file.bytes());
            match vol.begin_peer(req).await {
                Err(e) => {
                    let after = (observable(&vol), file.bytes());
                    assert!(
                        before == after,
                        "a refused message changed the replica: {e}"
                    );
                }
                Ok(reply) => {
                    copying |= resync;
                    // Durability here is immediate; a reply that needs a peer
                    // (a hand-over) gives up on its own.
                    let _ = tokio::time::timeout(Duration::from_millis(200), reply).await;
                }
            }
        }
        vol.close().await;
        let image = file.bytes();
        let again = open(&file, &journal, &meta).await;
        if !copying {
            assert!(
                file.bytes() == image,
                "replaying the journal changed what the replica held"
            );
        }
        again.close().await;
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn corpus_and_regressions_replay() {
        let n = crate::replay_dir("corpus/peer_message", super::run)
            + crate::replay_dir("regressions/peer_message", super::run);
        assert!(n > 0, "no input replayed");
    }
}
