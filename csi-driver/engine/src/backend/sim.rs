//! A simulated machine for crash tests: the files of one replica in memory,
//! with a disk's volatile write cache.
//!
//! Every write lands in the file's visible contents (what reads return, as
//! the page cache) and is remembered as not yet synced; `sync` moves
//! everything written so far to the durable image. [`SimMachine::power_cut`]
//! is a real crash: every write not yet synced is dropped, the last one may
//! be torn (a prefix of its 512-byte sectors reaches the disk), and every
//! handle of the old power cycle fails from then on, as a dead process's
//! would. The metadata store is atomic and durable on return (the file
//! implementation fsyncs and renames), so a power cut keeps its last store.
//!
//! Faults ([`SimMachine::fail_next_sync`], [`SimMachine::fail_writes`])
//! behave as Linux does: a failed fsync reports its error once and the
//! unsynced pages are marked clean, so they never reach the disk, and a
//! later sync of the same file succeeds without them.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{Backend, MetaStore, SnapshotStore, VolumeFiles};

const SECTOR: usize = 512;

#[derive(Default)]
struct SimFile {
    visible: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync, in order: (offset, bytes).
    unsynced: Vec<(u64, Vec<u8>)>,
    fail_next_sync: bool,
    fail_writes: Option<i32>,
    /// Syncs wait until released (a slow disk), or until the power goes.
    stall_syncs: bool,
}

#[derive(Default)]
struct Machine {
    /// Power cycle; handles of an older one fail.
    cycle: u64,
    /// By name: "data", "journal", and "snapshots/<name>" per snapshot log.
    files: HashMap<String, SimFile>,
    meta: Option<Vec<u8>>,
    fail_meta: Option<i32>,
    /// Syncs that reached the disk, per file (tests check that a flush synced).
    syncs: HashMap<String, u64>,
}

/// One simulated machine holding one replica's files. Cheap to clone.
#[derive(Clone, Default)]
pub struct SimMachine {
    m: Arc<Mutex<Machine>>,
    /// Wakes stalled syncs.
    cv: Arc<Condvar>,
}

/// What a power cut did, for a failing test's message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Unsynced writes dropped, per file.
    pub dropped: Vec<(String, usize)>,
    /// A write torn: file, offset, bytes of it that reached the disk.
    pub torn: Option<(String, u64, usize)>,
}

fn powered_off() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "simulated machine lost power")
}

impl SimMachine {
    /// A machine with an empty replica of `size` bytes and the given metadata.
    pub fn new(size: u64, meta: Vec<u8>) -> Self {
        let sim = SimMachine::default();
        {
            let mut m = sim.lock();
            let data = SimFile {
                visible: vec![0; size as usize],
                durable: vec![0; size as usize],
                ..Default::default()
            };
            m.files.insert("data".into(), data);
            m.files.insert("journal".into(), SimFile::default());
            m.meta = Some(meta);
        }
        sim
    }

