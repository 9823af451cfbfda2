//! A block target over this storage system's own replica (the primary is on
//! the host's node): the engine's volume handle, no network in between.

use async_trait::async_trait;
use bytes::Bytes;

use super::target::{BlockTarget, TargetError, check_range};
use crate::error::EngineError;
use crate::volume::Volume;

/// Calls the volume handle with the epoch the host logged in with, so a
/// replica that stopped being primary (or moved to a newer epoch) refuses
/// the I/O instead of taking it.
pub struct LocalTarget {
    volume: Volume,
    id: String,
    epoch: u64,
}

impl LocalTarget {
    pub fn new(volume: Volume, epoch: u64) -> Self {
        let id = volume.id().to_owned();
        Self { volume, id, epoch }
    }

    fn refusal(&self, e: EngineError, other: impl FnOnce(String) -> TargetError) -> TargetError {
        match e {
            EngineError::StaleEpoch { .. }
            | EngineError::EpochMismatch { .. }
            | EngineError::NotPrimary { .. }
            | EngineError::Fenced { .. } => TargetError::StaleEpoch {
                volume: self.id.clone(),
                epoch: self.epoch,
                cause: e.to_string(),
            },
            e => other(e.to_string()),
        }
    }
}

#[async_trait]
impl BlockTarget for LocalTarget {
    fn volume_id(&self) -> &str {
        &self.id
    }

    fn size(&self) -> u64 {
        self.volume.size()
    }

    /// The volume handle's size is live (an expansion updates it).
    async fn refresh_size(&self) -> Result<u64, TargetError> {
        Ok(self.volume.size())
    }

    async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, TargetError> {
        check_range(&self.id, "read", offset, u64::from(len), self.size())?;
        let data = self
            .volume
            .read_at_epoch(self.epoch, offset, u64::from(len))
            .await
            .map_err(|e| {
                self.refusal(e, |cause| TargetError::Read {
                    volume: self.id.clone(),
                    offset,
                    len: u64::from(len),
                    cause,
                })
            })?;
        Ok(data.to_vec())
    }

    async fn write_at(&self, offset: u64, data: Vec<u8>, fua: bool) -> Result<(), TargetError> {
        let len = data.len() as u64;
        check_range(&self.id, "write", offset, len, self.size())?;
        self.volume
            .write_at_epoch(Some(self.epoch), offset, Bytes::from(data), fua)
            .await
            .map_err(|e| {
                self.refusal(e, |cause| TargetError::Write {
                    volume: self.id.clone(),
                    offset,
                    len,
                    cause,
                })
            })?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), TargetError> {
        self.volume
            .flush_at_epoch(Some(self.epoch))
            .await
            .map_err(|e| {
                self.refusal(e, |cause| TargetError::Flush {
                    volume: self.id.clone(),
                    cause,
                })
            })?;
        Ok(())
    }
}
