//! A block target over a plain local file: no replication, no journal. It is
//! the frontend's own ceiling in benchmarks and the simplest real target.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::target::{BlockTarget, TargetError, check_range};

/// Serves reads and writes with `pread`/`pwrite` on a blocking thread;
/// `flush` and FUA writes call `fdatasync`.
pub struct FileTarget {
    volume: String,
    file: Arc<File>,
    size: AtomicU64,
}

impl FileTarget {
    /// Opens (creating if needed) `path` and sizes it to `size` bytes when it
    /// is new or smaller.
    pub fn open(volume: &str, path: &Path, size: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if file.metadata()?.len() < size {
            file.set_len(size)?;
        }
        Ok(Self {
            volume: volume.to_owned(),
            file: Arc::new(file),
            size: AtomicU64::new(size),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&File) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let file = Arc::clone(&self.file);
        match tokio::task::spawn_blocking(move || work(&file)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("blocking task failed: {e}")),
        }
    }
}

#[async_trait]
impl BlockTarget for FileTarget {
    fn volume_id(&self) -> &str {
        &self.volume
    }

    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// The file's length (grow it with `truncate`/`set_len`).
    async fn refresh_size(&self) -> Result<u64, TargetError> {
        let size = self
            .blocking(|f| Ok(f.metadata()?.len()))
            .await
            .map_err(|cause| TargetError::QuerySize {
                volume: self.volume.clone(),
                cause,
            })?;
        self.size.store(size, Ordering::Release);
        Ok(size)
    }

    async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, TargetError> {
        check_range(&self.volume, "read", offset, u64::from(len), self.size())?;
        self.blocking(move |f| {
            let mut buf = vec![0u8; len as usize];
            f.read_exact_at(&mut buf, offset)?;
            Ok(buf)
        })
        .await
        .map_err(|cause| TargetError::Read {
            volume: self.volume.clone(),
            offset,
            len: u64::from(len),
            cause,
        })
    }

    async fn write_at(&self, offset: u64, data: Vec<u8>, fua: bool) -> Result<(), TargetError> {
        let len = data.len() as u64;
        check_range(&self.volume, "write", offset, len, self.size())?;
        self.blocking(move |f| {
            f.write_all_at(&data, offset)?;
            if fua {
                f.sync_data()?;
            }
            Ok(())
        })
        .await
        .map_err(|cause| TargetError::Write {
            volume: self.volume.clone(),
            offset,
            len,
            cause,
        })
    }

    async fn flush(&self) -> Result<(), TargetError> {
        self.blocking(|f| f.sync_data())
            .await
            .map_err(|cause| TargetError::Flush {
                volume: self.volume.clone(),
                cause,
            })
    }
}
