//! The block target trait: what every way of exporting a volume to a host
//! (FUSE file today; NBD or ublk where the kernel has them) is built on.

use async_trait::async_trait;

/// Why a block target refused or failed an I/O. Each variant names the
/// operation and the byte range, so the log line says what was lost.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("read of {len} bytes at offset {offset} of volume {volume} failed: {cause}")]
    Read {
        volume: String,
        offset: u64,
        len: u64,
        cause: String,
    },
    #[error("write of {len} bytes at offset {offset} of volume {volume} failed: {cause}")]
    Write {
        volume: String,
        offset: u64,
        len: u64,
        cause: String,
    },
    #[error("flush of volume {volume} failed: {cause}")]
    Flush { volume: String, cause: String },
    #[error("connect volume {volume} to storage system {endpoint}: {cause}")]
    Connect {
        volume: String,
        endpoint: String,
        cause: String,
    },
    #[error("query the size of volume {volume} failed: {cause}")]
    QuerySize { volume: String, cause: String },
    #[error(
        "volume {volume}: epoch {epoch} is stale or this storage system is no longer primary ({cause}); \
         the host must log in again"
    )]
    StaleEpoch {
        volume: String,
        epoch: u64,
        cause: String,
    },
    #[error("{op} of {len} bytes at offset {offset} is outside volume {volume} of {size} bytes")]
    OutOfRange {
        volume: String,
        op: &'static str,
        offset: u64,
        len: u64,
        size: u64,
    },
}

/// A volume as a host sees it: an array of bytes that only grows.
///
/// Implementations must be safe to call concurrently: the FUSE export issues
/// many requests at once. A write that returns `Ok` is held by the storage
/// behind the target as the volume's transfer type promises; with `fua` it is
/// durable before the call returns. `flush` returns once every write
/// acknowledged before it is durable.
#[async_trait]
pub trait BlockTarget: Send + Sync + 'static {
    /// The volume's id, for logs.
    fn volume_id(&self) -> &str;
    /// Size in bytes as last learned (at open, or by [`Self::refresh_size`]).
    fn size(&self) -> u64;
    /// Asks the storage behind the target for the volume's current size
    /// (after an expansion), remembers it for [`Self::size`] and returns it.
    /// A smaller size than before is returned as is; the caller decides.
    async fn refresh_size(&self) -> Result<u64, TargetError>;
    async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, TargetError>;
    async fn write_at(&self, offset: u64, data: Vec<u8>, fua: bool) -> Result<(), TargetError>;
    async fn flush(&self) -> Result<(), TargetError>;
}

/// Checks that `[offset, offset + len)` lies inside a volume of `size` bytes.
pub(crate) fn check_range(
    volume: &str,
    op: &'static str,
    offset: u64,
    len: u64,
    size: u64,
) -> Result<(), TargetError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(TargetError::OutOfRange {
            volume: volume.to_owned(),
            op,
            offset,
            len,
            size,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_inside_and_at_the_end_is_accepted() {
        assert!(check_range("v", "read", 0, 4096, 4096).is_ok());
        assert!(check_range("v", "read", 4095, 1, 4096).is_ok());
        assert!(check_range("v", "read", 4096, 0, 4096).is_ok());
    }

    #[test]
    fn range_past_the_end_or_overflowing_is_refused() {
        assert!(check_range("v", "write", 4095, 2, 4096).is_err());
        assert!(check_range("v", "write", u64::MAX, 2, 4096).is_err());
    }
}
