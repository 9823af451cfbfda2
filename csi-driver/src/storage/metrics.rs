//! The storage system's `/metrics` (Prometheus text), one series per volume
//! (and per member for lag and resync): what an operator watches to see how
//! much a volume writes, how long its flushes take, how far behind each
//! secondary is and how much a resync moved.
//!
//! Rendered from the replicas' own counters and status at each scrape, so
//! nothing here can drift from what the engine reports. Counters restart
//! from zero when a replica is reopened (Prometheus handles resets).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use roam_engine::MemberState;
use tracing::info;

use super::registry::Registry;

/// Serves `/metrics` on `listen` until the process ends.
pub async fn serve(listen: SocketAddr, registry: Arc<Registry>) -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move { render(&registry).await }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind metrics listener {listen}"))?;
    info!(%listen, "storage metrics listening");
    axum::serve(listener, app)
        .await
        .with_context(|| format!("serve metrics on {listen}"))
}

/// Prometheus label values: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn render(registry: &Registry) -> String {
    let volumes = registry.list().await;
    let mut out = String::new();
    let families: [(&str, &str, &str); 8] = [
        (
            "roam_storage_writes_total",
            "counter",
            "Host writes acknowledged by this replica as primary",
        ),
        (
            "roam_storage_write_bytes_total",
            "counter",
            "Bytes of those writes",
        ),
        (
            "roam_storage_flushes_total",
            "counter",
            "Host flushes completed",
        ),
        (
            "roam_storage_flush_seconds_total",
            "counter",
            "Time spent in those flushes",
        ),
        (
            "roam_storage_written_seq",
            "gauge",
            "Highest write sequence number accepted",
        ),
        (
            "roam_storage_member_lag_bytes",
            "gauge",
            "Bytes a secondary does not hold yet",
        ),
        (
            "roam_storage_member_in_sync",
            "gauge",
            "1 when the secondary is InSync",
        ),
        (
            "roam_storage_member_resync_bytes_total",
            "counter",
            "Region bytes copied to a secondary by resyncs",
        ),
    ];
    for (i, (name, kind, help)) in families.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for v in &volumes {
            let id = label(v.id());
            match i {
                0..=4 => {
                    let io = v.io_counters();
                    let value = match i {
                        0 => io.writes as f64,
                        1 => io.write_bytes as f64,
                        2 => io.flushes as f64,
                        3 => io.flush_micros as f64 / 1e6,
                        _ => v.status().written_seq as f64,
                    };
                    let _ = writeln!(out, "{name}{{volume=\"{id}\"}} {value}");
                }
                _ => {
                    for m in v.status().members {
                        let value = match i {
                            5 => m.lag_bytes as f64,
                            6 => f64::from(u8::from(m.state == MemberState::InSync)),
                            _ => m.resync_bytes as f64,
                        };
                        let dc = label(&m.data_center);
                        let _ = writeln!(out, "{name}{{volume=\"{id}\",member=\"{dc}\"}} {value}");
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
