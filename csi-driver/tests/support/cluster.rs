//! Storage systems as separate processes, one per data center, each in its
//! own network namespace, with a delay proxy in front of its peer port.
//!
//! Node `i` listens on `<ip>:7100` (host I/O and admin calls from the test,
//! undelayed: a host talks to its own data center) and advertises
//! `<ip>:7101`, the delay proxy, to its peers, so every replication message
//! crosses the added delay once per direction.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roam_proto::storage::storage_client::StorageClient;
use roam_proto::storage::{
    ConfigureGroupRequest, CreateReplicaRequest, FailurePolicy, GetInfoRequest, GetReplicaRequest,
    GroupSpec, Member, ReplicaStatus, SyncLevel, TransferType,
};
use tonic::transport::Channel;

use super::netns::Network;

pub const PORT: u16 = 7100;
pub const PEER_PORT: u16 = 7101;

pub struct StorageNode {
    pub index: u8,
    pub data_center: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    pub data_dir: PathBuf,
    log: PathBuf,
    /// More flags for the storage system, at every start.
    extra_args: Vec<String>,
    server: Option<Child>,
    proxy: Option<Child>,
}

impl StorageNode {
    /// Endpoint the test uses (host I/O, admin), without added delay.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{PORT}", self.ip)
    }

    /// Endpoint the peers use, through the delay proxy.
    pub fn peer_endpoint(&self) -> String {
        format!("http://{}:{PEER_PORT}", self.ip)
    }

    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    fn start_server(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open server log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespace])
            .arg(env!("CARGO_BIN_EXE_roam-csi"))
            .arg("storage")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &format!("0.0.0.0:{PORT}")])
            .args(["--advertise", &self.peer_endpoint()])
            .args(["--data-center", &self.data_center])
            .args(["--node", &format!("node-{}", self.index)])
            .arg("--insecure")
            // Short, so that Block and Degrade decide within a test's patience.
            .args(["--ack-timeout-ms", "2000"])
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start roam-csi storage");
        self.server = Some(child);
    }

    fn start_proxy(&mut self, delay_us: u64) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespace])
            .arg(env!("CARGO_BIN_EXE_roam-delay-proxy"))
            .args(["--listen", &format!("{}:{PEER_PORT}", self.ip)])
            .args(["--upstream", &format!("127.0.0.1:{PORT}")])
            .args(["--delay-us", &delay_us.to_string()])
            .arg("--stats-file")
            .arg(self.proxy_stats())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start roam-delay-proxy");
        self.proxy = Some(child);
    }

    /// kill -9 of the storage system (its proxy stays, refusing connections
    /// upstream as a dead host's port would).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            super::sh("kill", &[&format!("-{signal}"), &pid.to_string()]).expect("signal");
        }
    }

    /// Starts the storage system again on the same data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.start_server();
    }

    fn proxy_stats(&self) -> PathBuf {
        self.log
            .with_file_name(format!("proxy-{}.stats", self.index))
    }

    /// Bytes the peers have sent to this node through its proxy so far
    /// (replication traffic into this data center).
    pub async fn peer_bytes_in(&self) -> u64 {
        // The proxy rewrites the file every 100 ms.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let text = std::fs::read_to_string(self.proxy_stats()).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("to_upstream="))
            .and_then(|v| v.parse().ok())
            .expect("proxy byte counter")
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for StorageNode {
    fn drop(&mut self) {
        for child in [self.server.take(), self.proxy.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three (or more) storage systems on a private network. Fields drop in
/// order: processes first, then the network.
pub struct Cluster {
    pub nodes: Vec<StorageNode>,
    pub net: Network,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `count` storage systems (data centers `dc-0`, `dc-1`, ...), each
    /// behind a proxy adding `delay_us` per direction. `data_dirs` overrides a
    /// node's data directory (e.g. a small tmpfs).
    pub async fn start(count: u8, delay_us: u64, data_dirs: &[(u8, &Path)]) -> Self {
        Self::start_with(count, delay_us, data_dirs, |_| Vec::new()).await
    }

    /// [`Cluster::start`], each storage system with the flags `extra_args`
    /// gives for the network (e.g. a directory reached through it).
    pub async fn start_with(
        count: u8,
        delay_us: u64,
        data_dirs: &[(u8, &Path)],
        extra_args: impl Fn(&Network) -> Vec<String>,
    ) -> Self {
        // ROAM_KEEP_LOGS=1 keeps the storage systems' logs and data for a
        // post-mortem; the path is printed.
        let keep = std::env::var_os("ROAM_KEEP_LOGS").is_some();
        let dir = tempfile::Builder::new()
            .prefix("roam-storage.")
            .disable_cleanup(keep)
            .tempdir()
            .expect("tempdir");
        if keep {
            eprintln!("storage logs kept in {}", dir.path().display());
        }
        let mut net = Network::new();
        let mut nodes = Vec::new();
        for index in 0..count {
            let (namespace, ip) = net.add_namespace(index);
            let data_dir = data_dirs
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, p)| p.to_path_buf())
                .unwrap_or_else(|| dir.path().join(format!("data-{index}")));
            std::fs::create_dir_all(&data_dir).expect("data dir");
            let mut node = StorageNode {
                index,
                data_center: format!("dc-{index}"),
                namespace,
                ip,
                data_dir,
                log: dir.path().join(format!("storage-{index}.log")),
                extra_args: extra_args(&net),
                server: None,
                proxy: None,
            };
            node.start_proxy(delay_us);
            node.start_server();
            nodes.push(node);
        }
        let cluster = Cluster { nodes, net, dir };
        for i in 0..count as usize {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    /// Waits until node `i` answers GetInfo (panics with its log after 20 s).
    pub async fn wait_ready(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = self.try_client(i).await
                && c.get_info(GetInfoRequest {}).await.is_ok()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "storage system {i} not ready; log:\n{}",
                    self.nodes[i].log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn try_client(&self, i: usize) -> Result<StorageClient<Channel>, String> {
        let channel = tonic::transport::Endpoint::from_shared(self.nodes[i].endpoint())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("connect {}: {e}", self.nodes[i].endpoint()))?;
        Ok(StorageClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }

    pub async fn client(&self, i: usize) -> StorageClient<Channel> {
        self.try_client(i).await.expect("storage client")
    }

    pub fn group(
        &self,
        members: &[usize],
        primary: usize,
        epoch: u64,
        transfer: TransferType,
        policy: FailurePolicy,
    ) -> GroupSpec {
        GroupSpec {
            members: members
                .iter()
                .map(|i| Member {
                    data_center: self.nodes[*i].data_center.clone(),
                    endpoint: self.nodes[*i].peer_endpoint(),
                })
                .collect(),
            primary: self.nodes[primary].data_center.clone(),
            epoch,
            transfer_type: transfer as i32,
            failure_policy: policy as i32,
            max_lag_bytes: 0,
            max_lag_seconds: 0,
            sync_level: SyncLevel::Write as i32,
        }
    }

    /// Creates the replica on every member and sends them the group, the way
    /// the operator does.
    pub async fn create_volume(
        &self,
        volume: &str,
        size: u64,
        members: &[usize],
        group: GroupSpec,
    ) {
        for i in members {
            self.client(*i)
                .await
                .create_replica(CreateReplicaRequest {
                    volume_id: volume.into(),
                    size_bytes: size,
                })
                .await
                .unwrap_or_else(|s| panic!("CreateReplica on node {i}: {s}"));
        }
        for i in members {
            self.client(*i)
                .await
                .configure_group(ConfigureGroupRequest {
                    volume_id: volume.into(),
                    group: Some(group.clone()),
                })
                .await
                .unwrap_or_else(|s| panic!("ConfigureGroup on node {i}: {s}"));
        }
    }

    pub async fn status(&self, i: usize, volume: &str) -> ReplicaStatus {
        self.client(i)
            .await
            .get_replica(GetReplicaRequest {
                volume_id: volume.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("GetReplica on node {i}: {s}"))
            .into_inner()
    }

    /// Cuts node `a` off from node `b` (rules inside both namespaces).
    pub fn partition(&self, a: usize, b: usize) {
        Network::partition(&self.nodes[a].namespace, self.nodes[b].ip);
        Network::partition(&self.nodes[b].namespace, self.nodes[a].ip);
    }

    pub fn heal(&self, a: usize, b: usize) {
        Network::heal(&self.nodes[a].namespace);
        Network::heal(&self.nodes[b].namespace);
    }
}
