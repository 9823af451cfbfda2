//! What every CSI call leaves behind: one log line and three metrics.
//!
//! [`RpcObserver::observe`] wraps a call: when it ends it logs once, with the
//! RPC, volume, node, outcome and duration, and counts it in
//! `roam_csi_rpc_total`, `roam_csi_rpc_errors_total` (by gRPC code) and
//! `roam_csi_rpc_duration_seconds`. Labels are the RPC name and the code's
//! stable name, never an id, so the series stay few. The node plugin adds
//! one series per staged volume, `roam_csi_node_frontend_healthy`
//! ([`RpcObserver::frontends_checked`]). [`serve_metrics`]
//! exposes them as Prometheus text on `/metrics`, beside a `/healthz` that
//! answers while the process serves.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tonic::Status;
use tracing::{info, warn};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    rpc: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrontendLabels {
    /// The real volume id (`<namespace>.<name>`), as in the storage metrics.
    volume: String,
    node: String,
}

type HistogramFamily = Family<RpcLabels, Histogram, fn() -> Histogram>;

/// Counts, errors and durations of the CSI calls of one process.
#[derive(Clone)]
pub struct RpcObserver {
    calls: Family<RpcLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: HistogramFamily,
    frontends: Family<FrontendLabels, Gauge>,
    registry: Arc<Registry>,
    node: Arc<str>,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl RpcObserver {
    /// `node` is this process's node name (empty for the controller).
    pub fn new(node: &str) -> Self {
        let calls = Family::<RpcLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let mut registry = Registry::with_prefix("roam_csi");
        registry.register("rpc", "CSI calls handled", calls.clone());
        registry.register(
            "rpc_errors",
            "CSI calls that failed, by gRPC code",
            errors.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "Duration of CSI calls",
            durations.clone(),
        );
        let frontends = Family::<FrontendLabels, Gauge>::default();
        registry.register(
            "node_frontend_healthy",
            "Per volume staged on this node: 1 while its frontend (FUSE export, loop device) \
             carries I/O, 0 once it stopped",
            frontends.clone(),
        );
        Self {
            calls,
            errors,
            durations,
            frontends,
            registry: Arc::new(registry),
            node: node.into(),
        }
    }

    /// Runs one call, then logs it once and records it.
    pub async fn observe<T, F>(&self, rpc: &'static str, volume: &str, call: F) -> Result<T, Status>
    where
        F: Future<Output = Result<T, Status>>,
    {
        let started = Instant::now();
        let result = call.await;
        let elapsed = started.elapsed();
        let labels = RpcLabels { rpc };
        self.calls.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        let millis = elapsed.as_secs_f64() * 1000.0;
        match &result {
            Ok(_) => info!(rpc, volume, node = %self.node, millis, "CSI call succeeded"),
            Err(status) => {
                self.errors
                    .get_or_create(&ErrorLabels {
                        rpc,
                        code: code_name(status.code()),
                    })
                    .inc();
                warn!(
                    rpc,
                    volume,
                    node = %self.node,
                    millis,
                    code = code_name(status.code()),
                    "CSI call failed: {}",
                    status.message()
                );
            }
        }
        result
    }

    /// One series per volume with a frontend on this node, labelled with the
    /// real volume id as in the storage metrics: 0 for the `faulty` ones, 1
    /// for the other `staged` ones (CSI ids). Volumes in neither set lose
    /// their series.
    pub fn set_frontend_health(&self, staged: &BTreeSet<String>, faulty: &BTreeSet<String>) {
        self.frontends.clear();
        for volume in staged.union(faulty) {
            let real = match crate::controller::params::split_volume_id(volume) {
                Some((ns, name)) => roam_crds::real_volume_id(ns, name),
                None => volume.clone(),
            };
            self.frontends
                .get_or_create(&FrontendLabels {
                    volume: real,
                    node: self.node.to_string(),
                })
                .set(i64::from(!faulty.contains(volume)));
        }
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            warn!("encoding metrics: {e}");
        }
        out
    }
}

/// Stable upper-case name of a gRPC code (as in the gRPC specification).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Serves `GET /metrics` and `GET /healthz` until the process ends.
pub async fn serve_metrics(addr: SocketAddr, observer: RpcObserver) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let observer = observer.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        observer.encode(),
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, "metrics listening");
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_staged_volume_has_a_frontend_series_until_it_is_unstaged() {
        let observer = RpcObserver::new("n1");
        let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        observer.set_frontend_health(&set(&["apps/a", "apps/b"]), &set(&["apps/b"]));
        let text = observer.encode();
        assert!(
            text.contains(r#"roam_csi_node_frontend_healthy{volume="apps.a",node="n1"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"roam_csi_node_frontend_healthy{volume="apps.b",node="n1"} 0"#),
            "{text}"
        );
        observer.set_frontend_health(&set(&["apps/b"]), &set(&[]));
        let text = observer.encode();
        assert!(!text.contains(r#"volume="apps.a""#), "{text}");
        assert!(
            text.contains(r#"roam_csi_node_frontend_healthy{volume="apps.b",node="n1"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn calls_and_errors_are_counted_by_rpc_and_code() {
        let observer = RpcObserver::new("n1");
        let ok: Result<(), Status> = observer.observe("NodeGetInfo", "", async { Ok(()) }).await;
        assert!(ok.is_ok());
        let err: Result<(), Status> = observer
            .observe("NodeStageVolume", "ns/v", async {
                Err(Status::invalid_argument("volume_id"))
            })
            .await;
        assert!(err.is_err());
        let text = observer.encode();
        assert!(
            text.contains("roam_csi_rpc_total{rpc=\"NodeGetInfo\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "roam_csi_rpc_errors_total{rpc=\"NodeStageVolume\",code=\"INVALID_ARGUMENT\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("roam_csi_rpc_duration_seconds_count{rpc=\"NodeStageVolume\"} 1"));
    }
}
