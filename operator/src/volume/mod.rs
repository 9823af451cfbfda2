//! The VirtualVolume controller: placement, real volumes, group
//! configuration, relocation (the primary follows the pod) and failover.
//! `reconcile.rs` reads the world, `plan.rs` decides, `apply.rs` acts.

pub mod apply;
pub mod frontend;
pub mod placement;
pub mod plan;
#[cfg(test)]
mod plan_tests;
pub mod reconcile;
pub mod release;
