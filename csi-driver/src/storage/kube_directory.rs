//! The engine's [`Directory`] kept in the Kubernetes API: each volume's
//! CopyVolumeGroup (`roam-csi storage --directory kubernetes`, what the
//! chart's node plugins run with). The rules are `roam_crds::directory`'s,
//! the same ones the operator's failover keeps.
//!
//! - A lease renewal is a read of the group from the API server (a GET with
//!   no resourceVersion, served from etcd), so it sees a fence recorded
//!   before it began; the lease counts from before the read.
//! - A record is a status patch carrying the resourceVersion that was read:
//!   it lands only on the group as checked, and a conflict reads again.
//!   Only a patch the API server accepted counts as recorded.
//!
//! Every call is bounded ([`CALL_TIMEOUT`]): an API server that does not
//! answer is `Unreachable`, so a write waiting for a record fails instead of
//! going on, and renewals that cannot be read let the lease run out.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use roam_crds::CopyVolumeGroup;
use roam_crds::directory::{PRIMARY_LEASE, Record, Superseded, group_of_volume};
use roam_engine::directory::{Directory, DirectoryError};
use serde_json::json;

/// Longest wait for one directory call, retries included. Well inside
/// [`PRIMARY_LEASE`], so a slow answer leaves time for another renewal.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// How often a record is tried again when the group changed under it.
const CONFLICT_ATTEMPTS: usize = 5;

/// Field manager of the records, apart from the operator's status writes.
const MANAGER: &str = "roam-directory";

pub struct KubeDirectory {
    client: Client,
}

impl KubeDirectory {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn api(&self, volume: &str) -> Result<(Api<CopyVolumeGroup>, String), DirectoryError> {
        let (ns, name) = group_of_volume(volume).ok_or_else(|| DirectoryError::Unreachable {
            volume: volume.into(),
            reason: "not a real volume id (<namespace>.<name>)".into(),
        })?;
        Ok((Api::namespaced(self.client.clone(), ns), name.to_owned()))
    }

    async fn bounded<T>(
        volume: &str,
        call: impl std::future::Future<Output = Result<T, DirectoryError>>,
    ) -> Result<T, DirectoryError> {
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| {
                Err(DirectoryError::Unreachable {
                    volume: volume.into(),
                    reason: format!("no answer from the API server within {CALL_TIMEOUT:?}"),
                })
            })
    }

    async fn read(
        api: &Api<CopyVolumeGroup>,
        name: &str,
        volume: &str,
    ) -> Result<CopyVolumeGroup, DirectoryError> {
        api.get(name).await.map_err(|e| unreachable(volume, &e))
    }

    async fn record(
        &self,
        volume: &str,
        epoch: u64,
        member: &str,
        in_sync: bool,
    ) -> Result<(), DirectoryError> {
        let (api, name) = self.api(volume)?;
        Self::bounded(volume, async {
            for _ in 0..CONFLICT_ATTEMPTS {
                let g = Self::read(&api, &name, volume).await?;
                let record = Record::of(&g);
                record
                    .check_record(epoch)
                    .map_err(|s| superseded(volume, s))?;
                let mut out: BTreeSet<String> = record.out_of_sync.clone();
                let changed = if in_sync {
                    out.remove(member)
                } else {
                    out.insert(member.to_owned())
                };
                if !changed {
                    return Ok(());
                }
                let patch = json!({
                    "metadata": {"resourceVersion": g.resource_version()},
                    "status": {"outOfSync": out},
                });
                match api
                    .patch_status(
                        &name,
                        &PatchParams {
                            field_manager: Some(MANAGER.into()),
                            ..Default::default()
                        },
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(_) => {
                        tracing::info!(volume, epoch, member, in_sync, "recorded in the directory");
                        return Ok(());
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => continue,
                    Err(e) => return Err(unreachable(volume, &e)),
                }
            }
            Err(DirectoryError::Unreachable {
                volume: volume.into(),
                reason: format!("the group changed under {CONFLICT_ATTEMPTS} attempts to record"),
            })
        })
        .await
    }
}

fn unreachable(volume: &str, e: &kube::Error) -> DirectoryError {
    DirectoryError::Unreachable {
        volume: volume.into(),
        reason: e.to_string(),
    }
}

fn superseded(volume: &str, s: Superseded) -> DirectoryError {
    DirectoryError::Superseded {
        volume: volume.into(),
        held: s.held,
        asked: s.asked,
    }
}

#[async_trait]
impl Directory for KubeDirectory {
    async fn record_out_of_sync(
        &self,
        volume: &str,
        epoch: u64,
        member: &str,
    ) -> Result<(), DirectoryError> {
        self.record(volume, epoch, member, false).await
    }

    async fn record_in_sync(
        &self,
        volume: &str,
        epoch: u64,
        member: &str,
    ) -> Result<(), DirectoryError> {
        self.record(volume, epoch, member, true).await
    }

    async fn renew_lease(
        &self,
        volume: &str,
        epoch: u64,
        holder: &str,
    ) -> Result<Duration, DirectoryError> {
        let (api, name) = self.api(volume)?;
        Self::bounded(volume, async {
            let g = Self::read(&api, &name, volume).await?;
            Record::of(&g)
                .check_lease(epoch, holder)
                .map_err(|s| superseded(volume, s))?;
            Ok(PRIMARY_LEASE)
        })
        .await
    }
}
