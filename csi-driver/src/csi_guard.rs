//! Per-volume in-flight guard for the CSI services.
//!
//! The CSI specification lets a plugin refuse a call on a volume while another
//! call on the same volume is still running: "the Plugin SHOULD return 10
//! ABORTED" ("Operation pending for volume"). Every controller and node RPC
//! that names a volume takes a [`VolumeGuard`] first; a second call on the
//! same volume while the first holds it gets ABORTED at once and changes
//! nothing, and the CO retries it. The guard is released when it is dropped,
//! also when the call's future is cancelled.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use tonic::Status;

/// The set of volumes with a call in flight.
#[derive(Clone, Default)]
pub struct InFlight {
    volumes: Arc<Mutex<HashSet<String>>>,
}

/// Held while one call works on one volume.
#[must_use = "the guard releases the volume when dropped"]
pub struct VolumeGuard {
    volumes: Arc<Mutex<HashSet<String>>>,
    volume: String,
}

impl InFlight {
    /// Takes the volume, or ABORTED naming it when another call holds it.
    pub fn try_acquire(&self, volume: &str) -> Result<VolumeGuard, Status> {
        let mut set = self.volumes.lock().unwrap_or_else(PoisonError::into_inner);
        if !set.insert(volume.to_owned()) {
            return Err(Status::aborted(format!(
                "an operation on volume {volume:?} is already in progress; retry later"
            )));
        }
        Ok(VolumeGuard {
            volumes: self.volumes.clone(),
            volume: volume.to_owned(),
        })
    }

    /// Whether a call holds the volume now (without taking it).
    pub fn is_held(&self, volume: &str) -> bool {
        self.volumes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(volume)
    }
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        self.volumes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.volume);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_call_on_same_volume_is_aborted_until_the_first_ends() {
        let in_flight = InFlight::default();
        let first = in_flight.try_acquire("ns/a").expect("first call");
        let second = in_flight
            .try_acquire("ns/a")
            .err()
            .expect("second call refused");
        assert_eq!(second.code(), tonic::Code::Aborted);
        assert!(second.message().contains("ns/a"));
        // Another volume is independent.
        let _other = in_flight.try_acquire("ns/b").expect("other volume");
        drop(first);
        let _again = in_flight.try_acquire("ns/a").expect("released on drop");
    }
}
