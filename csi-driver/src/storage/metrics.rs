//! The storage system's `/metrics` (Prometheus text), one series per volume
//! (and per member for lag and resync): what an operator watches to see which
//! data center is primary at which epoch, how much a volume writes, how long
//! its flushes take, how far behind each secondary is (bytes and seconds, and
//! against the group's bound), how much a resync moved, and how much room the
//! storage system has left. docs/operations.md lists every series.
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
use roam_engine::{MemberState, Role};
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
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(String, f64)>,
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
        self.samples.push((labels, value));
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, value) in &self.samples {
            let _ = writeln!(out, "{}{{{labels}}} {value}", self.name);
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
    let mut flushes = Family::new(
        "roam_storage_flushes_total",
        "counter",
        "Host flushes completed (durable here and on every in-sync Sync member)",
    );
    let mut flush_seconds = Family::new(
        "roam_storage_flush_seconds_total",
        "counter",
        "Time spent in those flushes",
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
        writes.push(id.clone(), io.writes as f64);
        write_bytes.push(id.clone(), io.write_bytes as f64);
        flushes.push(id.clone(), io.flushes as f64);
        flush_seconds.push(id.clone(), io.flush_micros as f64 / 1e6);
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
        &writes,
        &write_bytes,
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
    use super::{Family, label};

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
}
