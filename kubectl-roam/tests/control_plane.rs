//! `kubectl roam` against the real control plane (tier 3): real
//! `roam-operator` and `roam-csi storage` processes on 127.0.0.1, one storage
//! system per data center, Node objects without kubelets. The plugin runs as
//! the binary a user installs, with the admin kubeconfig.
//!
//! Shown here: the printed primary, epoch and lag are the CopyVolumeGroup's;
//! `relocate` moves the primary (the storage systems say so); `promote`
//! refuses without `--accept-loss` when the possible loss is above 0, and
//! moves the primary of a volume in Manual failover mode once its primary's
//! storage system is gone.

use std::{collections::BTreeMap, path::PathBuf, process::Stdio, time::Duration};

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use roam_crds::{
    CopyVolumeGroup, DataCenter, DataCenterSpec, STORAGE_ENDPOINT_ANNOTATION, VirtualVolume,
    VolumePhase, ZONE_LABEL,
};
use roam_e2e::{TestCluster, TestNamespace, repo_root, wait_until};
use tokio::process::{Child, Command};

const TEST_LABEL: &str = "roam.dev/test";
const READY: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn binary(name: &str) -> PathBuf {
    let p = repo_root().join("target/debug").join(name);
    assert!(
        p.exists(),
        "{} is not built (cargo build -p roam-operator -p roam-csi --bins)",
        p.display()
    );
    p
}

/// One test's world: a namespace, Nodes and DataCenters tagged for it,
/// storage systems and (optionally) an operator scoped to it.
struct Env {
    cluster: TestCluster,
    namespace: Option<TestNamespace>,
    ns: String,
    tag: String,
    client: Client,
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    endpoints: BTreeMap<String, String>,
    /// The storage systems, by short data center name.
    storage: BTreeMap<String, Child>,
    children: Vec<Child>,
    dcs: Vec<String>,
    nodes: Vec<String>,
}

