//! Fuzz target `storage_request`: the storage API's request validation. A
//! storage system (the server's own `StorageService` over a `Registry` in a
//! temporary directory) gets a series of calls built from the input:
//! create, delete, expand, get, list, configure (a group decoded from the
//! input's protobuf bytes), transfer, promote, read, write, flush, read
//! replica, with volume ids both ordinary and hostile (`..`, `/`, empty,
//! very long), sizes, offsets and lengths at and past every edge.
//!
//! Checked: nothing panics; no answer is UNKNOWN; nothing is created
//! outside the data directory, and everything in it is a replica named by a
//! valid volume id.

use std::sync::Arc;

use prost::Message;
use roam_proto::storage::storage_server::Storage;
use roam_proto::storage::*;
use tonic::Request;

use crate::peer_message::config;
use crate::registry::{Registry, validate_volume_id};
use crate::service::StorageService;
use crate::{Input, Nowhere, block_on};

const MAX_CALLS: usize = 24;

fn volume_id(input: &mut Input) -> String {
    match input.u8() % 8 {
        0..=3 => format!("v{}", input.u8() % 3),
        4 => "..".into(),
        5 => "a/../../b".into(),
        _ => String::from_utf8_lossy(input.chunk()).into_owned(),
    }
}

fn size(input: &mut Input) -> u64 {
    match input.u8() % 10 {
        0 => 0,
        1 => 1,
        2 => 511,
        3 => 512,
        4 => 65536,
        5 => 1 << 20,
        6 => u64::MAX,
        7 => u64::MAX - 511,
        // Anything up to 4 MiB: the temporary directory is on a real disk.
        _ => input.u64() % (4 << 20),
    }
}

fn offset(input: &mut Input) -> u64 {
    if input.u8() & 1 == 0 {
        u64::from(input.u16()) * 512
    } else {
        input.u64()
    }
}

fn group(input: &mut Input) -> Option<GroupSpec> {
    let bytes = input.chunk();
    if bytes.first().is_some_and(|b| b & 1 == 1) {
        return GroupSpec::decode(&bytes[1..]).ok();
    }
    let primary = input.u8() % 3;
    let members = (0..input.u8() % 4)
        .map(|i| Member {
            data_center: if i == 0 {
                "dc-a".into()
            } else {
                format!("dc-{i}")
            },
            endpoint: format!("http://peer-{i}"),
        })
        .collect();
    Some(GroupSpec {
        members,
        primary: if primary == 0 {
            "dc-a".into()
        } else {
            format!("dc-{primary}")
        },
        epoch: u64::from(input.u8() % 4),
        transfer_type: i32::from(input.u8() % 4),
        failure_policy: i32::from(input.u8() % 4),
        max_lag_bytes: u64::from(input.u8()),
        max_lag_seconds: u64::from(input.u8()),
        sync_level: i32::from(input.u8() % 4),
    })
}

fn check<T>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) {
    if let Err(s) = r {
        assert!(
            s.code() != tonic::Code::Unknown,
            "{what}: UNKNOWN: {}",
            s.message()
        );
    }
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    let registry = Arc::new(Registry::new(
        root.clone(),
        "dc-a".into(),
        "node-a".into(),
        "http://a".into(),
        config(),
        Arc::new(Nowhere),
    ));
    block_on(async {
        registry
            .open_all()
            .await
            .expect("open an empty data directory");
        let svc = StorageService {
            registry: registry.clone(),
        };
        for _ in 0..MAX_CALLS {
            if input.is_empty() {
                break;
            }
            let op = input.u8() % 12;
            let volume_id = volume_id(&mut input);
            match op {
                0 => check(
                    "CreateReplica",
                    svc.create_replica(Request::new(CreateReplicaRequest {
                        volume_id,
                        size_bytes: size(&mut input),
                    }))
                    .await,
                ),
                1 => check(
                    "DeleteReplica",
                    svc.delete_replica(Request::new(DeleteReplicaRequest { volume_id }))
                        .await,
                ),
                2 => check(
                    "ExpandReplica",
                    svc.expand_replica(Request::new(ExpandReplicaRequest {
                        volume_id,
                        size_bytes: size(&mut input),
                    }))
                    .await,
                ),
                3 => check(
                    "GetReplica",
                    svc.get_replica(Request::new(GetReplicaRequest { volume_id }))
                        .await,
                ),
                4 => check(
                    "ListReplicas",
                    svc.list_replicas(Request::new(ListReplicasRequest {}))
                        .await,
                ),
                5 => {
                    let group = group(&mut input);
                    check(
                        "ConfigureGroup",
                        svc.configure_group(Request::new(ConfigureGroupRequest {
                            volume_id,
                            group,
                        }))
                        .await,
                    )
                }
                6 => {
                    let target = String::from_utf8_lossy(input.chunk()).into_owned();
                    check(
                        "TransferPrimary",
                        svc.transfer_primary(Request::new(TransferPrimaryRequest {
                            volume_id,
                            target,
                            new_epoch: u64::from(input.u8() % 5),
                        }))
                        .await,
                    )
                }
                7 => check(
                    "Promote",
                    svc.promote(Request::new(PromoteRequest {
                        volume_id,
                        new_epoch: u64::from(input.u8() % 5),
                    }))
                    .await,
                ),
                8 | 11 => {
                    let req = ReadRequest {
                        volume_id,
                        epoch: u64::from(input.u8() % 4),
                        offset: offset(&mut input),
                        length: if input.u8() & 1 == 0 {
                            u32::from(input.u16())
                        } else {
                            input.u64() as u32
                        },
                    };
                    if op == 8 {
                        check("Read", svc.read(Request::new(req)).await);
                    } else {
                        check("ReadReplica", svc.read_replica(Request::new(req)).await);
                    }
                }
                9 => {
                    let epoch = u64::from(input.u8() % 4);
                    let offset = offset(&mut input);
                    let fua = input.u8() & 1 == 1;
                    check(
                        "Write",
                        svc.write(Request::new(WriteRequest {
                            volume_id,
                            epoch,
                            offset,
                            data: input.chunk().to_vec(),
                            fua,
                        }))
                        .await,
                    )
                }
                _ => check(
                    "Flush",
                    svc.flush(Request::new(FlushRequest {
                        volume_id,
                        epoch: u64::from(input.u8() % 4),
                    }))
                    .await,
                ),
            }
        }
        registry.close_all().await;
    });
    // Nothing outside the data directory; in it, only replicas.
    let outside: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        outside.iter().all(|n| n == "data"),
        "created outside the data directory: {outside:?}"
    );
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                validate_volume_id(&name).is_ok(),
                "{name:?} in the data directory is not a valid volume id"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn corpus_and_regressions_replay() {
        let n = crate::replay_dir("corpus/storage_request", super::run)
            + crate::replay_dir("regressions/storage_request", super::run);
        assert!(n > 0, "no input replayed");
    }
}
