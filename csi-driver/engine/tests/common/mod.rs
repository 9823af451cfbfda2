//! A few replicas in one process, joined by the in-process transport, on
//! real files in a temporary directory.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use roam_engine::backend::ReplicaDir;
use roam_engine::transport::local::LocalTransport;
use roam_engine::{
    EngineConfig, FailurePolicy, GroupSpec, MemberSpec, MemberState, Role, TransferType, Volume,
};

pub const VOL: &str = "pvc-test";

pub struct Cluster {
    pub net: LocalTransport,
    pub root: tempfile::TempDir,
    pub vols: BTreeMap<String, Volume>,
    pub config: EngineConfig,
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
        };
        for dc in dcs {
            c.dir(dc)
                .create_replica(VOL, dc, size)
                .expect("create replica");
            c.open(dc).await;
        }
        c
    }

    pub fn dir(&self, dc: &str) -> ReplicaDir {
        ReplicaDir::new(&self.root.path().join(dc), VOL)
    }

    pub async fn open(&mut self, dc: &str) {
        let files = self.dir(dc).files().expect("files");
        let vol = Volume::open(VOL, files, Arc::new(self.net.clone()), self.config.clone())
            .await
            .expect("open");
        self.net.register(dc, vol.clone());
        self.vols.insert(dc.to_string(), vol);
    }

    /// Stop a replica as a crash would: nothing more is accepted or sent.
    pub async fn crash(&mut self, dc: &str) {
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