impl Env {
    async fn new(prefix: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
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
            _tmp: tmp,
            dir,
            endpoints: BTreeMap::new(),
            storage: BTreeMap::new(),
            children: vec![],
            dcs: vec![],
            nodes: vec![],
        }
    }

    fn dc(&self, short: &str) -> String {
        format!("t{}-{short}", self.tag)
    }

    fn node(&self, short: &str) -> String {
        format!("t{}-{short}-n1", self.tag)
    }

    /// A data center with one Node and a real storage system on it.
    async fn add_dc_with_storage(&mut self, short: &str) {
        let (dc, node) = (self.dc(short), self.node(short));
        let port = free_port();
        let endpoint = format!("http://127.0.0.1:{port}");
        self.endpoints.insert(short.into(), endpoint.clone());
        self.start_storage(short).await;
        let n = Node {
            metadata: ObjectMeta {
                name: Some(node.clone()),
                labels: Some(BTreeMap::from([
                    (ZONE_LABEL.to_string(), dc.clone()),
                    (TEST_LABEL.to_string(), self.tag.clone()),
                ])),
                annotations: Some(BTreeMap::from([(
                    STORAGE_ENDPOINT_ANNOTATION.to_string(),
                    endpoint.clone(),
                )])),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Node>::all(self.client.clone())
            .create(&PostParams::default(), &n)
            .await
            .expect("create node");
        self.nodes.push(node);
        self.add_dc(short).await;
    }

    /// (Re)start the storage system of data center `short` on its endpoint
    /// and data directory, and wait until it listens.
    async fn start_storage(&mut self, short: &str) {
        let (dc, node) = (self.dc(short), self.node(short));
        let endpoint = self.endpoints[short].clone();
        let port: u16 = endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let data = self.dir.join(format!("storage-{short}"));
        std::fs::create_dir_all(&data).expect("data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .expect("log");
        let child = Command::new(binary("roam-csi"))
            .arg("storage")
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--advertise",
                &endpoint,
            ])
            .args(["--data-center", &dc, "--node", &node, "--insecure"])
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start roam-csi storage");
        self.storage.insert(short.into(), child);
        wait_until(
            &format!("storage {endpoint}"),
            Duration::from_secs(30),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        )
        .await
        .expect("storage listening");
    }

    /// Kill the storage system of data center `short` (SIGKILL: the data
    /// center is lost, not shut down).
    async fn kill_storage(&mut self, short: &str) {
        if let Some(mut c) = self.storage.remove(short) {
            c.kill().await.expect("kill storage");
        }
    }

    async fn add_dc(&mut self, short: &str) {
        let name = self.dc(short);
        let mut d = DataCenter::new(
            &name,
            DataCenterSpec {
                cordoned: false,
                zone: None,
                node_selector: None,
                // Every data center added so far is one step away, so the
                // operator always knows a nearest member.
                proximity: self.dcs.iter().map(|d| (d.clone(), 1)).collect(),
            },
        );
        d.metadata.labels = Some(BTreeMap::from([(TEST_LABEL.to_string(), self.tag.clone())]));
        Api::<DataCenter>::all(self.client.clone())
            .create(&PostParams::default(), &d)
            .await
            .expect("create DataCenter");
        self.dcs.push(name);
    }

    fn start_operator(&mut self) {
        let log = std::fs::File::create(self.dir.join("operator.log")).expect("log");
        let child = Command::new(binary("roam-operator"))
            .arg("--kubeconfig")
            .arg(self.cluster.kubeconfig())
            .args(["--watch-namespace", &self.ns])
            .args([
                "--datacenter-selector",
                &format!("{TEST_LABEL}={}", self.tag),
            ])
            .args(["--lease-namespace", &self.ns, "--identity", "op"])
            .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start roam-operator");
        self.children.push(child);
    }

    /// `kubectl roam ARGS -n <ns>`: (exit code, stdout, stderr).
    async fn roam(&self, args: &[&str]) -> (i32, String, String) {
        let kubeconfig = self.cluster.kubeconfig().display().to_string();
        self.roam_with(&kubeconfig, args).await
    }

    /// The same with `KUBECONFIG` set to `kubeconfig` (a list, as kubectl takes).
    async fn roam_with(&self, kubeconfig: &str, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_kubectl-roam"))
            .args(args)
            .args(["-n", &self.ns])
            .env("KUBECONFIG", kubeconfig)
            .output()
            .await
            .expect("run kubectl-roam");
        let r = (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        eprintln!(
            "kubectl roam {}: exit {}\n{}{}",
            args.join(" "),
            r.0,
            r.1,
            r.2
        );
        r
    }

    fn groups(&self) -> Api<CopyVolumeGroup> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn volumes(&self) -> Api<VirtualVolume> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn apply(&self, yaml: &str) {
        self.cluster
            .kubectl_with_input(&["-n", &self.ns, "apply", "-f", "-"], yaml)
            .await
            .expect("apply");
    }

    async fn wait_group<F: Fn(&CopyVolumeGroup) -> bool>(
        &self,
        name: &str,
        what: &str,
        f: F,
    ) -> CopyVolumeGroup {
        let api = self.groups();
        wait_until(&format!("{name}: {what}"), READY, || async {
            match api.get_opt(name).await {
                Ok(Some(g)) if f(&g) => Ok(g),
                Ok(Some(g)) => Err(format!("status {:?}", g.status)),
                Ok(None) => Err("no group".into()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The group of a two-member volume once its primary is confirmed and
    /// the volume Ready.
    async fn wait_ready(&self, name: &str) -> CopyVolumeGroup {
        self.wait_group(name, "primary confirmed and in sync", |g| {
            g.status.as_ref().is_some_and(|s| {
                s.primary.is_some()
                    && s.phase.as_deref() == Some(VolumePhase::Ready.as_str())
                    && s.members.len() == 2
            })
        })
        .await
    }

    /// Volumes deleted while the operator runs, then everything else.
    async fn cleanup(mut self) {
        let api = self.volumes();
        if let Ok(l) = api.list(&Default::default()).await {
            for v in l {
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
        if let Ok(l) = api.list(&Default::default()).await {
            for v in l {
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
        for c in self.children.iter_mut().chain(self.storage.values_mut()) {
            let _ = c.kill().await;
        }
        if let Some(ns) = self.namespace.take() {
            let _ = ns.delete().await;
        }
    }
}

fn volume_yaml(name: &str, dcs: &[String], transfer: &str) -> String {
    format!(
        "apiVersion: roam.dev/v1alpha1\nkind: VirtualVolume\nmetadata:\n  name: {name}\nspec:\n  size: 64Mi\n  dataCenters: [{}]\n  transferType: {transfer}\n",
        dcs.join(", ")
    )
}

/// A PV carrying the volume and a PVC bound to it (no provisioner needed).
async fn claim_for(env: &Env, volume: &str, claim: &str) {
    let pv_name = format!("pv-{}-{volume}", env.ns);
    let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "64Mi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
            "claimRef": {"namespace": env.ns, "name": claim},
            "csi": {"driver": roam_crds::DRIVER_NAME, "volumeHandle": roam_crds::csi_volume_id(&env.ns, volume)}
        }
    }))
    .expect("pv");
    Api::<PersistentVolume>::all(env.client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .expect("create pv");
    let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv_name,
                 "resources": {"requests": {"storage": "64Mi"}}}
    }))
    .expect("pvc");
    Api::<PersistentVolumeClaim>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &pvc)
        .await
        .expect("create pvc");
}

async fn delete_pv(env: &Env, volume: &str) {
    let _ = Api::<PersistentVolume>::all(env.client.clone())
        .delete(&format!("pv-{}-{volume}", env.ns), &DeleteParams::default())
        .await;
}

/// The role and epoch a storage system itself reports for a real volume.
async fn storage_role(endpoint: &str, volume_id: &str) -> (i32, u64) {
    use roam_proto::storage::{GetReplicaRequest, storage_client::StorageClient};
    let mut c = StorageClient::connect(endpoint.to_string())
        .await
        .expect("connect storage");
    let r = c
        .get_replica(GetReplicaRequest {
            volume_id: volume_id.into(),
        })
        .await
        .expect("GetReplica")
        .into_inner();
    (r.role, r.epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_group_and_relocate_moves_the_primary() {
    let mut env = Env::new("roam-plugin").await;
    env.add_dc_with_storage("a").await;
    env.add_dc_with_storage("b").await;
    env.start_operator();
    let (a, b) = (env.dc("a"), env.dc("b"));
    env.apply(&volume_yaml("db", &[a.clone(), b.clone()], "Sync"))
        .await;
    env.wait_ready("db").await;
    claim_for(&env, "db", "data").await;

    // What it prints is what the CopyVolumeGroup says, for each way of naming it.
    let g = env.groups().get("db").await.expect("group");
    let gs = g.status.clone().expect("status");
    let primary = gs.primary.clone().expect("primary");
    for target in ["db", "vv/db", "pvc/data"] {
        let (code, out, _) = env.roam(&["status", target, "-o", "json"]).await;
        assert_eq!(code, 0, "{target}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["primary"], primary.as_str(), "{target}");
        assert_eq!(v["epoch"], gs.epoch, "{target}");
        assert_eq!(v["lagBytes"], gs.lag_bytes, "{target}");
        assert_eq!(v["members"].as_array().map(Vec::len), Some(2));
        for m in v["members"].as_array().expect("members") {
            let dc = m["dataCenter"].as_str().expect("dc");
            let s = gs
                .members
                .iter()
                .find(|s| s.data_center == dc)
                .expect("member");
            assert_eq!(m["lagBytes"], s.lag_bytes, "{dc}");
            assert_eq!(m["state"], format!("{:?}", s.state), "{dc}");
            assert_eq!(m["node"], g.member(dc).expect("spec member").node, "{dc}");
        }
    }
    let (code, out, _) = env.roam(&["status", "db"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("{primary} (epoch {})", gs.epoch)),
        "{out}"
    );
    assert!(
        out.contains("DATA CENTER") && out.contains("Ready"),
        "{out}"
    );
    let (code, out, _) = env.roam(&["status", "-o", "yaml"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("name: db"), "{out}");

    // relocate moves the primary: the group and the storage systems agree.
    let other = if primary == a { b.clone() } else { a.clone() };
    let short = if other == a { "a" } else { "b" };
    let (code, out, _) = env.roam(&["relocate", "db", "--to", &other]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("to {other} at epoch {}", gs.epoch + 1)),
        "{out}"
    );
    let g = env.groups().get("db").await.expect("group");
    let s = g.status.expect("status");
    assert_eq!(
        (s.primary.as_deref(), s.epoch),
        (Some(other.as_str()), gs.epoch + 1)
    );
    let vid = roam_crds::real_volume_id(&env.ns, "db");
    assert_eq!(
        storage_role(&env.endpoints[short], &vid).await,
        (roam_proto::storage::Role::Primary as i32, gs.epoch + 1)
    );
    // A second relocate to the same place changes nothing.
    let (code, out, _) = env.roam(&["relocate", "db", "--to", &other]).await;
    assert_eq!(code, 0);
    assert!(out.contains("primary already"), "{out}");
    // Not a member: refused with exit status 2, naming the members.
    let (code, _, err) = env.roam(&["relocate", "db", "--to", "nowhere"]).await;
    assert_eq!(code, 2);
    assert!(err.contains(&a) && err.contains(&b), "{err}");

    let _ = Api::<PersistentVolumeClaim>::namespaced(env.client.clone(), &env.ns)
        .delete("data", &DeleteParams::default())
        .await;
    delete_pv(&env, "db").await;
    env.cleanup().await;
}

/// The group of a lost Async primary as the operator records it: the
/// primary unreachable, the secondary `b` behind by `lag` bytes when last seen.
async fn lost_primary_group(env: &Env, name: &str, lag: u64) {
    let (a, b) = (env.dc("a"), env.dc("b"));
    let member = |dc: &str| serde_json::json!({"dataCenter": dc, "node": format!("{dc}-n1"), "endpoint": "http://127.0.0.1:9", "volumeId": roam_crds::real_volume_id(&env.ns, name)});
    let g: CopyVolumeGroup = serde_json::from_value(serde_json::json!({
        "apiVersion": "roam.dev/v1alpha1", "kind": "CopyVolumeGroup",
        "metadata": {"name": name},
        "spec": {"members": [member(&a), member(&b)], "desiredPrimary": a, "epoch": 3,
                 "transferType": "Async", "failurePolicy": "Degrade", "sizeBytes": 67108864}
    }))
    .expect("group");
    env.groups()
        .create(&PostParams::default(), &g)
        .await
        .expect("create group");
    let status = serde_json::json!({"status": {
        "primary": a, "epoch": 3, "phase": "Degraded", "lagBytes": lag,
        "primaryUnreachableSince": "2026-01-01T00:00:00Z",
        "members": [
            {"dataCenter": a, "role": "None", "state": "Unreachable", "epoch": 0},
            {"dataCenter": b, "role": "Secondary", "state": "Lagging", "lagBytes": lag, "lagSeconds": 2.5, "epoch": 3, "durableSeq": 7}
        ]
    }});
    env.groups()
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("group status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_refuses_a_possible_loss_without_accept_loss() {
    // No operator here: the group's status is set as the operator records a
    // lost Async primary, so the possible loss is known and above 0.
    let mut env = Env::new("roam-plugin-promote").await;
    env.add_dc("a").await;
    env.add_dc("b").await;
    let (a, b) = (env.dc("a"), env.dc("b"));
    env.apply(&volume_yaml("lost", &[a.clone(), b.clone()], "Async"))
        .await;
    lost_primary_group(&env, "lost", 3 << 20).await;

    let (code, _, err) = env.roam(&["promote", "lost", "--to", &b]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--accept-loss") && err.contains("3.0 MiB"),
        "{err}"
    );
    let g = env.groups().get("lost").await.expect("group");
    assert_eq!(
        (g.spec.desired_primary.as_str(), g.spec.epoch),
        (a.as_str(), 3),
        "refused, yet the intent changed"
    );

    // The lost primary itself cannot be promoted.
    let (code, _, _) = env
        .roam(&["promote", "lost", "--to", &a, "--accept-loss"])
        .await;
    assert_eq!(code, 2);

    // Accepted: the failover intent is written for the operator to carry out.
    let (code, out, _) = env
        .roam(&[
            "promote",
            "lost",
            "--to",
            &b,
            "--accept-loss",
            "--timeout",
            "0",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (v["to"].as_str(), v["epoch"].as_u64()),
        (Some(b.as_str()), Some(4))
    );
    let g = env.groups().get("lost").await.expect("group");
    assert_eq!(
        (g.spec.desired_primary.as_str(), g.spec.epoch),
        (b.as_str(), 4)
    );
    assert!(
        g.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("roam.dev/intent-at")
    );

    let _ = env.groups().delete("lost", &DeleteParams::default()).await;
    env.cleanup().await;
}

/// In Manual failover mode the operator only reports a lost primary; the
/// promotion a person asks for with `kubectl roam promote` is carried out
/// (after the grace period), and the storage systems agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_moves_the_primary_of_a_manual_volume_whose_primary_is_lost() {
    let mut env = Env::new("roam-plugin-manual").await;
    env.add_dc_with_storage("a").await;
    env.add_dc_with_storage("b").await;
    env.start_operator();
    let (a, b) = (env.dc("a"), env.dc("b"));
    let yaml = format!(
        "{}  failover: {{mode: Manual, gracePeriodSeconds: 2}}\n",
        volume_yaml("m", &[a.clone(), b.clone()], "Sync")
    );
    env.apply(&yaml).await;
    let g = env.wait_ready("m").await;
    let gs = g.status.expect("status");
    let primary = gs.primary.clone().expect("primary");
    let (lost, other, other_short) = if primary == a {
        ("a", b.clone(), "b")
    } else {
        ("b", a.clone(), "a")
    };

    env.kill_storage(lost).await;
    let g = env
        .wait_group(
            "m",
            "the lost primary reported, failover left to a person",
            |g| {
                g.status.as_ref().is_some_and(|s| {
                    s.primary_unreachable_since.is_some()
                        && s.conditions.iter().any(|c| {
                            c.type_ == "PrimaryUnreachable"
                                && c.message.contains("failover is manual")
                        })
                })
            },
        )
        .await;
    assert_eq!(
        (g.spec.desired_primary.as_str(), g.spec.epoch),
        (primary.as_str(), gs.epoch),
        "Manual mode: the operator wrote a failover of its own"
    );

    let (code, out, err) = env
        .roam(&[
            "promote",
            "m",
            "--to",
            &other,
            "--accept-loss",
            "--timeout",
            "2m",
        ])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let epoch = gs.epoch + 1;
    assert!(
        out.contains(&format!(
            "promoted from {primary} to {other} at epoch {epoch}"
        )),
        "{out}"
    );
    let vid = roam_crds::real_volume_id(&env.ns, "m");
    assert_eq!(
        storage_role(&env.endpoints[other_short], &vid).await,
        (roam_proto::storage::Role::Primary as i32, epoch)
    );
    let s = env
        .groups()
        .get("m")
        .await
        .expect("group")
        .status
        .expect("status");
    let f = s.last_failover.expect("lastFailover recorded");
    assert_eq!(
        (f.from.as_str(), f.to.as_str(), f.epoch),
        (primary.as_str(), other.as_str(), epoch)
    );

    // The lost data center comes back: the operator makes it a secondary of
    // the new primary (and can then delete its real volume).
    env.start_storage(lost).await;
    env.wait_group("m", "the returned member is a secondary", |g| {
        g.status.as_ref().is_some_and(|s| {
            s.primary_unreachable_since.is_none()
                && s.members
                    .iter()
                    .any(|m| m.data_center != other && m.role == roam_crds::MemberRole::Secondary)
        })
    })
    .await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_writes_one_tarball_of_roam_objects() {
    let mut env = Env::new("roam-plugin-dump").await;
    env.add_dc("a").await;
    let a = env.dc("a");
    env.apply(&volume_yaml("d", &[a], "Sync")).await;
    let file = env.dir.join("bundle.tar.gz");
    let file_s = file.display().to_string();
    let (code, _, err) = env
        .roam(&["dump", "-f", &file_s, "--roam-namespace", &env.ns.clone()])
        .await;
    assert_eq!(code, 0, "{err}");
    let out = Command::new("tar")
        .arg("-xzOf")
        .arg(&file)
        .arg("roam-dump/objects/virtualvolumes.yaml")
        .output()
        .await
        .expect("tar");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("namespace: {}", env.ns)), "{text}");
    env.cleanup().await;
}

/// `cordon` drains a data center of its primaries (the operator relocates
/// them; the storage systems agree) and waits for it; `uncordon` lets it hold
/// primaries again; an unknown data center is a precise error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_moves_the_primary_out_and_uncordon_clears_the_flag() {
    let mut env = Env::new("roam-cordon").await;
    env.add_dc_with_storage("a").await;
    env.add_dc_with_storage("b").await;
    env.start_operator();
    let (a, b) = (env.dc("a"), env.dc("b"));
    env.apply(&volume_yaml("db", &[a.clone(), b.clone()], "Sync"))
        .await;
    let g = env.wait_ready("db").await;
    let gs = g.status.expect("status");
    let primary = gs.primary.clone().expect("primary");
    let (other, short) = if primary == a {
        (b.clone(), "b")
    } else {
        (a.clone(), "a")
    };

    let (code, out, _) = env.roam(&["cordon", &primary, "--timeout", "2m"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 primaries left"), "{out}");
    let s = env
        .groups()
        .get("db")
        .await
        .expect("group")
        .status
        .expect("status");
    assert_eq!(s.primary.as_deref(), Some(other.as_str()), "moved out");
    assert!(s.epoch > gs.epoch, "by a change of primary");
    let vid = roam_crds::real_volume_id(&env.ns, "db");
    assert_eq!(
        storage_role(&env.endpoints[short], &vid).await,
        (roam_proto::storage::Role::Primary as i32, s.epoch)
    );

    // KUBECONFIG as a list of files, merged as kubectl merges them: the
    // first holds only a preference, the cluster comes from the second.
    let first = std::env::temp_dir().join(format!("{}-prefs.kubeconfig", env.ns));
    std::fs::write(
        &first,
        "apiVersion: v1\nkind: Config\npreferences: {}\nclusters: []\ncontexts: []\nusers: []\n",
    )
    .expect("write kubeconfig");
    let list = std::env::join_paths([first.as_path(), env.cluster.kubeconfig()])
        .expect("KUBECONFIG list")
        .to_string_lossy()
        .into_owned();
    let (code, out, _) = env
        .roam_with(&list, &["uncordon", &primary, "-o", "json"])
        .await;
    let _ = std::fs::remove_file(&first);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["cordoned"], false);
    let dc = Api::<DataCenter>::all(env.client.clone())
        .get(&primary)
        .await
        .expect("DataCenter");
    assert!(!dc.spec.cordoned, "spec.cordoned cleared");

    let (code, _, err) = env.roam(&["cordon", "nowhere", "--timeout", "0"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("DataCenter") && err.contains("not found"),
        "{err}"
    );
    env.cleanup().await;
}
