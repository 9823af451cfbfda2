//! The fence: every epoch and role check of the engine, in one place.
//!
//! Two primaries must never both accept writes for one volume. The rules
//! that keep it so are simple, and they only hold when every entry point
//! applies the same ones, so every entry point asks this module:
//!
//! - a message or request carrying an epoch older than the held one is
//!   refused with `StaleEpoch` and changes nothing;
//! - host I/O and data messages carry exactly the held epoch (a newer one is
//!   `EpochMismatch`: this replica has not been told about it yet);
//! - only the primary takes host writes, and not while it is fenced (a change
//!   of primary is in progress, or a peer holds a newer epoch);
//! - only a secondary takes replicated writes and region copies;
//! - a write waiting for its acknowledgements completes only while this
//!   replica is still the unsuperseded primary at the epoch that accepted it;
//! - a replica that lost a write or sync of its files ([`State::failed`])
//!   answers nothing until it is opened again and its journal replayed;
//! - a role change names an epoch above the held one.

use crate::error::{EngineError, Result};
use crate::types::Role;
use crate::volume::State;

/// Not closed, not failed.
pub(crate) fn alive(id: &str, st: &State) -> Result<()> {
    if st.closed {
        return Err(EngineError::Closed { volume: id.into() });
    }
    if let Some(reason) = &st.failed {
        return Err(EngineError::ReplicaFailed {
            volume: id.into(),
            reason: reason.clone(),
        });
    }
    Ok(())
}

/// `epoch`, when given, is exactly the held epoch.
fn at_epoch(id: &str, st: &State, epoch: u64) -> Result<()> {
    if epoch < st.meta.epoch {
        return Err(EngineError::StaleEpoch {
            volume: id.into(),
            held: st.meta.epoch,
            got: epoch,
        });
    }
    if epoch != st.meta.epoch {
        return Err(EngineError::EpochMismatch {
            volume: id.into(),
            held: st.meta.epoch,
            got: epoch,
        });
    }
    Ok(())
}

/// Host reads and flushes: the primary, at `epoch` when the caller names one.
pub(crate) fn primary(id: &str, st: &State, epoch: Option<u64>) -> Result<()> {
    alive(id, st)?;
    if let Some(e) = epoch {
        at_epoch(id, st, e)?;
    }
    if st.meta.role != Role::Primary {
        return Err(EngineError::NotPrimary {
            volume: id.into(),
            role: st.meta.role,
        });
    }
    Ok(())
}

/// A primary attached to a directory acknowledges only while its lease
/// holds (see [`crate::directory`]).
pub(crate) fn lease(id: &str, st: &State) -> Result<()> {
    if st.lease_required
        && st.meta.role == Role::Primary
        && st
            .lease_until
            .is_none_or(|until| std::time::Instant::now() >= until)
    {
        return Err(EngineError::LeaseExpired { volume: id.into() });
    }
    Ok(())
}

/// Host writes: the primary, and not fenced.
pub(crate) fn writable(id: &str, st: &State, epoch: Option<u64>) -> Result<()> {
    primary(id, st, epoch)?;
    lease(id, st)?;
    if st.fenced {
        let reason = if st.superseded {
            "a member holds a newer epoch: another primary exists"
        } else {
            "a change of primary is in progress"
        };
        return Err(EngineError::Fenced {
            volume: id.into(),
            reason: reason.into(),
        });
    }
    Ok(())
}

/// A write accepted at `epoch` may be acknowledged: this replica is still
/// the primary at that epoch and no peer has shown it a newer one.
pub(crate) fn still_primary(id: &str, st: &State, epoch: u64) -> Result<()> {
    alive(id, st)?;
    if st.meta.epoch != epoch {
        return Err(EngineError::StaleEpoch {
            volume: id.into(),
            held: st.meta.epoch,
            got: epoch,
        });
    }
    if st.meta.role != Role::Primary {
        return Err(EngineError::NotPrimary {
            volume: id.into(),
            role: st.meta.role,
        });
    }
    if st.superseded {
        return Err(EngineError::Fenced {
            volume: id.into(),
            reason: "a member holds a newer epoch".into(),
        });
    }
    lease(id, st)
}

/// Replicated writes and region copies: a secondary at exactly `epoch`.
pub(crate) fn data_message(id: &str, st: &State, epoch: u64) -> Result<()> {
    alive(id, st)?;
    at_epoch(id, st, epoch)?;
    if st.meta.role != Role::Secondary {
        return Err(EngineError::NotSecondary {
            volume: id.into(),
            role: st.meta.role,
        });
    }
    Ok(())
}

/// A primary's hand-shake at `epoch`: not older than the held epoch, and not
/// the held epoch when this replica is itself primary at it (two primaries
/// at one epoch is a conflict, never resolved by following).
pub(crate) fn hello(id: &str, st: &State, epoch: u64, primary: &str) -> Result<()> {
    alive(id, st)?;
    if epoch < st.meta.epoch {
        return Err(EngineError::StaleEpoch {
            volume: id.into(),
            held: st.meta.epoch,
            got: epoch,
        });
    }
    if epoch == st.meta.epoch && st.meta.role == Role::Primary {
        return Err(EngineError::EpochConflict {
            volume: id.into(),
            epoch,
            held_primary: st.meta.data_center.clone(),
            asked_primary: primary.into(),
        });
    }
    Ok(())
}

/// A promotion or hand-over to this replica at `new_epoch`: above the held one.
pub(crate) fn role_change(id: &str, st: &State, new_epoch: u64) -> Result<()> {
    alive(id, st)?;
    if new_epoch <= st.meta.epoch {
        return Err(EngineError::StaleEpoch {
            volume: id.into(),
            held: st.meta.epoch,
            got: new_epoch,
        });
    }
    Ok(())
}

/// A group definition from the operator at `epoch`: not older than the held one.
pub(crate) fn configure(id: &str, st: &State, epoch: u64) -> Result<()> {
    alive(id, st)?;
    if epoch < st.meta.epoch {
        return Err(EngineError::StaleEpoch {
            volume: id.into(),
            held: st.meta.epoch,
            got: epoch,
        });
    }
    Ok(())
}
