//! Backend: the real volume and the small files beside it.
//!
//! The engine reaches storage only through two traits, [`Backend`] (a
//! byte-addressed file: the real volume, and the journal) and [`MetaStore`]
//! (the replica's metadata, replaced atomically). [`ReplicaDir`] is the file
//! implementation: one directory per replica holding `data` (preallocated with
//! `fallocate`), `journal`, `meta.json` (written to a temporary file,
//! fsynced, renamed, directory fsynced — so a crash leaves the old or the new
//! metadata, never a mix) and `snapshots/`, one copy-on-write log per
//! snapshot ([`SnapshotStore`], [`crate::snapshot`]).
//!
//! Caveat: [`Backend`] calls block; the engine calls `sync` from a dedicated
//! thread or `spawn_blocking`, and `read_at`/`write_at` inline (page cache).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::{GroupSpec, Role, Run};

pub mod sim;

/// The files of one replica, behind the backend traits.
pub struct VolumeFiles {
    pub data: std::sync::Arc<dyn Backend>,
    pub journal: std::sync::Arc<dyn Backend>,
    pub meta: std::sync::Arc<dyn MetaStore>,
    pub snapshots: std::sync::Arc<dyn SnapshotStore>,
}

/// Where a replica keeps its snapshots' copy-on-write logs, one file each.
pub trait SnapshotStore: Send + Sync + 'static {
    /// The log of snapshot `name`, created empty when missing.
    fn open(&self, name: &str) -> io::Result<std::sync::Arc<dyn Backend>>;
    /// Remove the log of `name`; removing one that is not there succeeds.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Names of every log present (a crash may leave one the metadata does
    /// not list: it is removed at open).
    fn list(&self) -> io::Result<Vec<String>>;
}

/// A store that holds no snapshots (replicas opened for inspection only).
pub struct NoSnapshots;

impl SnapshotStore for NoSnapshots {
    fn open(&self, name: &str) -> io::Result<std::sync::Arc<dyn Backend>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("this replica keeps no snapshots (asked for {name})"),
        ))
    }
    fn remove(&self, _name: &str) -> io::Result<()> {
        Ok(())
    }
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// The `snapshots/` directory of a replica: `<name>.cow` per snapshot.
pub struct FileSnapshotStore {
    dir: PathBuf,
}

const SNAPSHOT_LOG_SUFFIX: &str = ".cow";

impl SnapshotStore for FileSnapshotStore {
    fn open(&self, name: &str) -> io::Result<std::sync::Arc<dyn Backend>> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{name}{SNAPSHOT_LOG_SUFFIX}"));
        let created = !path.exists();
        let file = FileBackend::open(&path)?;
        if created {
            // The new name must survive a crash before the metadata lists it.
            sync_dir(&self.dir)?;
        }
        Ok(std::sync::Arc::new(file))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        let path = self.dir.join(format!("{name}{SNAPSHOT_LOG_SUFFIX}"));
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
    fn list(&self) -> io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in entries {
            let file_name = entry?.file_name();
            if let Some(name) = file_name
                .to_str()
                .and_then(|n| n.strip_suffix(SNAPSHOT_LOG_SUFFIX))
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }
}

/// A byte-addressed file.
pub trait Backend: Send + Sync + 'static {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Make every completed write durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
    fn size(&self) -> io::Result<u64>;
    /// Set the size; growing preallocates the new space.
    fn resize(&self, size: u64) -> io::Result<()>;
}

/// A file on the local filesystem.
pub struct FileBackend {
    file: File,
}

impl FileBackend {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(Self { file })
    }
}

impl Backend for FileBackend {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.file.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                // Past the end of a sparse tail: zeros.
                buf[done..].fill(0);
                break;
            }
            done += n;
        }
        Ok(())
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn resize(&self, size: u64) -> io::Result<()> {
        let old = self.size()?;
        if size > old {
            nix::fcntl::fallocate(
                &self.file,
                nix::fcntl::FallocateFlags::empty(),
                0,
                size as i64,
            )
            .map_err(io::Error::from)?;
        } else {
            self.file.set_len(size)?;
        }
        self.file.sync_all()
    }
}

