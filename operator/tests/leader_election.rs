//! Two operator replicas against the real control plane: only the one holding
//! the Lease acts; when it dies the other takes over. Needs no storage system
//! (the DataCenter controller's reconciles are what "acting" means here).

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use roam_e2e::wait_until;
use support::{Env, Operator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_act_at_once() {
    let mut env = Env::new("roam-leader").await;
    env.add_node("a", 1, None).await;
    env.add_dc("a", &[]).await;
    let mut ops = [
        Operator::start(&env, "one").await,
        Operator::start(&env, "two").await,
    ];
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);

    let leader = wait_until("a leader", Duration::from_secs(60), || async {
        let l = leases
            .get_opt("roam-operator")
            .await
            .map_err(|e| e.to_string())?;
        let holder = l.and_then(|l| l.spec?.holder_identity).ok_or("no holder")?;
        if ops[if holder == "one" { 0 } else { 1 }]
            .get("/readyz")
            .await
            == Some((200, "leading".to_string()))
        {
            Ok(if holder == "one" { 0 } else { 1 })
        } else {
            Err(format!("{holder} holds the lease but is not ready yet"))
        }
    })
    .await
    .expect("leader elected");
    let standby = 1 - leader;

    // For a while: the leader reconciles, the standby never does; it is a
    // ready spare and says it stands by.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            ops[standby].get("/readyz").await,
            Some((200, "standby".to_string())),
            "standby must report itself ready as a standby"
        );
        assert_eq!(
            ops[standby].counter("roam_operator_reconciles_total").await,
            0.0,
            "standby reconciled"
        );
        assert_eq!(ops[standby].get("/healthz").await.map(|r| r.0), Some(200));
    }
    assert!(
        ops[leader].counter("roam_operator_reconciles_total").await > 0.0,
        "leader never reconciled"
    );

    // The leader dies without releasing the lease; the standby takes over after it expires.
    ops[leader].kill().await;
    let holder = if standby == 0 { "one" } else { "two" };
    wait_until("standby takes over", Duration::from_secs(60), || async {
        let l = leases
            .get_opt("roam-operator")
            .await
            .map_err(|e| e.to_string())?;
        let h = l.and_then(|l| l.spec?.holder_identity).unwrap_or_default();
        let reconciles = ops[standby].counter("roam_operator_reconciles_total").await;
        if h == holder && reconciles > 0.0 {
            Ok(())
        } else {
            Err(format!("holder {h:?}, reconciles {reconciles}"))
        }
    })
    .await
    .expect("takeover");

    // A clean stop releases the lease at once.
    ops[standby].stop().await;
    let l = leases.get("roam-operator").await.expect("lease");
    assert_eq!(
        l.spec.and_then(|s| s.holder_identity),
        None,
        "lease released on SIGTERM"
    );
    env.cleanup().await;
}