    /// A replica as [`crate::backend::ReplicaDir::create_replica`] makes it.
    pub fn replica(volume_id: &str, data_center: &str, size: u64) -> Self {
        let meta = super::VolumeMeta {
            volume_id: volume_id.to_string(),
            size_bytes: size,
            data_center: data_center.to_string(),
            ..Default::default()
        };
        Self::new(size, serde_json::to_vec(&meta).expect("metadata encodes"))
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The replica's files for this power cycle.
    pub fn files(&self) -> VolumeFiles {
        let cycle = self.lock().cycle;
        let file = |name: &str| {
            Arc::new(SimBackend {
                sim: self.clone(),
                name: name.into(),
                cycle,
            })
        };
        VolumeFiles {
            data: file("data"),
            journal: file("journal"),
            meta: Arc::new(SimMeta {
                sim: self.clone(),
                cycle,
            }),
            snapshots: Arc::new(SimSnapshots {
                sim: self.clone(),
                cycle,
            }),
        }
    }

    /// Cut the power: drop every unsynced write, tear the last one when
    /// `tear` is `Some(fraction in 0..=1)` (of its sectors that land), and
    /// invalidate every handle of this power cycle.
    pub fn power_cut(&self, tear: Option<f64>) -> CutReport {
        let mut m = self.lock();
        m.cycle += 1;
        let mut report = CutReport::default();
        // The torn write is the newest unsynced write of the whole machine;
        // which file it was is not tracked across files, so tear the last
        // write of the journal when it has one, else of the data file.
        let tear_in = ["journal", "data"]
            .into_iter()
            .find(|n| m.files.get(*n).is_some_and(|f| !f.unsynced.is_empty()));
        for (name, f) in m.files.iter_mut() {
            report.dropped.push((name.clone(), f.unsynced.len()));
            let mut disk = f.durable.clone();
            if let (Some(fraction), Some(t)) = (tear, tear_in)
                && t == *name
                && let Some((offset, bytes)) = f.unsynced.last()
            {
                let sectors = bytes.len().div_ceil(SECTOR);
                let landed = ((sectors as f64 * fraction.clamp(0.0, 1.0)) as usize)
                    .min(sectors.saturating_sub(1));
                let n = (landed * SECTOR).min(bytes.len());
                let end = *offset as usize + n;
                if disk.len() < end {
                    disk.resize(end, 0);
                }
                disk[*offset as usize..end].copy_from_slice(&bytes[..n]);
                report.torn = Some((name.clone(), *offset, n));
            }
            f.durable = disk.clone();
            f.visible = disk;
            f.unsynced.clear();
            f.fail_next_sync = false;
            f.fail_writes = None;
            f.stall_syncs = false;
        }
        m.fail_meta = None;
        drop(m);
        self.cv.notify_all();
        report.dropped.sort();
        report
    }

    /// Kill the process (kill -9): every handle of this power cycle fails
    /// from now on, and what it wrote stays (the page cache survives), not
    /// yet durable: a later power cut may still drop it.
    pub fn process_crash(&self) {
        self.lock().cycle += 1;
        self.cv.notify_all();
    }

    /// Syncs of `file` wait (true) until released (false) or the power
    /// goes: writes stay unsynced meanwhile, whatever the engine does.
    pub fn stall_syncs(&self, file: &str, stall: bool) {
        if let Some(f) = self.lock().files.get_mut(file) {
            f.stall_syncs = stall;
        }
        self.cv.notify_all();
    }

    /// The next sync of `file` ("data" or "journal") fails with EIO, and
    /// the writes it should have made durable never will be.
    pub fn fail_next_sync(&self, file: &str) {
        if let Some(f) = self.lock().files.get_mut(file) {
            f.fail_next_sync = true;
        }
    }

    /// Writes to `file` fail with `errno` (None: they succeed again).
    pub fn fail_writes(&self, file: &str, errno: Option<i32>) {
        if let Some(f) = self.lock().files.get_mut(file) {
            f.fail_writes = errno;
        }
    }

    /// Metadata stores fail with `errno` (None: they succeed again).
    pub fn fail_meta(&self, errno: Option<i32>) {
        self.lock().fail_meta = errno;
    }

    /// Syncs of `file` that reached the disk so far.
    pub fn syncs(&self, file: &str) -> u64 {
        self.lock().syncs.get(file).copied().unwrap_or(0)
    }

    /// Writes of `file` not yet synced.
    pub fn unsynced(&self, file: &str) -> usize {
        self.lock().files.get(file).map_or(0, |f| f.unsynced.len())
    }
}

struct SimBackend {
    sim: SimMachine,
    name: String,
    cycle: u64,
}

impl SimBackend {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut SimFile, &mut Machine) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut m = self.sim.lock();
        if m.cycle != self.cycle {
            return Err(powered_off());
        }
        let mut file = m.files.remove(&self.name).unwrap_or_default();
        let out = f(&mut file, &mut m);
        m.files.insert(self.name.clone(), file);
        out
    }
}

impl Backend for SimBackend {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.with(|f, _| {
            let start = (offset as usize).min(f.visible.len());
            let end = (offset as usize + buf.len()).min(f.visible.len());
            buf[..end - start].copy_from_slice(&f.visible[start..end]);
            buf[end - start..].fill(0);
            Ok(())
        })
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with(|f, _| {
            if let Some(errno) = f.fail_writes {
                return Err(io::Error::from_raw_os_error(errno));
            }
            let end = offset as usize + data.len();
            if f.visible.len() < end {
                f.visible.resize(end, 0);
            }
            f.visible[offset as usize..end].copy_from_slice(data);
            f.unsynced.push((offset, data.to_vec()));
            Ok(())
        })
    }
    fn sync(&self) -> io::Result<()> {
        let name = self.name.as_str();
        {
            let mut m = self.sim.lock();
            while m.cycle == self.cycle && m.files.get(name).is_some_and(|f| f.stall_syncs) {
                m = self.sim.cv.wait(m).unwrap_or_else(|e| e.into_inner());
            }
        }
        self.with(|f, m| {
            if f.fail_next_sync {
                // Linux: the error is reported once and the pages are clean.
                f.fail_next_sync = false;
                f.unsynced.clear();
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            for (offset, bytes) in std::mem::take(&mut f.unsynced) {
                let end = offset as usize + bytes.len();
                if f.durable.len() < end {
                    f.durable.resize(end, 0);
                }
                f.durable[offset as usize..end].copy_from_slice(&bytes);
            }
            *m.syncs.entry(name.to_owned()).or_default() += 1;
            Ok(())
        })
    }
    fn size(&self) -> io::Result<u64> {
        self.with(|f, _| Ok(f.visible.len() as u64))
    }
    fn resize(&self, size: u64) -> io::Result<()> {
        // Like the file backend, a resize is synced before it returns.
        self.sync()?;
        self.with(|f, _| {
            f.visible.resize(size as usize, 0);
            f.durable.resize(size as usize, 0);
            Ok(())
        })
    }
}

