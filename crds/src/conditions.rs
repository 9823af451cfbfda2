//! Condition types and reasons shared by Roam's resources, and a helper that
//! sets a condition keeping `lastTransitionTime` when the status is unchanged.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The resource does what its spec asks (all members configured, primary where wanted).
pub const READY: &str = "Ready";
/// Every member holds every acknowledged write (Sync) or is within its lag bound (Async).
pub const IN_SYNC: &str = "InSync";
/// The primary is moving to another data center.
pub const RELOCATING: &str = "Relocating";
/// The primary's storage system is unreachable; failover is pending or done.
pub const PRIMARY_UNREACHABLE: &str = "PrimaryUnreachable";
/// Deleting the real volumes has not finished; the message names what is left.
pub const CLEANUP_BLOCKED: &str = "CleanupBlocked";
/// The requested data centers cannot all hold a replica (no ready storage system).
pub const PLACEMENT_FAILED: &str = "PlacementFailed";
/// No node plugin reports a broken frontend (FUSE export, loop device) of the
/// volume; False names the node and what broke.
pub const FRONTEND_HEALTHY: &str = "FrontendHealthy";

/// Set (or replace) the condition of type `type_` in `conditions`.
/// `lastTransitionTime` only changes when the status changes.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) {
    let status_str = if status { "True" } else { "False" };
    let message = message.into();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status_str {
            c.last_transition_time = now;
        }
        c.status = status_str.into();
        c.reason = reason.into();
        c.message = message;
        c.observed_generation = observed_generation;
        return;
    }
    conditions.push(Condition {
        type_: type_.into(),
        status: status_str.into(),
        reason: reason.into(),
        message,
        observed_generation,
        last_transition_time: now,
    });
}

/// The condition of type `type_`, if set.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}
