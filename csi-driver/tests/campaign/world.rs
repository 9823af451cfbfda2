//! The processes of one trial and the faults done to them: one storage system
//! per data center (separate processes, each in its network namespace, each
//! data directory on a small tmpfs of its own so that it can fill up), and a
//! namespace for the operator's side, whose calls reach each storage system
//! through a forwarder there, as theirs reach the directory it keeps
//! (`support/directory.rs`, served from this process). A partition can so cut a storage system off
//! from its peers, from the operator, or both, while the host (this process,
//! in the root namespace) still reaches it, as an application in the same
//! data center would.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use roam_proto::storage::storage_client::StorageClient;
use tonic::transport::Channel;

use crate::support::cluster::{Cluster, PORT};
use crate::support::directory::{self, DirectoryRecord};
use crate::support::netns::Network;
use crate::support::tmpfs::SmallTmpfs;

/// Port of the forwarder to storage system `i` in the operator's namespace.
const OPERATOR_PORT_BASE: u16 = 8100;
/// Namespace index of the operator's side (storage systems use 0, 1, ...).
const OPERATOR_INDEX: u8 = 9;
/// Port of the forwarder to the directory in the operator's namespace.
const DIRECTORY_PORT: u16 = 8200;

/// Addresses of one trial, cheap to clone: what the operator and the
/// workload need to reach the storage systems.
#[derive(Clone)]
pub struct Topology {
    pub data_centers: Vec<String>,
    /// How the host reaches storage system `i` (root namespace, direct).
    pub host: Vec<String>,
    /// How the operator reaches it (through its namespace).
    pub operator: Vec<String>,
    /// How peers reach it (its delay proxy).
    pub peer: Vec<String>,
}

impl Topology {
    pub fn len(&self) -> usize {
        self.host.len()
    }
}

/// A channel that connects when first used and again after a restart; every
/// call gives up after `timeout`.
pub fn channel(endpoint: &str, timeout: Duration) -> StorageClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect_lazy();
    StorageClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

pub struct World {
    forwarders: Vec<Child>,
    /// Serves the directory the storage systems reach (kept by the operator).
    serving_directory: tokio::task::AbortHandle,
    pub cluster: Cluster,
    pub topology: Topology,
    operator_ip: Ipv4Addr,
    down: Vec<bool>,
    stopped: Vec<bool>,
    cut: Vec<bool>,
    full: Vec<bool>,
    disks: Vec<SmallTmpfs>,
    _dir: tempfile::TempDir,
}

