//! An in-memory directory with the API server's one guarantee that matters
//! here: a write with a precondition on the epoch fails once the epoch moved.
//! Members can be cut off from it, and an "operator" promotes only a member
//! of the recorded in-sync set, after waiting out the primary's lease.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use roam_engine::directory::{Directory, DirectoryError};

#[derive(Default)]
struct State {
    epoch: u64,
    out_of_sync: BTreeSet<String>,
    /// Last renewal the directory granted, and its length.
    lease: Option<(String, Instant, Duration)>,
    cut_off: HashSet<String>,
}

/// One volume's record. Cheap to clone.
#[derive(Clone)]
pub struct MemDirectory {
    s: Arc<Mutex<State>>,
    lease: Duration,
}

/// What one data center sees of the directory.
pub struct Seen {
    dir: MemDirectory,
    dc: String,
}

impl MemDirectory {
    pub fn new(epoch: u64, lease: Duration) -> Self {
        MemDirectory {
            s: Arc::new(Mutex::new(State {
                epoch,
                ..Default::default()
            })),
            lease,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.s.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn seen_from(&self, dc: &str) -> Arc<Seen> {
        Arc::new(Seen {
            dir: self.clone(),
            dc: dc.to_string(),
        })
    }

    /// Cut `dc` off from the directory (true) or reconnect it.
    pub fn cut_off(&self, dc: &str, cut: bool) {
        let mut s = self.lock();
        if cut {
            s.cut_off.insert(dc.to_string());
        } else {
            s.cut_off.remove(dc);
        }
    }

    pub fn out_of_sync(&self) -> BTreeSet<String> {
        self.lock().out_of_sync.clone()
    }

    /// The operator's failover: wait until the primary's last lease has run
    /// out (by the directory's clock), then move the epoch to `new_epoch`
    /// for `candidate`, which must be in the recorded in-sync set. Returns
    /// when the new epoch is recorded; the caller then promotes.
    pub async fn fail_over(&self, candidate: &str, new_epoch: u64) -> Result<(), String> {
        let deadline = {
            let s = self.lock();
            if s.out_of_sync.contains(candidate) {
                return Err(format!("{candidate} is not in the recorded in-sync set"));
            }
            s.lease.as_ref().map(|(_, at, d)| *at + *d)
        };
        if let Some(until) = deadline {
            tokio::time::sleep_until(until.into()).await;
        }
        let mut s = self.lock();
        s.epoch = new_epoch;
        s.lease = None;
        Ok(())
    }
}

impl Seen {
    fn check(
        &self,
        volume: &str,
        epoch: u64,
    ) -> Result<std::sync::MutexGuard<'_, State>, DirectoryError> {
        let s = self.dir.lock();
        if s.cut_off.contains(&self.dc) {
            return Err(DirectoryError::Unreachable {
                volume: volume.into(),
                reason: format!("{} is cut off", self.dc),
            });
        }
        if s.epoch > epoch {
            return Err(DirectoryError::Superseded {
                volume: volume.into(),
                held: s.epoch,
                asked: epoch,
            });
        }
        Ok(s)
    }
}

#[async_trait]
impl Directory for Seen {
    async fn record_out_of_sync(
        &self,
        volume: &str,
        epoch: u64,
        member: &str,
    ) -> Result<(), DirectoryError> {
        self.check(volume, epoch)?
            .out_of_sync
            .insert(member.to_string());
        Ok(())
    }
    async fn record_in_sync(
        &self,
        volume: &str,
        epoch: u64,
        member: &str,
    ) -> Result<(), DirectoryError> {
        self.check(volume, epoch)?.out_of_sync.remove(member);
        Ok(())
    }
    async fn renew_lease(
        &self,
        volume: &str,
        epoch: u64,
        holder: &str,
    ) -> Result<Duration, DirectoryError> {
        let lease = self.dir.lease;
        let mut s = self.check(volume, epoch)?;
        s.lease = Some((holder.to_string(), Instant::now(), lease));
        Ok(lease)
    }
}
