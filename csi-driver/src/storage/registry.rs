//! The replicas this storage system holds: one directory each under the data
//! directory, opened at start and kept open while the server runs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use roam_engine::backend::ReplicaDir;
use roam_engine::directory::Directory;
use roam_engine::transport::Transport;
use roam_engine::{EngineConfig, Volume};
use tokio::sync::Mutex;

use super::error::{Result, StorageError};

pub struct Registry {
    pub root: PathBuf,
    pub data_center: String,
    pub node: String,
    pub endpoint: String,
    pub config: EngineConfig,
    transport: Arc<dyn Transport>,
    /// Attached to every replica opened (see [`Registry::with_directory`]).
    directory: Option<Arc<dyn Directory>>,
    volumes: Mutex<HashMap<String, Volume>>,
}

/// Volume ids become directory names: letters, digits, `.`, `_`, `-` only.
pub fn validate_volume_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidField {
            field: "volume_id",
            reason: format!(
                "{id:?} must be 1-128 characters of [A-Za-z0-9._-], not starting with '.'"
            ),
        })
    }
}

impl Registry {
    pub fn new(
        root: PathBuf,
        data_center: String,
        node: String,
        endpoint: String,
        config: EngineConfig,
        transport: Arc<dyn Transport>,
    ) -> Self {
        Self {
            root,
            data_center,
            node,
            endpoint,
            config,
            transport,
            directory: None,
            volumes: Mutex::new(HashMap::new()),
        }
    }

    /// Record the in-sync set of every replica in `directory` and hold each
    /// primary's lease through it, from the moment the replica is opened:
    /// a primary restarted at an epoch the directory has moved past learns
    /// so from its first renewal and acknowledges nothing before.
    pub fn with_directory(mut self, directory: Option<Arc<dyn Directory>>) -> Self {
        self.directory = directory;
        self
    }

    /// Open every replica found under the data directory.
    pub async fn open_all(&self) -> Result<usize> {
        let data_dir_err = |source| StorageError::DataDir {
            path: self.root.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&self.root).map_err(data_dir_err)?;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(data_dir_err)? {
            let entry = entry.map_err(data_dir_err)?;
            let name = entry.file_name().to_string_lossy().to_string();
            if validate_volume_id(&name).is_ok() && ReplicaDir::new(&self.root, &name).exists() {
                names.push(name);
            }
        }
        let mut volumes = self.volumes.lock().await;
        for name in &names {
            let vol = self.open(name).await?;
            volumes.insert(name.clone(), vol);
        }
        Ok(names.len())
    }

    async fn open(&self, id: &str) -> Result<Volume> {
        let dir = ReplicaDir::new(&self.root, id);
        let files = dir.files().map_err(|source| StorageError::CreateReplica {
            volume: id.into(),
            source,
        })?;
        let vol = Volume::open(id, files, self.transport.clone(), self.config.clone()).await?;
        if let Some(d) = &self.directory {
            vol.attach_directory(d.clone());
        }
        Ok(vol)
    }

    pub async fn get(&self, id: &str) -> Result<Volume> {
        validate_volume_id(id)?;
        self.volumes
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| StorageError::ReplicaNotFound { volume: id.into() })
    }

    pub async fn list(&self) -> Vec<Volume> {
        let mut v: Vec<Volume> = self.volumes.lock().await.values().cloned().collect();
        v.sort_by(|a, b| a.id().cmp(b.id()));
        v
    }

    /// Create a replica; a repeat with the same size returns the existing one.
    pub async fn create(&self, id: &str, size: u64) -> Result<Volume> {
        validate_volume_id(id)?;
        if size == 0 || !size.is_multiple_of(512) {
            return Err(StorageError::InvalidField {
                field: "size_bytes",
                reason: format!("{size} must be a positive multiple of 512"),
            });
        }
        let mut volumes = self.volumes.lock().await;
        if let Some(v) = volumes.get(id) {
            if v.size() == size {
                return Ok(v.clone());
            }
            return Err(StorageError::ReplicaExists {
                volume: id.into(),
                size: v.size(),
                requested: size,
            });
        }
        // A replica that cannot fit is refused before it is allocated: the
        // allocation would take every free block on the way to failing, and
        // the other replicas on this disk would meet a full disk meanwhile.
        let available = free_bytes(&self.root);
        if size > available {
            return Err(StorageError::CreateNoSpace {
                volume: id.into(),
                size,
                source: std::io::Error::other(format!(
                    "{available} bytes free under {}",
                    self.root.display()
                )),
            });
        }
        let dir = ReplicaDir::new(&self.root, id);
        let created = {
            let dir = dir.clone();
            let (id, dc) = (id.to_string(), self.data_center.clone());
            tokio::task::spawn_blocking(move || dir.create_replica(&id, &dc, size))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
        };
        if let Err(source) = created {
            let _ = dir.delete();
            if source.raw_os_error() == Some(libc::ENOSPC) {
                return Err(StorageError::CreateNoSpace {
                    volume: id.into(),
                    size,
                    source,
                });
            }
            return Err(StorageError::CreateReplica {
                volume: id.into(),
                source,
            });
        }
        let vol = self.open(id).await?;
        volumes.insert(id.to_string(), vol.clone());
        tracing::info!(volume = id, size, "replica created");
        Ok(vol)
    }

    /// Close and delete a replica; deleting one that does not exist succeeds.
    pub async fn delete(&self, id: &str) -> Result<()> {
        validate_volume_id(id)?;
        let mut volumes = self.volumes.lock().await;
        if let Some(v) = volumes.remove(id) {
            v.close().await;
        }
        ReplicaDir::new(&self.root, id)
            .delete()
            .map_err(|source| StorageError::DeleteReplica {
                volume: id.into(),
                source,
            })?;
        tracing::info!(volume = id, "replica deleted");
        Ok(())
    }

    pub async fn close_all(&self) {
        for v in self.volumes.lock().await.values() {
            v.close().await;
        }
    }
}

/// Bytes an unprivileged writer may still allocate on the filesystem holding `path`.
pub fn free_bytes(path: &std::path::Path) -> u64 {
    nix::sys::statvfs::statvfs(path)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(u64::MAX)
}