struct SimMeta {
    sim: SimMachine,
    cycle: u64,
}

impl MetaStore for SimMeta {
    fn load(&self) -> io::Result<Option<Vec<u8>>> {
        let m = self.sim.lock();
        if m.cycle != self.cycle {
            return Err(powered_off());
        }
        Ok(m.meta.clone())
    }
    fn store(&self, bytes: &[u8]) -> io::Result<()> {
        let mut m = self.sim.lock();
        if m.cycle != self.cycle {
            return Err(powered_off());
        }
        if let Some(errno) = m.fail_meta {
            return Err(io::Error::from_raw_os_error(errno));
        }
        m.meta = Some(bytes.to_vec());
        Ok(())
    }
}

const SNAPSHOT_PREFIX: &str = "snapshots/";

/// Snapshot logs as files of the machine ("snapshots/<name>"): a power cut
/// drops their unsynced writes like any other file's.
struct SimSnapshots {
    sim: SimMachine,
    cycle: u64,
}

impl SnapshotStore for SimSnapshots {
    fn open(&self, name: &str) -> io::Result<Arc<dyn Backend>> {
        let file = format!("{SNAPSHOT_PREFIX}{name}");
        let mut m = self.sim.lock();
        if m.cycle != self.cycle {
            return Err(powered_off());
        }
        m.files.entry(file.clone()).or_default();
        Ok(Arc::new(SimBackend {
            sim: self.sim.clone(),
            name: file,
            cycle: self.cycle,
        }))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        let mut m = self.sim.lock();
        if m.cycle != self.cycle {
            return Err(powered_off());
        }
        m.files.remove(&format!("{SNAPSHOT_PREFIX}{name}"));
        Ok(())
    }
    fn list(&self) -> io::Result<Vec<String>> {
        let m = self.sim.lock();
        if m.cycle != self.cycle {
            return Err(powered_off());
        }
        Ok(m.files
            .keys()
            .filter_map(|k| k.strip_prefix(SNAPSHOT_PREFIX).map(str::to_owned))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_power_cut_keeps_only_what_was_synced() {
        let sim = SimMachine::new(4096, b"{}".to_vec());
        let files = sim.files();
        files.data.write_at(0, b"synced").unwrap();
        files.data.sync().unwrap();
        files.data.write_at(0, b"lost!!").unwrap();
        let mut buf = [0u8; 6];
        files.data.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"lost!!", "reads see unsynced writes");
        sim.power_cut(None);
        assert!(
            files.data.read_at(0, &mut buf).is_err(),
            "old handles are dead"
        );
        let files = sim.files();
        files.data.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"synced");
    }

    #[test]
    fn a_failed_sync_loses_its_writes_and_the_next_sync_succeeds() {
        let sim = SimMachine::new(4096, b"{}".to_vec());
        let files = sim.files();
        files.data.write_at(0, b"abc").unwrap();
        sim.fail_next_sync("data");
        assert!(files.data.sync().is_err());
        files.data.sync().expect("the error is reported once");
        sim.power_cut(None);
        let mut buf = [0u8; 3];
        sim.files().data.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, &[0, 0, 0]);
    }

    #[test]
    fn a_torn_write_lands_as_a_prefix_of_sectors() {
        let sim = SimMachine::new(0, b"{}".to_vec());
        let files = sim.files();
        files.journal.write_at(0, &[7u8; 2048]).unwrap();
        let report = sim.power_cut(Some(0.5));
        assert_eq!(report.torn, Some(("journal".into(), 0, 1024)));
        assert_eq!(sim.files().journal.size().unwrap(), 1024);
    }
}
