//! The storage system's `/metrics` (Prometheus text), one series per volume
//! (and per member for lag and resync): what an operator watches to see which
//! data center is primary at which epoch, how much a volume reads and writes,
//! how long its reads, writes and flushes take (histograms), how far behind
//! each secondary is (bytes and seconds, and against the group's bound), how
//! much a resync moved, and how much room the storage system has left.
//! docs/operations.md lists every series.
//!
//! Rendered from the replicas' own counters and status at each scrape, so
//! nothing here can drift from what the engine reports. Counters restart
//! from zero when a replica is reopened (Prometheus handles resets). Every
//! series carries `data_center` and `node` (this storage system's), so that
//! a dashboard can sum per data center without relabelling.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use roam_engine::{LATENCY_BUCKETS_MICROS, LatencySnapshot, MemberState, Role};
use tracing::info;

use super::registry::{Registry, free_bytes};

/// Serves `/metrics` on `listen` until the process ends.
pub async fn serve(listen: SocketAddr, registry: Arc<Registry>) -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    render(&registry).await,
                )
            }
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

/// The role as a label value.
fn role_name(role: Role) -> &'static str {
    match role {
        Role::None => "none",
        Role::Primary => "primary",
        Role::Secondary => "secondary",
    }
}

/// One metric family: its samples are appended under one HELP/TYPE header.
/// A sample's suffix (`_bucket`, `_sum`, `_count`) is empty but for histograms.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(&'static str, String, f64)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind,
            help,
            samples: vec![],
        }
    }

    fn push(&mut self, labels: String, value: f64) {
        self.samples.push(("", labels, value));
    }

    /// A latency histogram in seconds: cumulative buckets, sum and count.
    fn push_histogram(&mut self, labels: &str, h: &LatencySnapshot) {
        let mut below = 0;
        for (bound, n) in LATENCY_BUCKETS_MICROS.iter().zip(&h.buckets) {
            below += n;
            let le = *bound as f64 / 1e6;
            self.samples
                .push(("_bucket", format!("{labels},le=\"{le}\""), below as f64));
        }
        let count = h.count();
        self.samples
            .push(("_bucket", format!("{labels},le=\"+Inf\""), count as f64));
        self.samples
            .push(("_sum", labels.to_string(), h.sum_micros as f64 / 1e6));
        self.samples
            .push(("_count", labels.to_string(), count as f64));
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (suffix, labels, value) in &self.samples {
            let _ = writeln!(out, "{}{suffix}{{{labels}}} {value}", self.name);
        }
    }
}

