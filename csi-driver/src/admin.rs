//! `roam-csi admin --endpoint E <command>`: drive one storage system by hand —
//! create replicas, define a group, write and read, move the primary, show
//! status. Enough to demonstrate the data path without Kubernetes.
//!
//! A failed call prints `error: <gRPC code>: <message>` on stderr and exits 1.
//! Data commands without `--epoch` use the epoch the replica reports.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use roam_proto::storage::storage_client::StorageClient;
use roam_proto::storage::*;
use tonic::transport::Channel;

use crate::tls::TlsArgs;

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Storage system endpoint, e.g. http://127.0.0.1:7100 (https:// with TLS).
    #[arg(long, env = "ROAM_ENDPOINT")]
    pub endpoint: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Level {
    Write,
    Flush,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Transfer {
    Sync,
    Async,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Policy {
    Block,
    Degrade,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Data center, node, endpoint, capacity.
    Info,
    /// Create a replica (idempotent for the same size).
    Create {
        #[arg(long)]
        volume: String,
        #[arg(long)]
        size: u64,
    },
    /// Delete a replica and its journal.
    Delete {
        #[arg(long)]
        volume: String,
    },
    /// Grow a replica.
    Expand {
        #[arg(long)]
        volume: String,
        #[arg(long)]
        size: u64,
    },
    /// Define the copy volume group on this storage system.
    Configure {
        #[arg(long)]
        volume: String,
        /// A member as DC=ENDPOINT; repeat for each.
        #[arg(long = "member", required = true)]
        members: Vec<String>,
        /// Data center of the primary.
        #[arg(long)]
        primary: String,
        #[arg(long)]
        epoch: u64,
        #[arg(long, value_enum, default_value = "sync")]
        transfer: Transfer,
        /// Sync only: what a write waits for (flush: only flushes wait).
        #[arg(long, value_enum, default_value = "write")]
        sync_level: Level,
        #[arg(long, value_enum, default_value = "block")]
        policy: Policy,
        #[arg(long, default_value_t = 0)]
        max_lag_bytes: u64,
        #[arg(long, default_value_t = 0)]
        max_lag_seconds: u64,
    },
    /// Write a file (or a string) at an offset on the primary.
    Write {
        #[arg(long)]
        volume: String,
        #[arg(long)]
        offset: u64,
        #[arg(long, conflicts_with = "data")]
        file: Option<PathBuf>,
        #[arg(long)]
        data: Option<String>,
        #[arg(long)]
        epoch: Option<u64>,
        #[arg(long)]
        fua: bool,
    },
    /// Read from the primary (or, with --any-role, from this replica whatever its role).
    Read {
        #[arg(long)]
        volume: String,
        #[arg(long)]
        offset: u64,
        #[arg(long)]
        length: u32,
        #[arg(long)]
        epoch: Option<u64>,
        #[arg(long)]
        any_role: bool,
        /// Write the bytes here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Make every accepted write durable (and on Sync secondaries).
    Flush {
        #[arg(long)]
        volume: String,
        #[arg(long)]
        epoch: Option<u64>,
    },
    /// Planned change of primary, sent to the current primary.
    Transfer {
        #[arg(long)]
        volume: String,
        /// Data center that becomes primary.
        #[arg(long)]
        target: String,
        /// Must be the held epoch + 1; default: that.
        #[arg(long)]
        epoch: Option<u64>,
    },
    /// Forced promotion of this replica (its primary is gone).
    Promote {
        #[arg(long)]
        volume: String,
        #[arg(long)]
        epoch: u64,
    },
    /// Write `--count` blocks of `--block-size` bytes with `--depth` in
    /// flight (sequential offsets, wrapping at the volume size); print
    /// throughput and latency.
    Bench {
        #[arg(long)]
        volume: String,
        #[arg(long, default_value_t = 1000)]
        count: u64,
        #[arg(long, default_value_t = 65536)]
        block_size: usize,
        #[arg(long, default_value_t = 8)]
        depth: usize,
        #[arg(long)]
        epoch: Option<u64>,
    },
    /// Replica status (all replicas without --volume).
    Status {
        #[arg(long)]
        volume: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

async fn connect(args: &AdminArgs) -> anyhow::Result<StorageClient<Channel>> {
    let channel = args
        .tls
        .dialer()?
        .endpoint(&args.endpoint)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connect to {}", args.endpoint))?;
    Ok(StorageClient::new(channel)
        .max_decoding_message_size(crate::storage::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::storage::MAX_MESSAGE_BYTES))
}

fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

async fn held_epoch(
    c: &mut StorageClient<Channel>,
    volume: &str,
    given: Option<u64>,
) -> anyhow::Result<u64> {
    if let Some(e) = given {
        return Ok(e);
    }
    let st = c
        .get_replica(GetReplicaRequest {
            volume_id: volume.into(),
        })
        .await
        .map_err(status_err)?;
    Ok(st.into_inner().epoch)
}

fn parse_member(s: &str) -> anyhow::Result<Member> {
    let (dc, endpoint) = s
        .split_once('=')
        .with_context(|| format!("--member {s:?} must be DC=ENDPOINT"))?;
    Ok(Member {
        data_center: dc.into(),
        endpoint: endpoint.into(),
    })
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let mut c = connect(&args).await?;
    match &args.command {
        AdminCommand::Info => {
            let i = c
                .get_info(GetInfoRequest {})
                .await
                .map_err(status_err)?
                .into_inner();
            println!(
                "data_center={} node={} endpoint={} capacity={} free={} ready={}",
                i.data_center, i.node, i.endpoint, i.capacity_bytes, i.free_bytes, i.ready
            );
        }
        AdminCommand::Create { volume, size } => {
            let st = c
                .create_replica(CreateReplicaRequest {
                    volume_id: volume.clone(),
                    size_bytes: *size,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            print_table(&[st]);
        }
        AdminCommand::Delete { volume } => {
            c.delete_replica(DeleteReplicaRequest {
                volume_id: volume.clone(),
            })
            .await
            .map_err(status_err)?;
            println!("deleted {volume}");
        }
        AdminCommand::Expand { volume, size } => {
            let st = c
                .expand_replica(ExpandReplicaRequest {
                    volume_id: volume.clone(),
                    size_bytes: *size,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            print_table(&[st]);
        }
        AdminCommand::Configure {
            volume,
            members,
            primary,
            epoch,
            transfer,
            sync_level,
            policy,
            max_lag_bytes,
            max_lag_seconds,
        } => {
            let members = members
                .iter()
                .map(|m| parse_member(m))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let group = GroupSpec {
                members,
                primary: primary.clone(),
                epoch: *epoch,
                transfer_type: match transfer {
                    Transfer::Sync => TransferType::Sync,
                    Transfer::Async => TransferType::Async,
                } as i32,
                failure_policy: match policy {
                    Policy::Block => FailurePolicy::Block,
                    Policy::Degrade => FailurePolicy::Degrade,
                } as i32,
                max_lag_bytes: *max_lag_bytes,
                max_lag_seconds: *max_lag_seconds,
                sync_level: match sync_level {
                    Level::Write => SyncLevel::Write,
                    Level::Flush => SyncLevel::Flush,
                } as i32,
            };
            let st = c
                .configure_group(ConfigureGroupRequest {
                    volume_id: volume.clone(),
                    group: Some(group),
                })
                .await
                .map_err(status_err)?
                .into_inner();
            print_table(&[st]);
        }
        AdminCommand::Write {
            volume,
            offset,
            file,
            data,
            epoch,
            fua,
        } => {
            let bytes = match (file, data) {
                (Some(f), _) => {
                    std::fs::read(f).with_context(|| format!("read {}", f.display()))?
                }
                (None, Some(d)) => d.clone().into_bytes(),
                (None, None) => anyhow::bail!("give --file or --data"),
            };
            let epoch = held_epoch(&mut c, volume, *epoch).await?;
            let len = bytes.len();
            let r = c
                .write(WriteRequest {
                    volume_id: volume.clone(),
                    epoch,
                    offset: *offset,
                    data: bytes,
                    fua: *fua,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            println!("wrote {len} bytes at {offset}: seq {}", r.seq);
        }
        AdminCommand::Read {
            volume,
            offset,
            length,
            epoch,
            any_role,
            out,
        } => {
            let req = ReadRequest {
                volume_id: volume.clone(),
                epoch: if *any_role {
                    0
                } else {
                    held_epoch(&mut c, volume, *epoch).await?
                },
                offset: *offset,
                length: *length,
            };
            let r = if *any_role {
                c.read_replica(req).await
            } else {
                c.read(req).await
            };
            let data = r.map_err(status_err)?.into_inner().data;
            match out {
                Some(p) => {
                    std::fs::write(p, &data).with_context(|| format!("write {}", p.display()))?
                }
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&data).context("stdout")?;
                }
            }
        }
        AdminCommand::Flush { volume, epoch } => {
            let epoch = held_epoch(&mut c, volume, *epoch).await?;
            let r = c
                .flush(FlushRequest {
                    volume_id: volume.clone(),
                    epoch,
                })
                .await
                .map_err(status_err)?;
            println!("durable seq {}", r.into_inner().durable_seq);
        }
        AdminCommand::Transfer {
            volume,
            target,
            epoch,
        } => {
            let new_epoch = match epoch {
                Some(e) => *e,
                None => held_epoch(&mut c, volume, None).await? + 1,
            };
            let st = c
                .transfer_primary(TransferPrimaryRequest {
                    volume_id: volume.clone(),
                    target: target.clone(),
                    new_epoch,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            print_table(&[st]);
        }
        AdminCommand::Promote { volume, epoch } => {
            let st = c
                .promote(PromoteRequest {
                    volume_id: volume.clone(),
                    new_epoch: *epoch,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            print_table(&[st]);
        }
        AdminCommand::Bench {
            volume,
            count,
            block_size,
            depth,
            epoch,
        } => {
            bench(&mut c, volume, *count, *block_size, (*depth).max(1), *epoch).await?;
        }
        AdminCommand::Status { volume, json } => {
            let replicas = match volume {
                Some(v) => vec![
                    c.get_replica(GetReplicaRequest {
                        volume_id: v.clone(),
                    })
                    .await
                    .map_err(status_err)?
                    .into_inner(),
                ],
                None => {
                    c.list_replicas(ListReplicasRequest {})
                        .await
                        .map_err(status_err)?
                        .into_inner()
                        .replicas
                }
            };
            if *json {
                let v: Vec<serde_json::Value> = replicas.iter().map(status_json).collect();
                let out = if volume.is_some() {
                    v.into_iter().next().unwrap_or_default()
                } else {
                    v.into()
                };
                println!("{}", serde_json::to_string_pretty(&out).context("json")?);
            } else {
                print_table(&replicas);
            }
        }
    }
    Ok(())
}

fn role_name(r: i32) -> &'static str {
    match Role::try_from(r) {
        Ok(Role::Primary) => "primary",
        Ok(Role::Secondary) => "secondary",
        Ok(Role::None) | Ok(Role::Unspecified) => "none",
        Err(_) => "unknown",
    }
}

fn state_name(s: i32) -> &'static str {
    match MemberState::try_from(s) {
        Ok(MemberState::InSync) => "InSync",
        Ok(MemberState::Lagging) => "Lagging",
        Ok(MemberState::Resyncing) => "Resyncing",
        Ok(MemberState::Unreachable) => "Unreachable",
        _ => "Unknown",
    }
}

fn status_json(s: &ReplicaStatus) -> serde_json::Value {
    serde_json::json!({
        "volume_id": s.volume_id,
        "size_bytes": s.size_bytes,
        "role": role_name(s.role),
        "epoch": s.epoch,
        "written_seq": s.written_seq,
        "durable_seq": s.durable_seq,
        "fenced": s.fenced,
        "last_transfer_millis": s.last_transfer_millis,
        "primary": s.group.as_ref().map(|g| g.primary.clone()),
        "members": s.members.iter().map(|m| serde_json::json!({
            "data_center": m.data_center,
            "state": state_name(m.state),
            "lag_bytes": m.lag_bytes,
            "lag_seconds": m.lag_seconds,
            "applied_seq": m.applied_seq,
            "message": m.message,
        })).collect::<Vec<_>>(),
    })
}

fn print_table(replicas: &[ReplicaStatus]) {
    println!(
        "{:<24} {:>12} {:<10} {:>6} {:>10} {:>10} {:<8} PRIMARY",
        "VOLUME", "SIZE", "ROLE", "EPOCH", "WRITTEN", "DURABLE", "FENCED"
    );
    for s in replicas {
        let primary = s.group.as_ref().map(|g| g.primary.as_str()).unwrap_or("-");
        println!(
            "{:<24} {:>12} {:<10} {:>6} {:>10} {:>10} {:<8} {}",
            s.volume_id,
            s.size_bytes,
            role_name(s.role),
            s.epoch,
            s.written_seq,
            s.durable_seq,
            s.fenced,
            primary
        );
        for m in &s.members {
            println!(
                "  member {:<12} {:<12} applied {:>10} lag {:>10} B {:>8.3} s {}",
                m.data_center,
                state_name(m.state),
                m.applied_seq,
                m.lag_bytes,
                m.lag_seconds,
                m.message
            );
        }
    }
}

async fn bench(
    c: &mut StorageClient<Channel>,
    volume: &str,
    count: u64,
    block_size: usize,
    depth: usize,
    epoch: Option<u64>,
) -> anyhow::Result<()> {
    let status = c
        .get_replica(GetReplicaRequest {
            volume_id: volume.into(),
        })
        .await
        .map_err(status_err)?;
    let status = status.into_inner();
    let epoch = epoch.unwrap_or(status.epoch);
    let blocks = (status.size_bytes / block_size as u64).max(1);
    let data: Vec<u8> = (0..block_size).map(|i| (i % 251) as u8).collect();
    let started = std::time::Instant::now();
    let mut latencies = Vec::with_capacity(count as usize);
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut next = 0u64;
    use futures::StreamExt;
    while next < count || !in_flight.is_empty() {
        while next < count && in_flight.len() < depth {
            let mut client = c.clone();
            let req = WriteRequest {
                volume_id: volume.into(),
                epoch,
                offset: (next % blocks) * block_size as u64,
                data: data.clone(),
                fua: false,
            };
            in_flight.push(async move {
                let t = std::time::Instant::now();
                client.write(req).await.map(|_| t.elapsed())
            });
            next += 1;
        }
        if let Some(r) = in_flight.next().await {
            latencies.push(r.map_err(status_err)?);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct =
        |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1000.0;
    println!(
        "writes={count} block={block_size} depth={depth} seconds={secs:.3} MiB/s={:.1} IOPS={:.0} p50_ms={:.3} p99_ms={:.3}",
        (count as f64 * block_size as f64) / secs / (1 << 20) as f64,
        count as f64 / secs,
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}
