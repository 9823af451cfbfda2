//! Conversions between the wire types (roam-proto) and the engine's types.
//! Decoding validates: an unknown enum value or a missing field is an
//! INVALID_ARGUMENT naming the field.

use roam_engine::snapshot::{SnapshotInfo, SnapshotMeta};
use roam_engine::transport::{PeerMessage, PeerReply, PeerRequest, Region};
use roam_engine::{
    FailurePolicy, GroupSpec, MemberSpec, MemberState, MemberStatus, Position, Role, Run,
    SyncLevel, TransferType, VolumeStatus, WriteRecord,
};
use roam_proto::replication as rp;
use roam_proto::storage as sp;

use super::error::{Result, StorageError};

fn invalid(field: &'static str, reason: impl Into<String>) -> StorageError {
    StorageError::InvalidField {
        field,
        reason: reason.into(),
    }
}

pub fn role_to_proto(r: Role) -> sp::Role {
    match r {
        Role::None => sp::Role::None,
        Role::Primary => sp::Role::Primary,
        Role::Secondary => sp::Role::Secondary,
    }
}

pub fn role_from_proto(r: i32) -> Result<Role> {
    match sp::Role::try_from(r) {
        Ok(sp::Role::None) | Ok(sp::Role::Unspecified) => Ok(Role::None),
        Ok(sp::Role::Primary) => Ok(Role::Primary),
        Ok(sp::Role::Secondary) => Ok(Role::Secondary),
        Err(_) => Err(invalid("role", format!("unknown value {r}"))),
    }
}

pub fn group_to_proto(g: &GroupSpec) -> sp::GroupSpec {
    sp::GroupSpec {
        members: g
            .members
            .iter()
            .map(|m| sp::Member {
                data_center: m.data_center.clone(),
                endpoint: m.endpoint.clone(),
            })
            .collect(),
        primary: g.primary.clone(),
        epoch: g.epoch,
        transfer_type: match g.transfer_type {
            TransferType::Sync => sp::TransferType::Sync,
            TransferType::Async => sp::TransferType::Async,
        } as i32,
        failure_policy: match g.failure_policy {
            FailurePolicy::Block => sp::FailurePolicy::Block,
            FailurePolicy::Degrade => sp::FailurePolicy::Degrade,
        } as i32,
        max_lag_bytes: g.max_lag_bytes,
        max_lag_seconds: g.max_lag_seconds,
        sync_level: match g.sync_level {
            SyncLevel::Write => sp::SyncLevel::Write,
            SyncLevel::Flush => sp::SyncLevel::Flush,
        } as i32,
    }
}

pub fn group_from_proto(g: &sp::GroupSpec) -> Result<GroupSpec> {
    let transfer_type = match sp::TransferType::try_from(g.transfer_type) {
        Ok(sp::TransferType::Sync) => TransferType::Sync,
        Ok(sp::TransferType::Async) => TransferType::Async,
        _ => {
            return Err(invalid(
                "group.transfer_type",
                format!("must be SYNC or ASYNC, got {}", g.transfer_type),
            ));
        }
    };
    let failure_policy = match sp::FailurePolicy::try_from(g.failure_policy) {
        Ok(sp::FailurePolicy::Block) => FailurePolicy::Block,
        Ok(sp::FailurePolicy::Degrade) => FailurePolicy::Degrade,
        _ => {
            return Err(invalid(
                "group.failure_policy",
                format!("must be BLOCK or DEGRADE, got {}", g.failure_policy),
            ));
        }
    };
    let sync_level = match sp::SyncLevel::try_from(g.sync_level) {
        Ok(sp::SyncLevel::Unspecified | sp::SyncLevel::Write) => SyncLevel::Write,
        Ok(sp::SyncLevel::Flush) => SyncLevel::Flush,
        Err(_) => {
            return Err(invalid(
                "group.sync_level",
                format!("must be WRITE or FLUSH, got {}", g.sync_level),
            ));
        }
    };
    if sync_level == SyncLevel::Flush && transfer_type != TransferType::Sync {
        return Err(invalid(
            "group.sync_level",
            "FLUSH applies only to transfer_type SYNC".to_string(),
        ));
    }
    Ok(GroupSpec {
        members: g
            .members
            .iter()
            .map(|m| MemberSpec {
                data_center: m.data_center.clone(),
                endpoint: m.endpoint.clone(),
            })
            .collect(),
        primary: g.primary.clone(),
        epoch: g.epoch,
        transfer_type,
        sync_level,
        failure_policy,
        max_lag_bytes: g.max_lag_bytes,
        max_lag_seconds: g.max_lag_seconds,
    })
}