/// A run of set regions in a persisted dirty-region map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PersistedDirtyMap {
    /// The member lacks no write at or below this sequence number outside the map.
    pub since_seq: u64,
    /// (first region, count) runs.
    pub runs: Vec<(u64, u64)>,
    /// True when the member must receive every region.
    pub full: bool,
    /// The member was recorded out of sync: writes do not wait for it, and
    /// it rejoins the in-sync set only after a complete resync.
    #[serde(default)]
    pub out_of_sync: bool,
}

/// What survives a restart besides the data and the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct VolumeMeta {
    pub volume_id: String,
    pub size_bytes: u64,
    pub role: Role,
    pub epoch: u64,
    /// This storage system's data center.
    pub data_center: String,
    pub group: Option<GroupSpec>,
    /// Everything at or below this sequence number is in the real volume and
    /// synced; the journal holds only later writes.
    pub checkpoint_seq: u64,
    /// Epoch of the write at `checkpoint_seq`.
    pub checkpoint_epoch: u64,
    /// Incarnation of the write at `checkpoint_seq`.
    #[serde(default)]
    pub checkpoint_incarnation: u64,
    /// Who wrote which sequence numbers, ascending by term.
    pub history: Vec<Run>,
    /// This replica's newest incarnation as a primary; raised (and stored)
    /// at every open as primary and every promotion, before any write.
    #[serde(default)]
    pub incarnation: u64,
    /// True while a region copy into this replica is unfinished.
    pub resyncing: bool,
    /// Primary only: regions each member may lack, by data center.
    pub dirty: Vec<(String, PersistedDirtyMap)>,
    pub last_transfer_millis: u64,
    /// Snapshots this replica holds, oldest first.
    #[serde(default)]
    pub snapshots: Vec<crate::snapshot::SnapshotMeta>,
}

/// Where [`VolumeMeta`] lives.
pub trait MetaStore: Send + Sync + 'static {
    fn load(&self) -> io::Result<Option<Vec<u8>>>;
    /// Replace atomically.
    fn store(&self, bytes: &[u8]) -> io::Result<()>;
}

/// One replica's directory: `data`, `journal`, `meta.json`.
#[derive(Debug, Clone)]
pub struct ReplicaDir {
    pub path: PathBuf,
}

impl ReplicaDir {
    pub fn new(root: &Path, volume_id: &str) -> Self {
        Self {
            path: root.join(volume_id),
        }
    }
    pub fn exists(&self) -> bool {
        self.path.join("meta.json").exists()
    }
    /// Create the directory and preallocate the data file.
    pub fn create(&self, size: u64) -> io::Result<()> {
        std::fs::create_dir_all(&self.path)?;
        self.data()?.resize(size)?;
        self.journal()?;
        sync_dir(&self.path)
    }
    pub fn data(&self) -> io::Result<FileBackend> {
        FileBackend::open(&self.path.join("data"))
    }
    pub fn journal(&self) -> io::Result<FileBackend> {
        FileBackend::open(&self.path.join("journal"))
    }
    pub fn meta(&self) -> FileMetaStore {
        FileMetaStore {
            path: self.path.join("meta.json"),
        }
    }
    /// Create a new replica: preallocated data file, empty journal, initial metadata.
    pub fn create_replica(&self, volume_id: &str, data_center: &str, size: u64) -> io::Result<()> {
        self.create(size)?;
        let meta = VolumeMeta {
            volume_id: volume_id.to_string(),
            size_bytes: size,
            data_center: data_center.to_string(),
            ..Default::default()
        };
        self.meta()
            .store(&serde_json::to_vec(&meta).map_err(io::Error::other)?)
    }

    /// The files behind the engine's traits.
    pub fn files(&self) -> io::Result<VolumeFiles> {
        Ok(VolumeFiles {
            data: std::sync::Arc::new(self.data()?),
            journal: std::sync::Arc::new(self.journal()?),
            meta: std::sync::Arc::new(self.meta()),
            snapshots: std::sync::Arc::new(FileSnapshotStore {
                dir: self.path.join("snapshots"),
            }),
        })
    }

    pub fn delete(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

pub struct FileMetaStore {
    path: PathBuf,
}

impl MetaStore for FileMetaStore {
    fn load(&self) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(&self.path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn store(&self, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