async fn render(registry: &Registry) -> String {
    let volumes = registry.list().await;
    let here = format!(
        "data_center=\"{}\",node=\"{}\"",
        label(&registry.data_center),
        label(&registry.node)
    );
    let mut role = Family::new(
        "roam_storage_volume_role",
        "gauge",
        "1 for the role this replica holds (role: primary, secondary, none)",
    );
    let mut epoch = Family::new(
        "roam_storage_volume_epoch",
        "gauge",
        "Epoch this replica holds",
    );
    let mut fenced = Family::new(
        "roam_storage_volume_fenced",
        "gauge",
        "1 while this replica refuses writes (a change of primary in flight, or superseded)",
    );
    let mut size = Family::new(
        "roam_storage_volume_size_bytes",
        "gauge",
        "Size of the real volume",
    );
    let mut reads = Family::new(
        "roam_storage_reads_total",
        "counter",
        "Host reads served by this replica as primary",
    );
    let mut read_bytes = Family::new(
        "roam_storage_read_bytes_total",
        "counter",
        "Bytes of those reads",
    );
    let mut read_seconds = Family::new(
        "roam_storage_read_duration_seconds",
        "histogram",
        "Time to serve a host read",
    );
    let mut writes = Family::new(
        "roam_storage_writes_total",
        "counter",
        "Host writes acknowledged by this replica as primary",
    );
    let mut write_bytes = Family::new(
        "roam_storage_write_bytes_total",
        "counter",
        "Bytes of those writes",
    );
    let mut write_seconds = Family::new(
        "roam_storage_write_duration_seconds",
        "histogram",
        "Time from a host write to its acknowledgement (for Sync: held by every in-sync member)",
    );
    let mut flushes = Family::new(
        "roam_storage_flushes_total",
        "counter",
        "Host flushes completed (durable here and on every in-sync Sync member)",
    );
    let mut flush_seconds = Family::new(
        "roam_storage_flush_duration_seconds",
        "histogram",
        "Time from a host flush to its completion",
    );
    let mut written = Family::new(
        "roam_storage_written_seq",
        "gauge",
        "Highest write sequence number accepted",
    );
    let mut durable = Family::new(
        "roam_storage_durable_seq",
        "gauge",
        "Highest write sequence number durable on this replica",
    );
    let mut transfer = Family::new(
        "roam_storage_last_transfer_seconds",
        "gauge",
        "Duration of the last change of primary handled here",
    );
    let mut bound_bytes = Family::new(
        "roam_storage_lag_bound_bytes",
        "gauge",
        "The group's largest lag allowed, bytes (0: none)",
    );
    let mut bound_seconds = Family::new(
        "roam_storage_lag_bound_seconds",
        "gauge",
        "The group's largest lag allowed, seconds (0: none)",
    );
    let mut lag_bytes = Family::new(
        "roam_storage_member_lag_bytes",
        "gauge",
        "On the primary: bytes a secondary does not hold yet",
    );
    let mut lag_seconds = Family::new(
        "roam_storage_member_lag_seconds",
        "gauge",
        "On the primary: age of the oldest write a secondary does not hold yet",
    );
    let mut in_sync = Family::new(
        "roam_storage_member_in_sync",
        "gauge",
        "On the primary: 1 when the secondary is InSync",
    );
    let mut member_state = Family::new(
        "roam_storage_member_state",
        "gauge",
        "On the primary: 1 for the secondary's state (state: InSync, Lagging, Resyncing, Unreachable)",
    );
    let mut resync = Family::new(
        "roam_storage_member_resync_bytes_total",
        "counter",
        "On the primary: region bytes copied to a secondary by resyncs and full copies",
    );
    for v in &volumes {
        let id = format!("volume=\"{}\",{here}", label(v.id()));
        let st = v.status();
        let io = v.io_counters();
        for r in [Role::Primary, Role::Secondary, Role::None] {
            role.push(
                format!("{id},role=\"{}\"", role_name(r)),
                f64::from(u8::from(st.role == r)),
            );
        }
        epoch.push(id.clone(), st.epoch as f64);
        fenced.push(id.clone(), f64::from(u8::from(st.fenced)));
        size.push(id.clone(), st.size_bytes as f64);
        reads.push(id.clone(), io.reads.count() as f64);
        read_bytes.push(id.clone(), io.read_bytes as f64);
        read_seconds.push_histogram(&id, &io.reads);
        writes.push(id.clone(), io.writes.count() as f64);
        write_bytes.push(id.clone(), io.write_bytes as f64);
        write_seconds.push_histogram(&id, &io.writes);
        flushes.push(id.clone(), io.flushes.count() as f64);
        flush_seconds.push_histogram(&id, &io.flushes);
        written.push(id.clone(), st.written_seq as f64);
        durable.push(id.clone(), st.durable_seq as f64);
        transfer.push(id.clone(), st.last_transfer_millis as f64 / 1e3);
        if let Some(g) = &st.group {
            bound_bytes.push(id.clone(), g.max_lag_bytes as f64);
            bound_seconds.push(id.clone(), g.max_lag_seconds as f64);
        }
        if st.role != Role::Primary {
            continue;
        }
        for m in &st.members {
            let mid = format!("{id},member=\"{}\"", label(&m.data_center));
            lag_bytes.push(mid.clone(), m.lag_bytes as f64);
            lag_seconds.push(mid.clone(), m.lag_seconds);
            in_sync.push(
                mid.clone(),
                f64::from(u8::from(m.state == MemberState::InSync)),
            );
            for (s, name) in [
                (MemberState::InSync, "InSync"),
                (MemberState::Lagging, "Lagging"),
                (MemberState::Resyncing, "Resyncing"),
                (MemberState::Unreachable, "Unreachable"),
            ] {
                member_state.push(
                    format!("{mid},state=\"{name}\""),
                    f64::from(u8::from(m.state == s)),
                );
            }
            resync.push(mid, m.resync_bytes as f64);
        }
    }
    let mut free = Family::new(
        "roam_storage_free_bytes",
        "gauge",
        "Bytes this storage system may still allocate for real volumes",
    );
    let mut capacity = Family::new(
        "roam_storage_capacity_bytes",
        "gauge",
        "Size of the file system holding this storage system's real volumes",
    );
    let mut count = Family::new(
        "roam_storage_volumes",
        "gauge",
        "Real volumes open on this storage system",
    );
    free.push(here.clone(), free_bytes(&registry.root) as f64);
    if let Ok(s) = nix::sys::statvfs::statvfs(&registry.root) {
        capacity.push(here.clone(), (s.blocks() * s.fragment_size()) as f64);
    }
    count.push(here, volumes.len() as f64);

    let mut out = String::new();
    for f in [
        &role,
        &epoch,
        &fenced,
        &size,
        &reads,
        &read_bytes,
        &read_seconds,
        &writes,
        &write_bytes,
        &write_seconds,
        &flushes,
        &flush_seconds,
        &written,
        &durable,
        &transfer,
        &bound_bytes,
        &bound_seconds,
        &lag_bytes,
        &lag_seconds,
        &in_sync,
        &member_state,
        &resync,
        &free,
        &capacity,
        &count,
    ] {
        f.write(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Family, LATENCY_BUCKETS_MICROS, LatencySnapshot, label};

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_family_is_one_header_then_its_samples() {
        let mut f = Family::new("roam_x", "gauge", "An x");
        f.push("volume=\"v\"".into(), 1.5);
        let mut out = String::new();
        f.write(&mut out);
        assert_eq!(
            out,
            "# HELP roam_x An x\n# TYPE roam_x gauge\nroam_x{volume=\"v\"} 1.5\n"
        );
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_a_sum_and_a_count() {
        let mut h = LatencySnapshot::default();
        h.buckets[0] = 2; // <= 16 µs
        h.buckets[3] = 1; // <= 128 µs
        h.buckets[LATENCY_BUCKETS_MICROS.len()] = 1; // above every bound
        h.sum_micros = 10_000_150;
        let mut f = Family::new("roam_h_seconds", "histogram", "An h");
        f.push_histogram("volume=\"v\"", &h);
        let mut out = String::new();
        f.write(&mut out);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[1], "# TYPE roam_h_seconds histogram");
        assert_eq!(
            lines[2],
            "roam_h_seconds_bucket{volume=\"v\",le=\"0.000016\"} 2"
        );
        assert_eq!(
            lines[5],
            "roam_h_seconds_bucket{volume=\"v\",le=\"0.000128\"} 3"
        );
        assert!(lines.contains(&"roam_h_seconds_bucket{volume=\"v\",le=\"8.388608\"} 3"));
        assert!(lines.contains(&"roam_h_seconds_bucket{volume=\"v\",le=\"+Inf\"} 4"));
        assert!(lines.contains(&"roam_h_seconds_sum{volume=\"v\"} 10.00015"));
        assert!(lines.contains(&"roam_h_seconds_count{volume=\"v\"} 4"));
        assert_eq!(lines.len(), 2 + LATENCY_BUCKETS_MICROS.len() + 3);
    }
}