impl World {
    /// Starts the storage systems, each told to use the directory
    /// `directory` (served from the operator's side).
    pub async fn start(nodes: u8, disk_bytes: u64, directory: DirectoryRecord) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let disks: Vec<SmallTmpfs> = (0..nodes)
            .map(|i| SmallTmpfs::mount(&dir.path().join(format!("disk-{i}")), disk_bytes))
            .collect();
        let dirs: Vec<(u8, &std::path::Path)> = disks
            .iter()
            .enumerate()
            .map(|(i, d)| (i as u8, d.path()))
            .collect();
        // The storage systems reach the directory through a forwarder in the
        // operator's namespace (started below; until then they retry).
        let mut cluster = Cluster::start_with(nodes, 0, &dirs, |net| {
            let operator_ip = net.addr(10 + OPERATOR_INDEX);
            vec![
                "--directory".into(),
                format!("http://{operator_ip}:{DIRECTORY_PORT}"),
            ]
        })
        .await;
        let (op_ns, operator_ip) = cluster.net.add_namespace(OPERATOR_INDEX);
        let (directory_addr, serving_directory) = directory::serve(
            directory.clone(),
            std::net::SocketAddr::from((cluster.net.addr(1), 0)),
        )
        .await;
        let mut forwarders = vec![forwarder(
            &op_ns,
            &format!("{operator_ip}:{DIRECTORY_PORT}"),
            &directory_addr.to_string(),
        )];
        for (i, node) in cluster.nodes.iter().enumerate() {
            forwarders.push(forwarder(
                &op_ns,
                &format!("{operator_ip}:{}", OPERATOR_PORT_BASE + i as u16),
                &format!("{}:{PORT}", node.ip),
            ));
        }
        let topology = Topology {
            data_centers: cluster
                .nodes
                .iter()
                .map(|n| n.data_center.clone())
                .collect(),
            host: cluster.nodes.iter().map(|n| n.endpoint()).collect(),
            operator: (0..nodes)
                .map(|i| format!("http://{operator_ip}:{}", OPERATOR_PORT_BASE + u16::from(i)))
                .collect(),
            peer: cluster.nodes.iter().map(|n| n.peer_endpoint()).collect(),
        };
        let n = nodes as usize;
        let world = World {
            forwarders,
            serving_directory,
            cluster,
            topology,
            operator_ip,
            down: vec![false; n],
            stopped: vec![false; n],
            cut: vec![false; n],
            full: vec![false; n],
            disks,
            _dir: dir,
        };
        // The forwarders listen within moments; wait until each one answers.
        for i in 0..n {
            world.wait_operator_path(i).await;
        }
        world
    }

    async fn wait_operator_path(&self, i: usize) {
        use roam_proto::storage::GetInfoRequest;
        let mut c = channel(&self.topology.operator[i], Duration::from_millis(500));
        for _ in 0..100 {
            if c.get_info(GetInfoRequest {}).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the operator's path to storage system {i} does not answer");
    }

    /// kill -9 of storage system `i`.
    pub fn kill9(&mut self, i: usize) {
        if self.stopped[i] {
            self.cont(i);
        }
        self.cluster.nodes[i].kill9();
        self.down[i] = true;
    }

    /// Starts storage system `i` again on its data directory (kill -9 first
    /// if it still runs) and waits until it answers.
    pub async fn restart(&mut self, i: usize) {
        if self.stopped[i] {
            self.cont(i);
        }
        self.cluster.nodes[i].restart();
        self.down[i] = false;
        self.cluster.wait_ready(i).await;
    }

    pub fn stop(&mut self, i: usize) {
        if !self.down[i] && !self.stopped[i] {
            self.cluster.nodes[i].signal("STOP");
            self.stopped[i] = true;
        }
    }

    pub fn cont(&mut self, i: usize) {
        if self.stopped[i] {
            self.cluster.nodes[i].signal("CONT");
            self.stopped[i] = false;
        }
    }

    /// Cuts storage system `i` off from every other storage system and, with
    /// `operator`, from the operator's side too (never from the host).
    pub fn isolate(&mut self, i: usize, peers: bool, operator: bool) {
        let ns = self.cluster.nodes[i].namespace.clone();
        if peers {
            for (j, node) in self.cluster.nodes.iter().enumerate() {
                if j != i {
                    Network::partition(&ns, node.ip);
                }
            }
        }
        if operator {
            Network::partition(&ns, self.operator_ip);
        }
        self.cut[i] = true;
    }

    pub fn heal(&mut self, i: usize) {
        if self.cut[i] {
            Network::heal(&self.cluster.nodes[i].namespace);
            self.cut[i] = false;
        }
    }

    /// Fills the data directory of storage system `i` to the last byte.
    pub fn fill_disk(&mut self, i: usize) {
        use std::io::Write;
        let path = self.disks[i].path().join("ballast");
        let mut f = std::fs::File::create(&path).expect("create ballast");
        let chunk = vec![0xa5u8; 1 << 20];
        loop {
            if f.write_all(&chunk).is_err() {
                break;
            }
        }
        // The last few bytes too.
        let small = [0xa5u8; 512];
        while f.write_all(&small).is_ok() {}
        self.full[i] = true;
    }

    pub fn free_disk(&mut self, i: usize) {
        if self.full[i] {
            let _ = std::fs::remove_file(self.disks[i].path().join("ballast"));
            self.full[i] = false;
        }
    }

    /// Undoes every fault: disks freed, processes continued and started,
    /// partitions healed.
    pub async fn heal_all(&mut self) {
        for i in 0..self.topology.len() {
            self.free_disk(i);
            self.cont(i);
            self.heal(i);
            if self.down[i] {
                self.restart(i).await;
            }
        }
    }
}

/// A forwarder in namespace `ns` from `listen` to `upstream`, undelayed.
fn forwarder(ns: &str, listen: &str, upstream: &str) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(env!("CARGO_BIN_EXE_roam-delay-proxy"))
        .args(["--listen", listen, "--upstream", upstream])
        .args(["--delay-us", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a forwarder in the operator's namespace")
}

impl Drop for World {
    fn drop(&mut self) {
        self.serving_directory.abort();
        for child in &mut self.forwarders {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
