//! A few replicas in one process, joined by the in-process transport, on
//! real files in a temporary directory.
#![allow(dead_code)]

pub mod directory;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use roam_engine::backend::ReplicaDir;
use roam_engine::backend::sim::{CutReport, SimMachine};
use roam_engine::transport::local::LocalTransport;
use roam_engine::{
    EngineConfig, FailurePolicy, GroupSpec, MemberSpec, MemberState, Role, SyncLevel, TransferType,
    Volume,
};

pub const VOL: &str = "pvc-test";

pub struct Cluster {
    pub net: LocalTransport,
    pub root: tempfile::TempDir,
    pub vols: BTreeMap<String, Volume>,
    pub config: EngineConfig,
    /// Data centers whose replica lives on a simulated machine (power cuts).
    pub sims: BTreeMap<String, SimMachine>,
}

pub fn fast_config() -> EngineConfig {
    EngineConfig {
        ack_timeout: Duration::from_millis(1500),
        transfer_timeout: Duration::from_secs(5),
        max_backoff: Duration::from_millis(100),
        ..Default::default()
    }
}

impl Cluster {
    pub async fn new(dcs: &[&str], size: u64, config: EngineConfig) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut c = Cluster {
            net: LocalTransport::default(),
            root: tempfile::tempdir().expect("tempdir"),
            vols: BTreeMap::new(),
            config,
            sims: BTreeMap::new(),
        };
        for dc in dcs {
            c.dir(dc)
                .create_replica(VOL, dc, size)
                .expect("create replica");
            c.open(dc).await;
        }
        c
    }

    /// A cluster whose replicas live on simulated machines: a crash can be a
    /// power cut that drops every unsynced write.
    pub async fn new_sim(dcs: &[&str], size: u64, config: EngineConfig) -> Self {
        let mut c = Self::new(&[], size, config).await;
        for dc in dcs {
            c.add_sim(dc, size).await;
        }
        c
    }

    /// A Sync group of `a` (primary) and `b` on simulated machines, under
    /// `policy`, whose primary took one write (block 0, `pattern(1, 4096)`).
    pub async fn sim_sync_pair(size: u64, policy: FailurePolicy) -> Self {
        let c = Self::new_sim(&["a", "b"], size, fast_config()).await;
        c.configure(&c.group("a", 1, TransferType::Sync, policy))
            .await;
        c.v("a")
            .write(0, pattern(1, 4096), false)
            .await
            .expect("first write");
        c
    }

    /// A new, empty replica on a simulated machine in `dc` (replacing any).
    pub async fn add_sim(&mut self, dc: &str, size: u64) {
        std::fs::create_dir_all(self.root.path().join(dc)).expect("dc dir");
        self.sims
            .insert(dc.to_string(), SimMachine::replica(VOL, dc, size));
        self.open(dc).await;
    }

    /// Cut the power of `dc`'s machine: unsynced writes are gone, the last
    /// one maybe torn. The replica is down until [`Cluster::open`].
    pub async fn power_cut(&mut self, dc: &str, tear: Option<f64>) -> CutReport {
        self.net.unregister(dc, VOL);
        let report = self.sims[dc].power_cut(tear);
        if let Some(v) = self.vols.remove(dc) {
            // Its files are dead: closing makes nothing more durable.
            v.close().await;
        }
        report
    }

    pub fn dir(&self, dc: &str) -> ReplicaDir {
        ReplicaDir::new(&self.root.path().join(dc), VOL)
    }

    pub async fn open(&mut self, dc: &str) {
        let files = match self.sims.get(dc) {
            Some(sim) => sim.files(),
            None => self.dir(dc).files().expect("files"),
        };
        let vol = Volume::open(VOL, files, Arc::new(self.net.clone()), self.config.clone())
            .await
            .expect("open");
        self.net.register(dc, vol.clone());
        self.vols.insert(dc.to_string(), vol);
    }

    /// Stop a replica as kill -9 would: nothing more is accepted or sent;
    /// on a simulated machine its files die at once (what it wrote stays in
    /// the page cache), on real files it is closed.
    pub async fn crash(&mut self, dc: &str) {
        if let Some(sim) = self.sims.get(dc) {
            self.net.unregister(dc, VOL);
            sim.process_crash();
            if let Some(v) = self.vols.remove(dc) {
                v.close().await;
            }
            return;
        }
        self.net.unregister(dc, VOL);
        if let Some(v) = self.vols.remove(dc) {
            v.close().await;
        }
    }

    pub fn v(&self, dc: &str) -> &Volume {
        &self.vols[dc]
    }

    pub fn group(
        &self,
        primary: &str,
        epoch: u64,
        transfer: TransferType,
        policy: FailurePolicy,
    ) -> GroupSpec {
        GroupSpec {
            members: self
                .dcs()
                .into_iter()
                .map(|dc| MemberSpec {
                    data_center: dc.clone(),
                    endpoint: dc,
                })
                .collect(),
            primary: primary.to_string(),
            epoch,
            transfer_type: transfer,
            sync_level: SyncLevel::Write,
            failure_policy: policy,
            max_lag_bytes: 0,
            max_lag_seconds: 0,
        }
    }

    pub fn dcs(&self) -> Vec<String> {
        let mut all: Vec<String> = self.vols.keys().cloned().collect();
        for entry in std::fs::read_dir(self.root.path()).expect("root") {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .to_string();
            if !all.contains(&name) {
                all.push(name);
            }
        }
        all.sort();
        all
    }

    pub async fn configure(&self, spec: &GroupSpec) {
        for v in self.vols.values() {
            v.configure(spec.clone()).await.expect("configure");
        }
    }

    /// Wait until the primary reports every member in sync at its written position.
    pub async fn wait_in_sync(&self, primary: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let st = self.v(primary).status();
            assert_eq!(st.role, Role::Primary, "{primary} is not primary");
            let done = !st.members.is_empty()
                && st
                    .members
                    .iter()
                    .all(|m| m.state == MemberState::InSync && m.applied_seq == st.written_seq);
            if done {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("members never got in sync: {:?}", st.members);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every replica holds the same bytes as `expected`.
    pub async fn assert_all_hold(&self, expected: &[u8]) {
        for (dc, v) in &self.vols {
            let got = v.read(0, expected.len() as u64).await.expect("read");
            assert!(
                got[..] == expected[..],
                "{dc} differs from what was acknowledged"
            );
        }
    }
}

pub fn pattern(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}
