//! Shared by the operator's tests against the real control plane: a test
//! environment (namespace, Nodes, DataCenters), real `roam-operator`
//! processes scoped to it, and real `roam-csi storage` processes on 127.0.0.1.
//!
//! Everything a test creates carries the test's tag, so tests running at the
//! same time on one control plane never see each other's objects: the
//! operator is started with `--watch-namespace <ns>` and
//! `--datacenter-selector roam.dev/test=<tag>`.

#![allow(dead_code)]

use std::{collections::BTreeMap, path::PathBuf, process::Stdio, time::Duration};

use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use roam_crds::{
    DataCenter, DataCenterSpec, STORAGE_ENDPOINT_ANNOTATION, VirtualVolume, ZONE_LABEL,
};
use roam_e2e::{TestCluster, TestNamespace, wait_until};
use tokio::process::{Child, Command};

pub const TEST_LABEL: &str = "roam.dev/test";

pub fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The storage system binary, when it has been built.
pub fn storage_binary() -> Option<PathBuf> {
    let p = roam_e2e::repo_root().join("target/debug/roam-csi");
    p.exists().then_some(p)
}

/// A running `roam-csi storage` process.
pub struct Storage {
    pub dc: String,
    pub node: String,
    pub endpoint: String,
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Storage {
    pub async fn start(dc: &str, node: &str, dir: PathBuf, port: u16) -> Self {
        let bin =
            storage_binary().expect("target/debug/roam-csi is not built (cargo build -p roam-csi)");
        std::fs::create_dir_all(&dir).expect("data dir");
        let endpoint = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.with_extension("log")).expect("log file");
        // The directory the chart's storage systems keep: the group's
        // in-sync set and the primary's lease in its CopyVolumeGroup.
        let cluster = roam_e2e::TestCluster::get().await.expect("control plane");
        let child = Command::new(bin)
            .args(["storage", "--directory", "kubernetes", "--data-dir"])
            .env("KUBECONFIG", cluster.kubeconfig())
            .arg(&dir)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--advertise",
                &endpoint,
                "--data-center",
                dc,
                "--node",
                node,
                "--insecure",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start roam-csi storage");
        let s = Self {
            dc: dc.into(),
            node: node.into(),
            endpoint: endpoint.clone(),
            port,
            dir,
            child: Some(child),
        };
        wait_until(
            &format!("storage system {endpoint}"),
            Duration::from_secs(30),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        )
        .await
        .expect("storage system listening");
        s
    }

    /// Kill the process (SIGKILL) and wait for it.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Start it again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.kill().await;
        let again = Storage::start(&self.dc, &self.node, self.dir.clone(), self.port).await;
        *self = again;
    }
}

/// A running `roam-operator` process.
pub struct Operator {
    pub metrics_port: u16,
    child: Option<Child>,
}

impl Operator {
    pub async fn start(env: &Env, identity: &str) -> Self {
        let port = free_port();
        let log =
            std::fs::File::create(env.dir.join(format!("operator-{identity}.log"))).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_roam-operator"))
            .arg("--kubeconfig")
            .arg(env.cluster.kubeconfig())
            .args([
                "--watch-namespace",
                &env.ns,
                "--datacenter-selector",
                &format!("{TEST_LABEL}={}", env.tag),
            ])
            .args([
                "--lease-namespace",
                &env.ns,
                "--identity",
                identity,
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
            ])
            .env("RUST_LOG", "info,roam_operator=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start roam-operator");
        Self {
            metrics_port: port,
            child: Some(child),
        }
    }

    /// GET a path of the metrics server; `None` when it does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .await
            .ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        let code = out.split_whitespace().nth(1)?.parse().ok()?;
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    }

    /// Sum of a counter over its label sets in /metrics.
    pub async fn counter(&self, name: &str) -> f64 {
        let Some((_, body)) = self.get("/metrics").await else {
            return 0.0;
        };
        body.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// SIGTERM, then wait for a clean exit (releases the lease).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                let _ = Command::new("kill").arg(pid.to_string()).status().await;
            }
            if tokio::time::timeout(Duration::from_secs(10), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        }
    }
}

/// One test's world: a namespace, a tag for cluster-scoped objects, and the
/// Nodes, DataCenters and storage systems it made.
pub struct Env {
    pub cluster: TestCluster,
    pub namespace: Option<TestNamespace>,
    pub ns: String,
    pub tag: String,
    pub client: Client,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    pub storage: BTreeMap<String, Storage>,
    pub dcs: Vec<String>,
    pub nodes: Vec<String>,
}

impl Env {
    pub async fn new(prefix: &str) -> Self {
        crypto();
        let cluster = TestCluster::get().await.expect("control plane");
        cluster.install_roam_crds().await.expect("install CRDs");
        let namespace = TestNamespace::create(&cluster, prefix)
            .await
            .expect("namespace");
        let ns = namespace.name().to_string();
        let tag = ns.rsplit('-').next().unwrap_or("t").to_string();
        let client = cluster.client().await.expect("client");
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        Self {
            cluster,
            namespace: Some(namespace),
            ns,
            tag,
            client,
            dir,
            _tmp: tmp,
            storage: BTreeMap::new(),
            dcs: vec![],
            nodes: vec![],
        }
    }

    /// The cluster-wide name of data center `short` (e.g. "a" -> "<tag>-a").
    pub fn dc(&self, short: &str) -> String {
        format!("t{}-{short}", self.tag)
    }

    pub fn node(&self, short: &str, i: u32) -> String {
        format!("t{}-{short}-n{i}", self.tag)
    }

