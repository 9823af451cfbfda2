//! Shared by the csi_* integration tests: real `roam-csi` processes on
//! 127.0.0.1 ports (storage systems and CSI plugins) and gRPC clients.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roam_proto::csi::ProbeRequest;
use roam_proto::csi::identity_client::IdentityClient;
use roam_proto::csi::node_client::NodeClient;
use roam_proto::storage::storage_client::StorageClient;
use roam_proto::storage::{
    ConfigureGroupRequest, CreateReplicaRequest, FailurePolicy, GetInfoRequest, GroupSpec, Member,
    SyncLevel, TransferType,
};
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_roam-csi");

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A child process stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .env("RUST_LOG", "info")
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
        }
    }

    /// kill -9: a crash, not a shutdown; reaped before returning.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to 20 s.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A storage system process (`roam-csi storage`) of data center `dc`.
pub fn spawn_storage(dir: &Path, dc: &str, node: &str, port: u16) -> (Proc, String) {
    spawn_storage_with(dir, dc, node, port, &[], &[])
}

/// [`spawn_storage`] with extra flags and environment variables.
pub fn spawn_storage_with(
    dir: &Path,
    dc: &str,
    node: &str,
    port: u16,
    extra: &[&str],
    env: &[(&str, &Path)],
) -> (Proc, String) {
    let data = dir.join(format!("storage-{dc}"));
    std::fs::create_dir_all(&data).expect("data dir");
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "storage",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--advertise",
        &endpoint,
        "--data-dir",
        data.to_str().expect("utf-8 path"),
        "--data-center",
        dc,
        "--node",
        node,
        "--insecure",
    ])
    .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let proc = Proc::spawn(
        &format!("storage-{dc}"),
        &mut cmd,
        &dir.join(format!("storage-{dc}.log")),
    );
    (proc, endpoint)
}

/// A CSI node plugin (`roam-csi node`) on a TCP endpoint.
pub fn spawn_node(dir: &Path, node: &str, dc: &str, storage: &str, port: u16) -> (Proc, String) {
    spawn_node_with(dir, node, dc, storage, port, &[])
}

/// [`spawn_node`] with extra flags.
pub fn spawn_node_with(
    dir: &Path,
    node: &str,
    dc: &str,
    storage: &str,
    port: u16,
    extra: &[&str],
) -> (Proc, String) {
    let state = dir.join(format!("state-{node}"));
    let proc = Proc::spawn(
        node,
        Command::new(BIN)
            .args([
                "node",
                "--csi-endpoint",
                &format!("tcp://127.0.0.1:{port}"),
                "--node-name",
                node,
                "--data-center",
                dc,
                "--storage-endpoint",
                storage,
                "--state-dir",
                state.to_str().expect("utf-8 path"),
                "--no-announce",
                "--insecure",
            ])
            .args(extra)
            .env_remove("KUBECONFIG"),
        &dir.join(format!("{node}.log")),
    );
    (proc, format!("http://127.0.0.1:{port}"))
}

async fn retry<T, E: std::fmt::Display, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// Storage client once the storage system answers GetInfo with ready.
pub async fn storage_client(endpoint: &str) -> StorageClient<Channel> {
    retry(&format!("storage system {endpoint} ready"), || async {
        let mut c = StorageClient::connect(endpoint.to_owned())
            .await
            .map_err(|e| e.to_string())?;
        let info = c
            .get_info(GetInfoRequest {})
            .await
            .map_err(|e| e.to_string())?;
        if info.get_ref().ready {
            Ok(c)
        } else {
            Err("not ready".to_owned())
        }
    })
    .await
}

/// Node client once the plugin's Probe says ready.
pub async fn node_client(endpoint: &str) -> NodeClient<Channel> {
    retry(&format!("node plugin {endpoint} ready"), || async {
        let channel = Channel::from_shared(endpoint.to_owned())
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let ready = IdentityClient::new(channel.clone())
            .probe(ProbeRequest {})
            .await
            .map_err(|e| e.to_string())?
            .into_inner()
            .ready;
        if ready == Some(true) {
            Ok(NodeClient::new(channel))
        } else {
            Err("not ready".to_owned())
        }
    })
    .await
}

/// Whether `path` is a mount point now.
pub fn is_mounted(path: &Path) -> bool {
    let wanted = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| Path::new(p) == wanted)
}

/// Loop devices whose backing file lies under `dir`.
pub fn loops_under(dir: &Path) -> Vec<String> {
    let out = Command::new("losetup")
        .args(["-a"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let dir = dir.to_string_lossy().into_owned();
    out.lines()
        .filter(|l| l.contains(&dir))
        .map(str::to_owned)
        .collect()
}

pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// The operator's part for a volume of one replica: creates `volume`
/// (`size` bytes) on the storage system at `endpoint` and makes it the sole
/// member, data center `dc`, primary at epoch 1 (Sync, Block).
pub async fn sole_member_volume(endpoint: &str, dc: &str, volume: &str, size: u64) {
    let mut admin = storage_client(endpoint).await;
    admin
        .create_replica(CreateReplicaRequest {
            volume_id: volume.into(),
            size_bytes: size,
        })
        .await
        .expect("CreateReplica");
    admin
        .configure_group(ConfigureGroupRequest {
            volume_id: volume.into(),
            group: Some(GroupSpec {
                members: vec![Member {
                    data_center: dc.into(),
                    endpoint: endpoint.into(),
                }],
                primary: dc.into(),
                epoch: 1,
                transfer_type: TransferType::Sync as i32,
                failure_policy: FailurePolicy::Block as i32,
                max_lag_bytes: 0,
                max_lag_seconds: 0,
                sync_level: SyncLevel::Write as i32,
            }),
        })
        .await
        .expect("ConfigureGroup");
}

/// One real volume on each of two storage systems, configured as a group
/// with the first primary at epoch 1 (the operator's part); the secondary
/// is configured first, so it is ready when the primary reaches it.
pub async fn two_member_volume(
    (dc_a, ep_a): (&str, &str),
    (dc_b, ep_b): (&str, &str),
    volume: &str,
    size: u64,
    policy: FailurePolicy,
) {
    let group = GroupSpec {
        members: [(dc_a, ep_a), (dc_b, ep_b)]
            .into_iter()
            .map(|(dc, ep)| Member {
                data_center: dc.into(),
                endpoint: ep.into(),
            })
            .collect(),
        primary: dc_a.into(),
        epoch: 1,
        transfer_type: TransferType::Sync as i32,
        failure_policy: policy as i32,
        max_lag_bytes: 0,
        max_lag_seconds: 0,
        sync_level: SyncLevel::Write as i32,
    };
    for ep in [ep_b, ep_a] {
        let mut c = storage_client(ep).await;
        c.create_replica(CreateReplicaRequest {
            volume_id: volume.into(),
            size_bytes: size,
        })
        .await
        .expect("CreateReplica");
        c.configure_group(ConfigureGroupRequest {
            volume_id: volume.into(),
            group: Some(group.clone()),
        })
        .await
        .expect("ConfigureGroup");
    }
}

/// The publish context a CSI log-in returns: the primary's storage
/// endpoint, the real volume id, the epoch and the data center.
pub fn publish_context(
    endpoint: &str,
    volume: &str,
    epoch: u64,
    dc: &str,
) -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([
        ("storageEndpoint".to_owned(), endpoint.to_owned()),
        ("volumeId".to_owned(), volume.to_owned()),
        ("epoch".to_owned(), epoch.to_string()),
        ("dataCenter".to_owned(), dc.to_owned()),
    ])
}