fn member_state(s: MemberState) -> sp::MemberState {
    match s {
        MemberState::InSync => sp::MemberState::InSync,
        MemberState::Lagging => sp::MemberState::Lagging,
        MemberState::Resyncing => sp::MemberState::Resyncing,
        MemberState::Unreachable => sp::MemberState::Unreachable,
    }
}

fn member_to_proto(m: &MemberStatus) -> sp::MemberStatus {
    sp::MemberStatus {
        data_center: m.data_center.clone(),
        state: member_state(m.state) as i32,
        lag_bytes: m.lag_bytes,
        lag_seconds: m.lag_seconds,
        applied_seq: m.applied_seq,
        message: m.message.clone(),
        resync_bytes: m.resync_bytes,
        in_sync: m.in_sync,
    }
}

pub fn status_to_proto(s: &VolumeStatus) -> sp::ReplicaStatus {
    sp::ReplicaStatus {
        volume_id: s.volume_id.clone(),
        size_bytes: s.size_bytes,
        role: role_to_proto(s.role) as i32,
        epoch: s.epoch,
        written_seq: s.written_seq,
        durable_seq: s.durable_seq,
        group: s.group.as_ref().map(group_to_proto),
        members: s.members.iter().map(member_to_proto).collect(),
        fenced: s.fenced,
        last_transfer_millis: s.last_transfer_millis,
        resync_bytes: s.members.iter().map(|m| m.resync_bytes).sum(),
    }
}

pub fn snapshot_meta_to_proto(m: &SnapshotMeta, copied_bytes: u64) -> sp::SnapshotInfo {
    sp::SnapshotInfo {
        name: m.name.clone(),
        seq: m.seq,
        epoch: m.epoch,
        size_bytes: m.size_bytes,
        created_unix_millis: m.created_unix_millis,
        copied_bytes,
    }
}

pub fn snapshot_to_proto(s: &SnapshotInfo) -> sp::SnapshotInfo {
    snapshot_meta_to_proto(&s.meta, s.copied_bytes)
}

pub fn snapshot_meta_from_proto(s: sp::SnapshotInfo) -> SnapshotMeta {
    SnapshotMeta {
        name: s.name,
        seq: s.seq,
        epoch: s.epoch,
        size_bytes: s.size_bytes,
        created_unix_millis: s.created_unix_millis,
    }
}

pub fn request_to_proto(r: PeerRequest) -> rp::PeerRequest {
    use rp::peer_request::Body;
    let body = match r.msg {
        PeerMessage::Hello { primary } => Body::Hello(rp::Hello { primary }),
        PeerMessage::Append { records } => Body::Append(rp::AppendBatch {
            records: records
                .into_iter()
                .map(|w| rp::WriteRecord {
                    seq: w.seq,
                    epoch: w.epoch,
                    offset: w.offset,
                    data: w.data,
                    crc: w.crc,
                    incarnation: w.incarnation,
                })
                .collect(),
        }),
        PeerMessage::ResyncBegin { full } => Body::ResyncBegin(rp::ResyncBegin { full }),
        PeerMessage::Regions { regions } => Body::Regions(rp::RegionBatch {
            regions: regions
                .into_iter()
                .map(|g| rp::Region {
                    offset: g.offset,
                    data: g.data,
                    crc: g.crc,
                })
                .collect(),
        }),
        PeerMessage::ResyncDone {
            seq,
            applied_epoch,
            history,
        } => Body::ResyncDone(rp::ResyncDone {
            seq,
            applied_epoch,
            history: history
                .into_iter()
                .map(|r| rp::EpochStart {
                    epoch: r.epoch,
                    first_seq: r.first_seq,
                    incarnation: r.incarnation,
                })
                .collect(),
        }),
        PeerMessage::TakePrimary { group, last_seq } => Body::TakePrimary(rp::TakePrimary {
            group: Some(group_to_proto(&group)),
            last_seq,
        }),
        PeerMessage::TakeSnapshot { meta } => Body::TakeSnapshot(rp::TakeSnapshot {
            snapshot: Some(snapshot_meta_to_proto(&meta, 0)),
        }),
    };
    rp::PeerRequest {
        volume_id: r.volume_id,
        epoch: r.epoch,
        body: Some(body),
    }
}

