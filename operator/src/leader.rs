//! Leader election with a `coordination.k8s.io/v1` Lease: only the replica
//! holding the lease runs the controllers.
//!
//! Expected flow: [`acquire`] polls until the lease is free (no holder, or
//! not renewed within its duration) and takes it with an optimistic-concurrency
//! replace; [`hold`] renews it and returns when it is lost (a renewal failed
//! for longer than the lease duration, or another holder appears), after which
//! the process must stop acting (main exits). [`release`] clears the holder on
//! a clean shutdown so a standby takes over at once.
//!
//! Guarantee: a replica acts only between a successful acquire and the first
//! renewal it cannot confirm within `renew_deadline`, which is shorter than
//! the lease duration, so two replicas never act at once (given clocks that
//! do not drift by more than the margin).

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
    pub renew_deadline: Duration,
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renew) = spec.renew_time.as_ref() else {
        return true;
    };
    let dur = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    now.duration_since(renew.0).as_secs() >= dur
}

fn ours(cfg: &LeaseConfig, now: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.lease_duration.as_secs() as i32),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// Try once; `Ok(true)` when this replica now holds the lease.
async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    ..Default::default()
                },
                spec: Some(ours(cfg, now, 0)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let mine = holder == cfg.identity;
            if !mine && !holder.is_empty() && !expired(&spec, now) {
                return Ok(false);
            }
            let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
            lease.spec = Some(ours(cfg, now, transitions));
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Wait until this replica holds the lease.
pub async fn acquire(client: Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut logged = false;
    loop {
        match try_acquire(&api, cfg).await {
            Ok(true) => {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, "acquired the leader lease");
                return;
            }
            Ok(false) => {
                if !logged {
                    tracing::info!(lease = %cfg.name, "another replica leads; standing by");
                    logged = true;
                }
            }
            Err(e) => tracing::warn!(lease = %cfg.name, "acquiring the lease: {e:#}"),
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
}

/// Renew the lease until it is lost; returns why.
pub async fn hold(client: Client, cfg: &LeaseConfig) -> String {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.renew_every).await;
        let attempt = tokio::time::timeout(cfg.renew_deadline, async {
            let mut lease = api.get(&cfg.name).await?;
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
                return Ok::<bool, kube::Error>(false);
            }
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            api.replace(&cfg.name, &PostParams::default(), &lease)
                .await?;
            Ok(true)
        })
        .await;
        match attempt {
            Ok(Ok(true)) => last_ok = tokio::time::Instant::now(),
            Ok(Ok(false)) => return "another replica holds the lease".into(),
            Ok(Err(e)) => tracing::warn!(lease = %cfg.name, "renewing the lease: {e:#}"),
            Err(_) => tracing::warn!(lease = %cfg.name, "renewing the lease timed out"),
        }
        if last_ok.elapsed() >= cfg.renew_deadline {
            return format!("could not renew the lease for {:?}", last_ok.elapsed());
        }
    }
}

/// Give the lease up (clean shutdown).
pub async fn release(client: Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    if let Ok(mut lease) = api.get(&cfg.name).await {
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() == Some(cfg.identity.as_str()) {
            spec.holder_identity = None;
            spec.renew_time = None;
            if let Err(e) = api.replace(&cfg.name, &PostParams::default(), &lease).await {
                tracing::warn!(lease = %cfg.name, "releasing the lease: {e:#}");
            }
        }
    }
}