    /// A Node object in data center `short` (no kubelet), optionally announcing a storage endpoint.
    pub async fn add_node(&mut self, short: &str, i: u32, endpoint: Option<&str>) -> String {
        let name = self.node(short, i);
        let mut annotations = BTreeMap::new();
        if let Some(e) = endpoint {
            annotations.insert(STORAGE_ENDPOINT_ANNOTATION.to_string(), e.to_string());
        }
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([
                    (ZONE_LABEL.to_string(), self.dc(short)),
                    (TEST_LABEL.to_string(), self.tag.clone()),
                ])),
                annotations: Some(annotations),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Node>::all(self.client.clone())
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
        self.nodes.push(name.clone());
        name
    }

    /// A DataCenter with these proximity entries (short names).
    pub async fn add_dc(&mut self, short: &str, proximity: &[(&str, u32)]) {
        let name = self.dc(short);
        let mut d = DataCenter::new(
            &name,
            DataCenterSpec {
                cordoned: false,
                zone: None,
                node_selector: None,
                proximity: proximity.iter().map(|(k, v)| (self.dc(k), *v)).collect(),
            },
        );
        d.metadata.labels = Some(BTreeMap::from([(TEST_LABEL.to_string(), self.tag.clone())]));
        Api::<DataCenter>::all(self.client.clone())
            .create(&PostParams::default(), &d)
            .await
            .expect("create DataCenter");
        self.dcs.push(name);
    }

    /// A data center with one node running a real storage system.
    pub async fn add_dc_with_storage(&mut self, short: &str, proximity: &[(&str, u32)]) {
        let port = free_port();
        let node = self.node(short, 1);
        let dir = self.dir.join(format!("storage-{short}"));
        let s = Storage::start(&self.dc(short), &node, dir, port).await;
        let endpoint = s.endpoint.clone();
        self.storage.insert(short.to_string(), s);
        self.add_node(short, 1, Some(&endpoint)).await;
        self.add_dc(short, proximity).await;
    }

    pub fn volumes(&self) -> Api<VirtualVolume> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn apply_yaml(&self, yaml: &str) {
        self.cluster
            .kubectl_with_input(&["-n", &self.ns, "apply", "-f", "-"], yaml)
            .await
            .expect("apply");
    }

    /// Wait until the VirtualVolume's status satisfies `f`; returns it.
    pub async fn wait_volume<F>(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        f: F,
    ) -> VirtualVolume
    where
        F: Fn(&VirtualVolume) -> bool,
    {
        let api = self.volumes();
        wait_until(&format!("{name}: {what}"), timeout, || async {
            match api.get_opt(name).await {
                Ok(Some(v)) if f(&v) => Ok(v),
                Ok(Some(v)) => Err(format!("status {:?}", v.status)),
                Ok(None) => Err("not found".into()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Set or clear the attached-node annotation, as ControllerPublish does.
    pub async fn attach(&self, volume: &str, node: Option<&str>) {
        let patch = serde_json::json!({"metadata": {"annotations": {roam_crds::ATTACHED_NODE_ANNOTATION: node}}});
        self.volumes()
            .patch(volume, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate");
    }

    /// Delete VirtualVolumes (the operator must still run), DataCenters, Nodes, the namespace.
    pub async fn cleanup(mut self) {
        let api = self.volumes();
        if let Ok(list) = api.list(&Default::default()).await {
            for v in list {
                let _ = api
                    .delete(
                        &v.metadata.name.unwrap_or_default(),
                        &DeleteParams::default(),
                    )
                    .await;
            }
        }
        let _ = wait_until("volumes deleted", Duration::from_secs(60), || async {
            match api.list(&Default::default()).await {
                Ok(l) if l.items.is_empty() => Ok(()),
                Ok(l) => Err(format!("{} left", l.items.len())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        // Anything still held by a finalizer (operator gone) is released so the namespace can go.
        if let Ok(list) = api.list(&Default::default()).await {
            for v in list {
                let patch = serde_json::json!({"metadata": {"finalizers": null}});
                let _ = api
                    .patch(
                        &v.metadata.name.unwrap_or_default(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await;
            }
        }
        for d in &self.dcs {
            let _ = Api::<DataCenter>::all(self.client.clone())
                .delete(d, &DeleteParams::default())
                .await;
        }
        for n in &self.nodes {
            let _ = Api::<Node>::all(self.client.clone())
                .delete(n, &DeleteParams::default())
                .await;
        }
        for s in self.storage.values_mut() {
            s.kill().await;
        }
        if let Some(ns) = self.namespace.take() {
            let _ = ns.delete().await;
        }
    }
}

/// A VirtualVolume manifest.
pub fn volume_yaml(name: &str, dcs: &[String], transfer: &str, extra: &str) -> String {
    format!(
        "apiVersion: roam.dev/v1alpha1\nkind: VirtualVolume\nmetadata:\n  name: {name}\nspec:\n  size: 64Mi\n  dataCenters: [{}]\n  transferType: {transfer}\n{extra}",
        dcs.join(", ")
    )
}

/// What the storage system at `endpoint` reports about a real volume
/// (`None`: it has none).
#[allow(dead_code)] // each test binary uses a part of this module
pub async fn replica(
    endpoint: &str,
    volume_id: &str,
) -> Option<roam_proto::storage::ReplicaStatus> {
    use roam_proto::storage::{GetReplicaRequest, storage_client::StorageClient};
    let mut c = StorageClient::connect(endpoint.to_string())
        .await
        .expect("connect storage");
    match c
        .get_replica(GetReplicaRequest {
            volume_id: volume_id.into(),
        })
        .await
    {
        Ok(r) => Some(r.into_inner()),
        Err(s) if s.code() == tonic::Code::NotFound => None,
        Err(s) => panic!("GetReplica on {endpoint}: {s}"),
    }
}