pub fn request_from_proto(r: rp::PeerRequest) -> Result<PeerRequest> {
    use rp::peer_request::Body;
    let Some(body) = r.body else {
        return Err(invalid("body", "missing"));
    };
    let msg = match body {
        Body::Hello(h) => PeerMessage::Hello { primary: h.primary },
        Body::Append(a) => PeerMessage::Append {
            records: a
                .records
                .into_iter()
                .map(|w| WriteRecord {
                    seq: w.seq,
                    epoch: w.epoch,
                    incarnation: w.incarnation,
                    offset: w.offset,
                    data: w.data,
                    crc: w.crc,
                })
                .collect(),
        },
        Body::ResyncBegin(b) => PeerMessage::ResyncBegin { full: b.full },
        Body::Regions(g) => PeerMessage::Regions {
            regions: g
                .regions
                .into_iter()
                .map(|x| Region {
                    offset: x.offset,
                    data: x.data,
                    crc: x.crc,
                })
                .collect(),
        },
        Body::ResyncDone(d) => PeerMessage::ResyncDone {
            seq: d.seq,
            applied_epoch: d.applied_epoch,
            history: d
                .history
                .into_iter()
                .map(|h| Run {
                    epoch: h.epoch,
                    incarnation: h.incarnation,
                    first_seq: h.first_seq,
                })
                .collect(),
        },
        Body::TakePrimary(t) => {
            let Some(group) = t.group else {
                return Err(invalid("take_primary.group", "missing"));
            };
            PeerMessage::TakePrimary {
                group: group_from_proto(&group)?,
                last_seq: t.last_seq,
            }
        }
        Body::TakeSnapshot(t) => {
            let Some(snapshot) = t.snapshot else {
                return Err(invalid("take_snapshot.snapshot", "missing"));
            };
            PeerMessage::TakeSnapshot {
                meta: snapshot_meta_from_proto(snapshot),
            }
        }
    };
    Ok(PeerRequest {
        volume_id: r.volume_id,
        epoch: r.epoch,
        msg,
    })
}

pub fn reply_to_proto(r: PeerReply) -> rp::PeerReply {
    use rp::peer_reply::Body;
    let body = match r {
        PeerReply::Position(p) => Body::Position(rp::Position {
            epoch: p.epoch,
            role: role_to_proto(p.role) as i32,
            applied_seq: p.applied_seq,
            applied_epoch: p.applied_epoch,
            resyncing: p.resyncing,
            applied_incarnation: p.applied_incarnation,
        }),
        PeerReply::Ack { seq } => Body::Ack(rp::Ack { seq }),
        PeerReply::Done => Body::Done(rp::Done {}),
        PeerReply::Durable { seq } => Body::Durable(rp::Durable { seq }),
    };
    rp::PeerReply { body: Some(body) }
}

pub fn reply_from_proto(r: rp::PeerReply) -> Result<PeerReply> {
    use rp::peer_reply::Body;
    match r.body {
        None => Err(invalid("reply.body", "missing")),
        Some(Body::Position(p)) => Ok(PeerReply::Position(Position {
            epoch: p.epoch,
            role: role_from_proto(p.role)?,
            applied_seq: p.applied_seq,
            applied_epoch: p.applied_epoch,
            applied_incarnation: p.applied_incarnation,
            resyncing: p.resyncing,
        })),
        Some(Body::Ack(a)) => Ok(PeerReply::Ack { seq: a.seq }),
        Some(Body::Done(_)) => Ok(PeerReply::Done),
        Some(Body::Durable(d)) => Ok(PeerReply::Durable { seq: d.seq }),
    }
}
