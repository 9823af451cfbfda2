//! Prometheus metrics and the HTTP endpoints `/metrics`, `/healthz` and
//! `/readyz`. A standby replica is ready too: it is a healthy spare that
//! takes over when the leader's Lease lapses, and a Deployment whose standby
//! never turned ready would never finish a rollout. The body says which.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use roam_crds::CopyVolumeGroupStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RelocationLabels {
    /// `planned` or `failover`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub namespace: String,
    pub group: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<ControllerLabels, Histogram>,
    pub relocations: Family<RelocationLabels, Counter>,
    pub relocation_seconds: Histogram,
    pub lag_bytes: Family<GroupLabels, Gauge>,
    /// From each group's `status.lastFailover`, so that they survive a
    /// restart of the operator and an alert can tell a failover that may
    /// have lost writes from one that lost nothing.
    pub failover_loss_bytes: Family<GroupLabels, Gauge>,
    pub failover_loss_seconds: Family<GroupLabels, Gauge<f64, AtomicU64>>,
    pub failover_at: Family<GroupLabels, Gauge>,
    pub leader: Gauge,
    pub ready: AtomicBool,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("roam_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        let relocations = Family::<RelocationLabels, Counter>::default();
        let relocation_seconds =
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]);
        let lag_bytes = Family::<GroupLabels, Gauge>::default();
        let failover_loss_bytes = Family::<GroupLabels, Gauge>::default();
        let failover_loss_seconds = Family::<GroupLabels, Gauge<f64, AtomicU64>>::default();
        let failover_at = Family::<GroupLabels, Gauge>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed", errors.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Time per reconcile",
            duration.clone(),
        );
        registry.register(
            "relocations",
            "Changes of primary finished",
            relocations.clone(),
        );
        registry.register(
            "relocation_duration_seconds",
            "Time from intent to new primary",
            relocation_seconds.clone(),
        );
        registry.register(
            "group_lag_bytes",
            "Largest secondary lag per copy volume group",
            lag_bytes.clone(),
        );
        registry.register(
            "last_failover_possible_loss_bytes",
            "Writes the last failover of the group may have lost, bytes (status.lastFailover)",
            failover_loss_bytes.clone(),
        );
        registry.register(
            "last_failover_possible_loss_seconds",
            "Writes the last failover of the group may have lost, seconds (status.lastFailover)",
            failover_loss_seconds.clone(),
        );
        registry.register(
            "last_failover_timestamp_seconds",
            "When the last failover of the group happened, Unix time",
            failover_at.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            relocations,
            relocation_seconds,
            lag_bytes,
            failover_loss_bytes,
            failover_loss_seconds,
            failover_at,
            leader,
            ready: AtomicBool::new(false),
        }
    }

    /// Count one reconcile of `controller` that took `took`.
    pub fn observe(&self, controller: &str, took: Duration) {
        let l = ControllerLabels {
            controller: controller.into(),
        };
        self.reconciles.get_or_create(&l).inc();
        self.duration.get_or_create(&l).observe(took.as_secs_f64());
    }

    /// The per-group series, from the status the operator writes for the
    /// group `namespace/group`.
    pub fn record_group(&self, namespace: &str, group: &str, status: &CopyVolumeGroupStatus) {
        let l = GroupLabels {
            namespace: namespace.into(),
            group: group.into(),
        };
        self.lag_bytes
            .get_or_create(&l)
            .set(i64::try_from(status.lag_bytes).unwrap_or(i64::MAX));
        if let Some(f) = &status.last_failover {
            self.failover_loss_bytes
                .get_or_create(&l)
                .set(i64::try_from(f.possible_loss_bytes).unwrap_or(i64::MAX));
            self.failover_loss_seconds
                .get_or_create(&l)
                .set(f.possible_loss_seconds);
            self.failover_at.get_or_create(&l).set(f.at.0.as_second());
        }
    }

    /// Drop the series of a group that no longer exists.
    pub fn forget_group(&self, namespace: &str, group: &str) {
        let l = GroupLabels {
            namespace: namespace.into(),
            group: group.into(),
        };
        self.lag_bytes.remove(&l);
        self.failover_loss_bytes.remove(&l);
        self.failover_loss_seconds.remove(&l);
        self.failover_at.remove(&l);
    }

    /// Count one failed reconcile.
    pub fn error(&self, controller: &str, error: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller: controller.into(),
                error: error.into(),
            })
            .inc();
    }

    fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!("encoding metrics: {e:#}");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "leading")
    } else {
        (StatusCode::OK, "standby")
    }
}

/// Serve the endpoints until the process ends.
pub async fn serve(addr: SocketAddr, m: Arc<Metrics>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(m);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
    use roam_crds::{CopyVolumeGroupStatus, FailoverRecord};

    use super::Metrics;

    fn failover(bytes: u64, seconds: f64) -> CopyVolumeGroupStatus {
        CopyVolumeGroupStatus {
            lag_bytes: 7,
            last_failover: Some(FailoverRecord {
                from: "a".into(),
                to: "b".into(),
                epoch: 4,
                possible_loss_bytes: bytes,
                possible_loss_seconds: seconds,
                at: Time(Timestamp::from_second(1_800_000_000).unwrap()),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_last_failover_and_its_possible_loss_are_exported_per_group() {
        let m = Metrics::new();
        m.record_group("apps", "db", &failover(4096, 1.5));
        m.record_group("apps", "web", &CopyVolumeGroupStatus::default());
        let out = m.render();
        let l = r#"{namespace="apps",group="db"}"#;
        for line in [
            format!("roam_operator_last_failover_possible_loss_bytes{l} 4096"),
            format!("roam_operator_last_failover_possible_loss_seconds{l} 1.5"),
            format!("roam_operator_last_failover_timestamp_seconds{l} 1800000000"),
            format!("roam_operator_group_lag_bytes{l} 7"),
        ] {
            assert!(out.lines().any(|x| x == line), "{line} missing from\n{out}");
        }
        // A group that never failed over has no failover series.
        assert!(
            !out.lines()
                .any(|x| x.starts_with("roam_operator_last_failover") && x.contains("web")),
            "{out}"
        );
        m.forget_group("apps", "db");
        assert!(!m.render().contains(r#"group="db""#));
    }
}
