//! The directory, as the fault campaign's operator (and the data-plane
//! tests) keep it: one volume's record
//! (epoch, the primary recorded for it, the members recorded out of sync,
//! the leases granted), served to the storage systems over
//! `roam/directory.proto` from the operator's side of the network, so that a
//! partition that cuts a storage system off from the operator cuts it off
//! from the directory too.
//!
//! The rules are `roam_crds::directory`'s, which the Kubernetes directory
//! and the operator keep too: a call at an epoch older than the recorded one
//! is refused (the caller fences itself); a lease at the recorded epoch goes
//! only to the primary recorded for it; a failover first moves the recorded
//! epoch (no lease is granted at the old one from then on) and then waits
//! until every lease granted to anyone but the candidate has run out.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roam_crds::directory as rules;
use roam_proto::DIRECTORY_HELD_EPOCH_KEY;
use roam_proto::directory::directory_server::{Directory, DirectoryServer};
use roam_proto::directory::{
    RecordMemberRequest, RecordMemberResponse, RenewLeaseRequest, RenewLeaseResponse,
};
use tonic::{Request, Response, Status};

/// How long a granted lease holds. The failover waits it out after the
/// grace period, so together they bound how long a lost primary stalls.
pub const LEASE: Duration = Duration::from_millis(1000);

struct Record {
    /// Held epoch, its primary and the out-of-sync members, judged by the
    /// same rules as the Kubernetes directory's.
    held: rules::Record,
    /// Until when (by this clock) each holder's last lease holds.
    granted: HashMap<String, Instant>,
}

impl Record {
    /// Intent of a change of primary: `primary` at `epoch`, only a member
    /// of the recorded in-sync set, only above the recorded epoch.
    fn move_to(&mut self, primary: &str, epoch: u64) -> Result<(), String> {
        if !self.held.in_sync(primary) {
            return Err(format!(
                "{primary} is recorded out of sync ({:?})",
                self.held.out_of_sync
            ));
        }
        if epoch <= self.held.epoch {
            return Err(format!(
                "epoch {epoch} is not above the recorded {}",
                self.held.epoch
            ));
        }
        self.held.epoch = epoch;
        self.held.primary = Some(primary.to_owned());
        Ok(())
    }
}

/// One volume's record. Cheap to clone.
#[derive(Clone)]
pub struct DirectoryRecord(Arc<Mutex<Record>>);

impl DirectoryRecord {
    pub fn new(epoch: u64, primary: &str) -> Self {
        DirectoryRecord(Arc::new(Mutex::new(Record {
            held: rules::Record {
                epoch,
                primary: Some(primary.to_owned()),
                out_of_sync: BTreeSet::new(),
            },
            granted: HashMap::new(),
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn out_of_sync(&self) -> BTreeSet<String> {
        self.lock().held.out_of_sync.clone()
    }

    pub fn epoch(&self) -> u64 {
        self.lock().held.epoch
    }

    /// The storage systems report `primary` at `epoch` (a hand-over whose
    /// answer was lost): record it, unless the record is newer.
    pub fn record_primary(&self, epoch: u64, primary: &str) {
        let mut r = self.lock();
        if epoch > r.held.epoch {
            r.held.epoch = epoch;
            r.held.primary = Some(primary.to_owned());
        }
    }

    /// A planned change of primary to `target` at `epoch`, recorded before
    /// the hand-over is asked for. No lease waits: the hand-over fences the
    /// old primary before the target takes a write; from now on the old
    /// one is granted nothing at its epoch (so a restart that forgot the
    /// fence acknowledges nothing either).
    pub fn begin_transfer(&self, target: &str, epoch: u64) -> Result<(), String> {
        self.lock().move_to(target, epoch)
    }

    /// The first half of a failover to `candidate` at `epoch`: refused
    /// unless the candidate is in the recorded in-sync set; otherwise the
    /// epoch moves (no lease is granted at an older one from now on) and
    /// the answer is the instant every lease granted to another holder has
    /// run out. The caller promotes only after it.
    pub fn begin_failover(&self, candidate: &str, epoch: u64) -> Result<Instant, String> {
        let mut r = self.lock();
        r.move_to(candidate, epoch)?;
        let now = Instant::now();
        Ok(r.granted
            .iter()
            .filter(|(holder, _)| *holder != candidate)
            .map(|(_, until)| *until)
            .max()
            .unwrap_or(now)
            .max(now))
    }
}

/// The refusal as `roam/directory.proto` carries it.
fn superseded(refused: rules::Superseded) -> Status {
    let mut s = Status::failed_precondition(refused.to_string());
    if let Ok(v) = refused.held.to_string().parse() {
        s.metadata_mut().insert(DIRECTORY_HELD_EPOCH_KEY, v);
    }
    s
}

#[tonic::async_trait]
impl Directory for DirectoryRecord {
    async fn renew_lease(
        &self,
        req: Request<RenewLeaseRequest>,
    ) -> Result<Response<RenewLeaseResponse>, Status> {
        let req = req.into_inner();
        let mut r = self.lock();
        r.held
            .check_lease(req.epoch, &req.holder)
            .map_err(superseded)?;
        let until = Instant::now() + LEASE;
        let held = r.granted.entry(req.holder).or_insert(until);
        *held = (*held).max(until);
        Ok(Response::new(RenewLeaseResponse {
            lease_millis: LEASE.as_millis() as u64,
        }))
    }

    async fn record_out_of_sync(
        &self,
        req: Request<RecordMemberRequest>,
    ) -> Result<Response<RecordMemberResponse>, Status> {
        self.record(req.into_inner(), false)
    }

    async fn record_in_sync(
        &self,
        req: Request<RecordMemberRequest>,
    ) -> Result<Response<RecordMemberResponse>, Status> {
        self.record(req.into_inner(), true)
    }
}

impl DirectoryRecord {
    /// Records a member out of (or back in) the in-sync set, at an epoch
    /// not older than the recorded one.
    fn record(
        &self,
        req: RecordMemberRequest,
        in_sync: bool,
    ) -> Result<Response<RecordMemberResponse>, Status> {
        let mut r = self.lock();
        r.held.check_record(req.epoch).map_err(superseded)?;
        if in_sync {
            r.held.out_of_sync.remove(&req.member);
        } else {
            r.held.out_of_sync.insert(req.member);
        }
        Ok(Response::new(RecordMemberResponse {}))
    }
}

/// Serves `record` on `addr` (port 0: any) until the returned handle is
/// aborted; returns the address bound.
pub async fn serve(
    record: DirectoryRecord,
    addr: SocketAddr,
) -> (SocketAddr, tokio::task::AbortHandle) {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind the directory");
    let bound = listener.local_addr().expect("directory address");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(DirectoryServer::new(record))
            .serve_with_incoming(incoming)
            .await;
    });
    (bound, task.abort_handle())
}
