//! The DataCenter controller: finds the nodes and storage systems of each
//! data center, probes them, and writes the status placement relies on.

pub mod apply;
pub mod plan;
#[cfg(test)]
mod plan_tests;
pub mod reconcile;
