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
