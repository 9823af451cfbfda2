//! The seeded fault campaign: `make faults` (all fault kinds, 50 trials by
//! default), `FAULT_TRIALS=N make faults`, `FAULT_SEED=S make faults` to
//! replay one trial; `make test` runs a short one. See `campaign/mod.rs` and
//! docs/faults.md.
//!
//! Root only (network namespaces, nftables, tmpfs); one trial at a time.

mod campaign;
mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_campaign() {
    campaign::run_from_env().await;
}

/// The findings of issue 9, each replayed from its seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_replay() {
    campaign::run_findings().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_primary_stops_before_another_is_promoted() {
    campaign::lease::an_isolated_primary_stops_before_another_is_promoted().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_primary_acknowledges_nothing_at_its_old_epoch() {
    campaign::lease::a_restarted_primary_acknowledges_nothing_at_its_old_epoch().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_recorded_out_of_sync_is_not_promoted() {
    campaign::lease::a_member_recorded_out_of_sync_is_not_promoted().await;
}
