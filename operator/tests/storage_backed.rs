//! The operator against the real control plane and real storage systems
//! (`roam-csi storage` processes on 127.0.0.1, one per data center), Node
//! objects without kubelets, and pods that only carry `spec.nodeName`.
//! Each test names the claim it shows where it shows one.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use roam_crds::{CopyVolumeGroup, MemberRole, VolumePhase};
use roam_e2e::wait_until;
use roam_proto::storage::Role;
use support::{Env, Operator, volume_yaml};

const READY: Duration = Duration::from_secs(90);

fn ready(v: &roam_crds::VirtualVolume) -> bool {
    v.status
        .as_ref()
        .is_some_and(|s| s.phase == VolumePhase::Ready)
}

fn primary(v: &roam_crds::VirtualVolume) -> Option<(String, u64)> {
    let s = v.status.as_ref()?;
    Some((s.primary_data_center.clone()?, s.epoch))
}

/// Role and epoch the storage system itself reports (`None`: no such replica).
async fn replica_role(endpoint: &str, volume_id: &str) -> Option<(Role, u64)> {
    let r = support::replica(endpoint, volume_id).await?;
    Some((Role::try_from(r.role).unwrap_or(Role::Unspecified), r.epoch))
}

async fn three_dcs(prefix: &str) -> Env {
    let mut env = Env::new(prefix).await;
    env.add_dc_with_storage("a", &[("b", 2), ("c", 10)]).await;
    env.add_dc_with_storage("b", &[("a", 2), ("c", 5)]).await;
    env.add_dc_with_storage("c", &[("a", 10), ("b", 5)]).await;
    env
}

/// A PV for the volume, a PVC bound to it, and a pod on `node` that mounts it.
async fn pod_on(env: &Env, volume: &str, pod: &str, node: &str) {
    let pv_name = format!("pv-{}-{volume}", env.ns);
    let pvs: Api<PersistentVolume> = Api::all(env.client.clone());
    if pvs.get_opt(&pv_name).await.expect("get pv").is_none() {
        let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "64Mi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                "claimRef": {"namespace": env.ns, "name": volume},
                "csi": {"driver": roam_crds::DRIVER_NAME, "volumeHandle": roam_crds::csi_volume_id(&env.ns, volume)}
            }
        }))
        .expect("pv");
        pvs.create(&PostParams::default(), &pv)
            .await
            .expect("create pv");
        let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": volume},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv_name,
                     "resources": {"requests": {"storage": "64Mi"}}}
        }))
        .expect("pvc");
        Api::<PersistentVolumeClaim>::namespaced(env.client.clone(), &env.ns)
            .create(&PostParams::default(), &pvc)
            .await
            .expect("create pvc");
    }
    let p: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": volume}}]
        }
    }))
    .expect("pod");
    Api::<Pod>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &p)
        .await
        .expect("create pod");
}

async fn delete_pod(env: &Env, pod: &str) {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let _ = pods
        .delete(
            pod,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await;
    // Without a kubelet the pod object stays until forced away.
    let _ = wait_until("pod gone", Duration::from_secs(30), || async {
        match pods.get_opt(pod).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
}

async fn cleanup_pv(env: &Env, volume: &str) {
    let _ = Api::<PersistentVolumeClaim>::namespaced(env.client.clone(), &env.ns)
        .delete(volume, &DeleteParams::default())
        .await;
    let _ = Api::<PersistentVolume>::all(env.client.clone())
        .delete(&format!("pv-{}-{volume}", env.ns), &DeleteParams::default())
        .await;
}

async fn events_with_reason(env: &Env, reason: &str) -> Vec<Event> {
    let evs: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    evs.list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_reach_ready() {
    let env = three_dcs("roam-ready").await;
    let _op = Operator::start(&env, "op").await;
    env.apply_yaml(&volume_yaml(
        "sync-ab",
        &[env.dc("a"), env.dc("b")],
        "Sync",
        "  failurePolicy: Block\n",
    ))
    .await;
    env.apply_yaml(&volume_yaml(
        "async-abc",
        &[env.dc("a"), env.dc("b"), env.dc("c")],
        "Async",
        "  maxLagBytes: 1048576\n  maxLagSeconds: 5\n",
    ))
    .await;
    for name in ["sync-ab", "async-abc"] {
        let v = env.wait_volume(name, "Ready", READY, ready).await;
        let s = v.status.unwrap();
        assert_eq!(
            s.primary_data_center.as_deref(),
            Some(env.dc("a").as_str()),
            "{name}: first listed DC is primary"
        );
        assert_eq!(s.epoch, 1);
        let g: CopyVolumeGroup = Api::namespaced(env.client.clone(), &env.ns)
            .get(name)
            .await
            .expect("group");
        let vid = roam_crds::real_volume_id(&env.ns, name);
        for m in &g.spec.members {
            assert_eq!(m.volume_id, vid);
            let (role, epoch) = replica_role(&m.endpoint, &vid)
                .await
                .expect("replica exists on its storage system");
            let want = if m.data_center == env.dc("a") {
                Role::Primary
            } else {
                Role::Secondary
            };
            assert_eq!((role, epoch), (want, 1), "{name} in {}", m.data_center);
        }
    }
    // Waited for, not read once: another operator on the same control plane
    // (a cluster's own, which cannot reach these storage systems) may have
    // just overwritten the status; this operator rewrites it at once.
    let dcs: Api<roam_crds::DataCenter> = Api::all(env.client.clone());
    let endpoint = env.storage["a"].endpoint.clone();
    wait_until("dc a reports its storage system", READY, || async {
        let a = dcs.get(&env.dc("a")).await.map_err(|e| e.to_string())?;
        let st = a.status.ok_or("no status")?;
        if st.ready_storage_systems == 1 && st.storage_systems[0].endpoint == endpoint {
            Ok(())
        } else {
            Err(format!("status {st:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_2_3_13_primary_follows_the_pod_and_the_log_in() {
    let env = three_dcs("roam-move").await;
    let _op = Operator::start(&env, "op").await;
    env.apply_yaml(&volume_yaml("db", &[env.dc("a"), env.dc("b")], "Sync", ""))
        .await;
    let v = env.wait_volume("db", "Ready", READY, ready).await;
    assert_eq!(primary(&v), Some((env.dc("a"), 1)));

    // Claim 2: a pod scheduled to a node in dc b -> b's replica becomes primary, epoch + 1.
    pod_on(&env, "db", "app-1", &env.node("b", 1)).await;
    env.wait_volume("db", "primary in b at epoch 2", READY, |v| {
        ready(v) && primary(v) == Some((env.dc("b"), 2))
    })
    .await;
    let vid = roam_crds::real_volume_id(&env.ns, "db");
    assert_eq!(
        replica_role(&env.storage["b"].endpoint, &vid).await,
        Some((Role::Primary, 2))
    );
    assert_eq!(
        replica_role(&env.storage["a"].endpoint, &vid).await,
        Some((Role::Secondary, 2))
    );
    let g: CopyVolumeGroup = Api::namespaced(env.client.clone(), &env.ns)
        .get("db")
        .await
        .expect("group");
    let rel = g
        .status
        .and_then(|s| s.last_relocation)
        .expect("relocation recorded");
    assert_eq!((rel.from, rel.to, rel.epoch), (env.dc("a"), env.dc("b"), 2));
    assert!(
        !events_with_reason(&env, "Relocated").await.is_empty(),
        "a Relocated event"
    );

    // Claim 3: a second input (the log-in from dc a, claim 13) reverses the roles again.
    delete_pod(&env, "app-1").await;
    env.attach("db", Some(&env.node("a", 1))).await;
    env.wait_volume("db", "primary back in a at epoch 3", READY, |v| {
        ready(v) && primary(v) == Some((env.dc("a"), 3))
    })
    .await;
    assert_eq!(
        replica_role(&env.storage["a"].endpoint, &vid).await,
        Some((Role::Primary, 3))
    );
    assert_eq!(
        replica_role(&env.storage["b"].endpoint, &vid).await,
        Some((Role::Secondary, 3))
    );
    env.attach("db", None).await;
    cleanup_pv(&env, "db").await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_5_nearest_data_center_becomes_primary() {
    let mut env = three_dcs("roam-near").await;
    // dc x holds no replica; it is nearest to c, then b, then a.
    env.add_node("x", 1, None).await;
    env.add_dc("x", &[("a", 30), ("b", 20), ("c", 10)]).await;
    let _op = Operator::start(&env, "op").await;
    env.apply_yaml(&volume_yaml(
        "near",
        &[env.dc("a"), env.dc("b"), env.dc("c")],
        "Async",
        "",
    ))
    .await;
    env.wait_volume("near", "Ready", READY, ready).await;
    env.attach("near", Some(&env.node("x", 1))).await;
    env.wait_volume("near", "primary in c (nearest to x)", READY, |v| {
        ready(v) && primary(v) == Some((env.dc("c"), 2))
    })
    .await;
    // Proximity changes: b is now nearest to x.
    let patch = serde_json::json!({"spec": {"proximity": {env.dc("b"): 1}}});
    Api::<roam_crds::DataCenter>::all(env.client.clone())
        .patch(&env.dc("x"), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    env.wait_volume("near", "primary in b (now nearest)", READY, |v| {
        ready(v) && primary(v) == Some((env.dc("b"), 3))
    })
    .await;
    env.attach("near", None).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_6_third_data_center_is_another_secondary() {
    let env = three_dcs("roam-third").await;
    let _op = Operator::start(&env, "op").await;
    env.apply_yaml(&volume_yaml(
        "tri",
        &[env.dc("a"), env.dc("b"), env.dc("c")],
        "Async",
        "",
    ))
    .await;
    env.wait_volume("tri", "Ready", READY, ready).await;
    env.attach("tri", Some(&env.node("c", 1))).await;
    env.wait_volume("tri", "primary in c", READY, |v| {
        ready(v) && primary(v) == Some((env.dc("c"), 2))
    })
    .await;
    let vid = roam_crds::real_volume_id(&env.ns, "tri");
    for (dc, want) in [
        ("a", Role::Secondary),
        ("b", Role::Secondary),
        ("c", Role::Primary),
    ] {
        assert_eq!(
            replica_role(&env.storage[dc].endpoint, &vid).await,
            Some((want, 2)),
            "{dc}"
        );
    }
    let g: CopyVolumeGroup = Api::namespaced(env.client.clone(), &env.ns)
        .get("tri")
        .await
        .expect("group");
    let members = g.status.expect("status").members;
    assert_eq!(
        members
            .iter()
            .filter(|m| m.role == MemberRole::Secondary)
            .count(),
        2,
        "{members:?}"
    );
    env.attach("tri", None).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_after_the_primary_storage_is_killed() {
    let mut env = three_dcs("roam-failover").await;
    let _op = Operator::start(&env, "op").await;
    env.apply_yaml(&volume_yaml(
        "fo",
        &[env.dc("a"), env.dc("b")],
        "Sync",
        "  failover: {mode: Automatic, gracePeriodSeconds: 3}\n",
    ))
    .await;
    env.wait_volume("fo", "Ready", READY, ready).await;
    env.storage.get_mut("a").expect("a").kill().await;
    env.wait_volume("fo", "Degraded", READY, |v| {
        v.status
            .as_ref()
            .is_some_and(|s| s.phase == VolumePhase::Degraded)
    })
    .await;
    env.wait_volume("fo", "b promoted at epoch 2", READY, |v| {
        primary(v) == Some((env.dc("b"), 2))
    })
    .await;
    let vid = roam_crds::real_volume_id(&env.ns, "fo");
    assert_eq!(
        replica_role(&env.storage["b"].endpoint, &vid).await,
        Some((Role::Primary, 2))
    );
    let g: CopyVolumeGroup = Api::namespaced(env.client.clone(), &env.ns)
        .get("fo")
        .await
        .expect("group");
    let f = g
        .status
        .and_then(|s| s.last_failover)
        .expect("failover recorded");
    assert_eq!(
        (f.from, f.to, f.epoch, f.possible_loss_bytes),
        (env.dc("a"), env.dc("b"), 2, 0)
    );
    // a comes back: it becomes a secondary of b at the new epoch.
    env.storage.get_mut("a").expect("a").restart().await;
    env.wait_volume("fo", "Ready again", READY, |v| {
        ready(v) && primary(v) == Some((env.dc("b"), 2))
    })
    .await;
    assert_eq!(
        replica_role(&env.storage["a"].endpoint, &vid).await,
        Some((Role::Secondary, 2))
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_volume_deletes_its_real_volumes_even_after_an_outage() {
    let mut env = three_dcs("roam-delete").await;
    let _op = Operator::start(&env, "op").await;
    env.apply_yaml(&volume_yaml(
        "gone",
        &[env.dc("a"), env.dc("b")],
        "Sync",
        "",
    ))
    .await;
    env.wait_volume("gone", "Ready", READY, ready).await;
    let vid = roam_crds::real_volume_id(&env.ns, "gone");
    env.storage.get_mut("b").expect("b").kill().await;
    env.volumes()
        .delete("gone", &DeleteParams::default())
        .await
        .expect("delete");
    let v = env
        .wait_volume("gone", "CleanupBlocked naming b", READY, |v| {
            v.status.as_ref().is_some_and(|s| {
                roam_crds::conditions::get(&s.conditions, "CleanupBlocked")
                    .is_some_and(|c| c.status == "True" && c.message.contains(&env.dc("b")))
            })
        })
        .await;
    assert!(v.metadata.deletion_timestamp.is_some());
    assert_eq!(
        replica_role(&env.storage["a"].endpoint, &vid).await,
        None,
        "a's real volume deleted"
    );
    env.storage.get_mut("b").expect("b").restart().await;
    let api = env.volumes();
    wait_until("volume gone", READY, || async {
        match api.get_opt("gone").await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .expect("finalizer released");
    assert_eq!(
        replica_role(&env.storage["b"].endpoint, &vid).await,
        None,
        "b's real volume deleted"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_operator_finishes_a_relocation() {
    let env = three_dcs("roam-restart").await;
    let mut op = Operator::start(&env, "op").await;
    env.apply_yaml(&volume_yaml("mid", &[env.dc("a"), env.dc("b")], "Sync", ""))
        .await;
    env.wait_volume("mid", "Ready", READY, ready).await;
    op.kill().await;
    // The state an operator leaves when it dies right after writing the intent:
    // the group spec says b at epoch 2, the storage systems still say a at 1.
    let groups: Api<CopyVolumeGroup> = Api::namespaced(env.client.clone(), &env.ns);
    let patch = serde_json::json!({"spec": {"desiredPrimary": env.dc("b"), "epoch": 2}});
    groups
        .patch("mid", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("intent");
    let vid = roam_crds::real_volume_id(&env.ns, "mid");
    assert_eq!(
        replica_role(&env.storage["a"].endpoint, &vid).await,
        Some((Role::Primary, 1))
    );
    let _op2 = Operator::start(&env, "op2").await;
    env.wait_volume("mid", "primary in b at epoch 2", READY, |v| {
        ready(v) && primary(v) == Some((env.dc("b"), 2))
    })
    .await;
    assert_eq!(
        replica_role(&env.storage["b"].endpoint, &vid).await,
        Some((Role::Primary, 2))
    );
    assert_eq!(
        replica_role(&env.storage["a"].endpoint, &vid).await,
        Some((Role::Secondary, 2))
    );
    env.cleanup().await;
}

/// A volume larger than its data centers' disks is refused by their storage
/// systems before anything is allocated, and the volume says why in its Ready
/// condition (an event alone expires): the failed step, the data center and
/// "no space".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_too_large_for_the_disks_says_why_it_is_not_ready() {
    let env = three_dcs("roam-nospace").await;
    let _op = Operator::start(&env, "op").await;
    env.apply_yaml(&format!(
        "apiVersion: roam.dev/v1alpha1\nkind: VirtualVolume\nmetadata:\n  name: huge\nspec:\n  size: 512Ti\n  dataCenters: [{}, {}]\n  transferType: Sync\n",
        env.dc("a"),
        env.dc("b")
    ))
    .await;
    let v = env
        .wait_volume("huge", "Ready=False naming the full disk", READY, |v| {
            v.status.as_ref().is_some_and(|s| {
                roam_crds::conditions::get(&s.conditions, "Ready").is_some_and(|c| {
                    c.status == "False"
                        && c.reason == "ActionFailed"
                        && c.message.contains("no space")
                        && c.message.contains("CreateReplica")
                })
            })
        })
        .await;
    assert_ne!(v.status.map(|s| s.phase), Some(VolumePhase::Ready));
    let vid = roam_crds::real_volume_id(&env.ns, "huge");
    for dc in ["a", "b"] {
        assert_eq!(
            replica_role(&env.storage[dc].endpoint, &vid).await,
            None,
            "no replica on {dc}"
        );
    }
    env.cleanup().await;
}
