//! Snapshots: a point in the write order, kept by copy-on-write.
//!
//! A snapshot of a replica is the content of its real volume after every
//! write up to one sequence number and none after it. It costs no copy when
//! it is taken: the real volume stays where it is, and a region (64 KiB, the
//! dirty maps' [`REGION_SIZE`]) is copied into the snapshot's log only the
//! first time a later write reaches it. Reading the snapshot takes a region
//! from the log when the region was copied, from the real volume when it
//! was not (nothing wrote it since).
//!
//! Every write to the real volume goes through [`CowData`], whatever wrote
//! it: a host write on the primary, a replicated write or a region copy on a
//! secondary, and the journal replay at open. That is the one place the
//! copy happens, so no path can overwrite a region a snapshot still needs.
//!
//! What a crash may do, and why the snapshot survives it:
//! - The copy is synced to the log before the write it makes room for is
//!   issued. A region whose new content reached the disk therefore always
//!   has its old content in the log; a torn copy at the log's end fails its
//!   checksum and is dropped at open, and its write never started.
//! - Taking a snapshot checkpoints the replica first (the real volume is
//!   synced, the journal emptied), so every record a replay applies later
//!   came after the snapshot and is copied on write like any other.
//!
//! On the primary, [`Volume::create_snapshot`] pauses new writes, waits
//! until each streaming member holds every write up to the snapshot's
//! sequence number, takes it here and then asks each such member to take it
//! at the same number ([`Volume::take_snapshot_at`]). A member that does
//! not stand exactly there refuses and does not hold the snapshot; each
//! replica answers for itself which snapshots it holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, SnapshotStore};
use crate::error::{EngineError, Result};
use crate::transport::{PeerMessage, PeerRequest};
use crate::types::{REGION_SIZE, Role};
use crate::volume::{Inner, Volume};

/// What a replica's metadata records of one snapshot it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub name: String,
    /// The snapshot holds every write up to this sequence number, none after.
    pub seq: u64,
    /// Epoch of the primary that took it.
    pub epoch: u64,
    /// Size of the volume when it was taken: the snapshot's size.
    pub size_bytes: u64,
    /// When the primary took it (milliseconds since the Unix epoch).
    pub created_unix_millis: u64,
}

/// One snapshot as a replica holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub meta: SnapshotMeta,
    /// Bytes of old content copied into its log so far: what it costs on disk.
    pub copied_bytes: u64,
}

/// What [`Volume::create_snapshot`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTaken {
    pub info: SnapshotInfo,
    /// The name was taken before: nothing was done now, and `members` and
    /// `missing` are empty (each member answers for itself what it holds).
    pub repeat: bool,
    /// Members that took it at the same point, by data center.
    pub members: Vec<String>,
    /// Members that do not hold it, and why.
    pub missing: Vec<(String, String)>,
}

/// Longest name a snapshot may have (a CSI snapshot name fits).
pub const MAX_SNAPSHOT_NAME: usize = 128;

/// Snapshot names are file names of the store: lower-case letters, digits,
/// '-', '_' and '.', not starting with '.'.
pub fn check_name(volume: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SNAPSHOT_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(EngineError::InvalidField {
            volume: volume.to_owned(),
            field: "snapshot",
            reason: format!(
                "{name:?}: 1 to {MAX_SNAPSHOT_NAME} of a-z 0-9 - _ . (not starting with '.')"
            ),
        })
    }
}

/// Log layout: a header block naming the snapshot, then records, each a
/// 24-byte head (magic, crc32c over region index, length and data; region
/// index; length) and the region's old content.
const HEADER_LEN: u64 = 4096;
const HEADER_MAGIC: &[u8; 8] = b"ROAMCOW1";
const RECORD_MAGIC: u32 = 0x524f_4357;
const RECORD_HEAD: usize = 24;

fn record_crc(region: u64, data: &[u8]) -> u32 {
    let mut crc = crc32c::crc32c(&region.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &(data.len() as u32).to_le_bytes());
    crc32c::crc32c_append(crc, data)
}

/// One snapshot's copy-on-write log and the map of regions it holds.
struct CowLog {
    meta: SnapshotMeta,
    log: Arc<dyn Backend>,
    /// Region index -> offset of its old content in the log.
    regions: HashMap<u64, u64>,
    /// Where the next record goes.
    end: u64,
}

impl CowLog {
    fn region_len(&self, region: u64) -> u64 {
        REGION_SIZE.min(self.meta.size_bytes - region * REGION_SIZE)
    }

    fn regions_total(&self) -> u64 {
        self.meta.size_bytes.div_ceil(REGION_SIZE)
    }

    /// A new, empty log (a stale file of the same name is emptied first).
    fn create(store: &dyn SnapshotStore, meta: SnapshotMeta) -> std::io::Result<Self> {
        let log = store.open(&meta.name)?;
        log.resize(0)?;
        let mut header = vec![0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(HEADER_MAGIC);
        let name = meta.name.as_bytes();
        header[8..12].copy_from_slice(&(name.len() as u32).to_le_bytes());
        header[12..12 + name.len()].copy_from_slice(name);
        log.write_at(0, &header)?;
        log.sync()?;
        Ok(Self {
            meta,
            log,
            regions: HashMap::new(),
            end: HEADER_LEN,
        })
    }

    /// Open an existing log and rebuild its map; a torn or foreign tail
    /// (the copy a crash interrupted: its write never started) is cut off.
    fn open(store: &dyn SnapshotStore, meta: SnapshotMeta) -> std::io::Result<Self> {
        let log = store.open(&meta.name)?;
        let size = log.size()?;
        let mut header = [0u8; 12];
        if size >= HEADER_LEN {
            log.read_at(0, &mut header)?;
        }
        let name_len = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
        let mut name = vec![0u8; name_len.min(MAX_SNAPSHOT_NAME)];
        log.read_at(12, &mut name)?;
        if &header[..8] != HEADER_MAGIC || name != meta.name.as_bytes() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("snapshot log of {} has no valid header", meta.name),
            ));
        }
        let mut this = Self {
            meta,
            log,
            regions: HashMap::new(),
            end: HEADER_LEN,
        };
        let mut head = [0u8; RECORD_HEAD];
        while this.end + RECORD_HEAD as u64 <= size {
            this.log.read_at(this.end, &mut head)?;
            let magic = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
            let region = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(head[16..20].try_into().expect("4 bytes")) as u64;
            let data_at = this.end + RECORD_HEAD as u64;
            if magic != RECORD_MAGIC
                || region >= this.regions_total()
                || len != this.region_len(region)
                || data_at + len > size
            {
                break;
            }
            let mut data = vec![0u8; len as usize];
            this.log.read_at(data_at, &mut data)?;
            if record_crc(region, &data) != crc {
                break;
            }
            this.regions.insert(region, data_at);
            this.end = data_at + len;
        }
        if this.end < size {
            this.log.resize(this.end)?;
        }
        Ok(this)
    }

    /// Append the old content of `region` (not yet synced).
    fn append(&mut self, region: u64, data: &[u8]) -> std::io::Result<()> {
        let mut record = Vec::with_capacity(RECORD_HEAD + data.len());
        record.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
        record.extend_from_slice(&record_crc(region, data).to_le_bytes());
        record.extend_from_slice(&region.to_le_bytes());
        record.extend_from_slice(&(data.len() as u32).to_le_bytes());
        record.extend_from_slice(&[0u8; 4]);
        record.extend_from_slice(data);
        self.log.write_at(self.end, &record)?;
        self.regions.insert(region, self.end + RECORD_HEAD as u64);
        self.end += record.len() as u64;
        Ok(())
    }

    fn info(&self) -> SnapshotInfo {
        SnapshotInfo {
            meta: self.meta.clone(),
            copied_bytes: self.end - HEADER_LEN,
        }
    }
}

/// The snapshots a replica holds.
pub(crate) struct Snapshots {
    store: Arc<dyn SnapshotStore>,
    held: Mutex<Vec<CowLog>>,
}

impl Snapshots {
    /// Open the logs `metas` lists and remove any other (left by a crash
    /// between creating a log and recording it).
    pub fn open(store: Arc<dyn SnapshotStore>, metas: &[SnapshotMeta]) -> std::io::Result<Self> {
        let mut held = Vec::new();
        for meta in metas {
            held.push(CowLog::open(store.as_ref(), meta.clone())?);
        }
        for name in store.list()? {
            if !metas.iter().any(|m| m.name == name) {
                store.remove(&name)?;
            }
        }
        Ok(Self {
            store,
            held: Mutex::new(held),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<CowLog>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start keeping a new snapshot of what the real volume holds now.
    fn start(&self, meta: SnapshotMeta) -> std::io::Result<()> {
        let log = CowLog::create(self.store.as_ref(), meta)?;
        self.lock().push(log);
        Ok(())
    }

    /// Stop keeping `name`; true when it was held.
    fn remove(&self, name: &str) -> std::io::Result<bool> {
        let held = {
            let mut held = self.lock();
            let before = held.len();
            held.retain(|s| s.meta.name != name);
            before != held.len()
        };
        self.store.remove(name)?;
        Ok(held)
    }

    fn list(&self) -> Vec<SnapshotInfo> {
        self.lock().iter().map(CowLog::info).collect()
    }

    /// Copy the old content of every region of `[offset, offset + len)`
    /// that a snapshot still reads from the real volume into its log, and
    /// sync the logs, before the write that overwrites it is issued.
    fn preserve(&self, data: &dyn Backend, offset: u64, len: u64) -> std::io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let mut held = self.lock();
        if held.is_empty() {
            return Ok(());
        }
        let first = offset / REGION_SIZE;
        let last = (offset + len - 1) / REGION_SIZE;
        let mut touched = vec![false; held.len()];
        for region in first..=last {
            let mut old: Option<Vec<u8>> = None;
            for (i, snap) in held.iter_mut().enumerate() {
                if region >= snap.regions_total() || snap.regions.contains_key(&region) {
                    continue;
                }
                let want = snap.region_len(region) as usize;
                let buf = old.get_or_insert_with(Vec::new);
                if buf.len() < want {
                    buf.resize(want, 0);
                    data.read_at(region * REGION_SIZE, buf)?;
                }
                snap.append(region, &buf[..want])?;
                touched[i] = true;
            }
        }
        for (snap, touched) in held.iter().zip(touched) {
            if touched {
                snap.log.sync()?;
            }
        }
        Ok(())
    }

    /// Read `buf.len()` bytes of snapshot `name` at `offset`.
    fn read(
        &self,
        volume: &str,
        name: &str,
        data: &dyn Backend,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        // Held for the whole read, so no write can overwrite a region
        // between the look-up and the read of the real volume.
        let held = self.lock();
        let snap = held.iter().find(|s| s.meta.name == name).ok_or_else(|| {
            EngineError::SnapshotNotFound {
                volume: volume.to_owned(),
                snapshot: name.to_owned(),
            }
        })?;
        let len = buf.len() as u64;
        if offset
            .checked_add(len)
            .is_none_or(|end| end > snap.meta.size_bytes)
        {
            return Err(EngineError::OutOfRange {
                volume: volume.to_owned(),
                offset,
                len,
                size: snap.meta.size_bytes,
            });
        }
        let mut done = 0u64;
        while done < len {
            let at = offset + done;
            let region = at / REGION_SIZE;
            let within = at % REGION_SIZE;
            let n = (REGION_SIZE - within).min(len - done);
            let out = &mut buf[done as usize..(done + n) as usize];
            let io = match snap.regions.get(&region) {
                Some(log_at) => snap.log.read_at(log_at + within, out),
                None => data.read_at(at, out),
            };
            io.map_err(|e| EngineError::backend(volume, "snapshot read", e))?;
            done += n;
        }
        Ok(())
    }
}

/// The real volume as the engine writes it: every write first preserves
/// what the snapshots still need ([`Snapshots::preserve`]).
pub(crate) struct CowData {
    pub data: Arc<dyn Backend>,
    pub snapshots: Arc<Snapshots>,
}

impl Backend for CowData {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.data.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.snapshots
            .preserve(self.data.as_ref(), offset, data.len() as u64)?;
        self.data.write_at(offset, data)
    }
    fn sync(&self) -> std::io::Result<()> {
        self.data.sync()
    }
    fn size(&self) -> std::io::Result<u64> {
        self.data.size()
    }
    fn resize(&self, size: u64) -> std::io::Result<()> {
        self.data.resize(size)
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Inner {
    /// Take snapshot `meta` here: checkpoint (so a later replay only holds
    /// writes that came after it), start its log, record it. The caller
    /// holds the role lock and keeps writes from this replica's real volume
    /// meanwhile (the primary's write barrier; a secondary's primary waits).
    async fn take_snapshot_here(self: &Arc<Self>, meta: SnapshotMeta) -> Result<()> {
        let this = self.clone();
        let meta_for_log = meta.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            this.checkpoint_blocking()?;
            this.snapshots
                .start(meta_for_log)
                .map_err(|e| EngineError::backend(&this.id, "snapshot create", e))
        })
        .await
        .map_err(|e| {
            EngineError::backend(&self.id, "snapshot", std::io::Error::other(e.to_string()))
        })??;
        self.lock().meta.snapshots.push(meta.clone());
        if let Err(e) = self.persist().await {
            // Not recorded: not taken. The log goes (and would go at open).
            self.lock().meta.snapshots.retain(|s| s.name != meta.name);
            let _ = self.snapshots.remove(&meta.name);
            return Err(e);
        }
        tracing::info!(volume = %self.id, snapshot = %meta.name, seq = meta.seq, "snapshot taken");
        Ok(())
    }

    /// The snapshot of that name already held, if any.
    fn held_snapshot(&self, name: &str) -> Option<SnapshotMeta> {
        self.lock()
            .meta
            .snapshots
            .iter()
            .find(|s| s.name == name)
            .cloned()
    }
}

impl Volume {
    /// Primary: snapshot the volume at the current point of the write order
    /// on this replica and on every member that stands at the same point.
    /// New writes wait meanwhile (one flush on each member, one round trip);
    /// writes in flight complete. A repeat with the same name returns the
    /// snapshot already taken.
    pub async fn create_snapshot(&self, name: &str) -> Result<SnapshotTaken> {
        let inner = &self.inner;
        check_name(&inner.id, name)?;
        let _role = inner.role_lock.lock().await;
        if inner.held_snapshot(name).is_some() {
            return Ok(SnapshotTaken {
                info: self.snapshot(name)?,
                repeat: true,
                members: Vec::new(),
                missing: Vec::new(),
            });
        }
        // No write is accepted from here until the snapshot is taken
        // everywhere: its sequence number is the last accepted write.
        let _paused = inner.write_barrier.write().await;
        let (meta, streaming) = {
            let st = inner.lock();
            crate::fence::writable(&inner.id, &st, None)?;
            let meta = SnapshotMeta {
                name: name.to_owned(),
                seq: st.last_seq,
                epoch: st.meta.epoch,
                size_bytes: st.meta.size_bytes,
                created_unix_millis: now_millis(),
            };
            (meta, crate::replication::streaming_members(&st))
        };
        inner.journal.wait_durable(meta.seq).await?;
        inner.take_snapshot_here(meta.clone()).await?;
        let mut members = Vec::new();
        let mut missing = Vec::new();
        let (not_streaming, streaming): (Vec<_>, Vec<_>) =
            streaming.into_iter().partition(|(_, _, rx)| rx.is_none());
        for (dc, _, _) in not_streaming {
            missing.push((dc, "not streaming: out of sync or being copied".to_owned()));
        }
        for (dc, endpoint, rx) in streaming {
            let mut rx = rx.expect("streaming members have progress");
            let holds = tokio::time::timeout(
                inner.config.ack_timeout,
                rx.wait_for(|p| p.acked >= meta.seq || !p.streaming),
            )
            .await
            .map(|r| r.map(|p| p.acked >= meta.seq));
            if !matches!(holds, Ok(Ok(true))) {
                missing.push((dc, format!("did not reach write {} in time", meta.seq)));
                continue;
            }
            let req = PeerRequest {
                volume_id: inner.id.clone(),
                epoch: meta.epoch,
                msg: PeerMessage::TakeSnapshot { meta: meta.clone() },
            };
            match tokio::time::timeout(
                inner.config.ack_timeout,
                inner.transport.call(&endpoint, req),
            )
            .await
            {
                Ok(Ok(_)) => members.push(dc),
                Ok(Err(e)) => missing.push((dc, e.to_string())),
                Err(_) => missing.push((dc, "did not answer in time".to_owned())),
            }
        }
        for (dc, why) in &missing {
            tracing::warn!(volume = %inner.id, snapshot = name, member = %dc, why = %why, "member does not hold the snapshot");
        }
        Ok(SnapshotTaken {
            info: self.snapshot(name)?,
            repeat: false,
            members,
            missing,
        })
    }

    /// Secondary: take snapshot `meta` of the primary at `epoch`; this
    /// replica must stand exactly at its sequence number. A repeat succeeds.
    pub(crate) async fn take_snapshot_at(&self, epoch: u64, meta: SnapshotMeta) -> Result<()> {
        let inner = &self.inner;
        check_name(&inner.id, &meta.name)?;
        let _role = inner.role_lock.lock().await;
        if let Some(held) = inner.held_snapshot(&meta.name) {
            if held.seq == meta.seq && held.epoch == meta.epoch {
                return Ok(());
            }
            return Err(EngineError::SnapshotConflict {
                volume: inner.id.clone(),
                snapshot: meta.name,
                held: held.seq,
                asked: meta.seq,
            });
        }
        {
            let st = inner.lock();
            crate::fence::data_message(&inner.id, &st, epoch)?;
            if st.meta.role != Role::Secondary {
                return Err(EngineError::NotSecondary {
                    volume: inner.id.clone(),
                    role: st.meta.role,
                });
            }
            if st.meta.resyncing || st.last_seq != meta.seq || st.meta.size_bytes != meta.size_bytes
            {
                return Err(EngineError::SnapshotPosition {
                    volume: inner.id.clone(),
                    snapshot: meta.name,
                    want: meta.seq,
                    have: st.last_seq,
                });
            }
        }
        inner.take_snapshot_here(meta).await
    }

    /// Any role: stop holding snapshot `name` and free its log. Deleting
    /// one that is not held succeeds.
    pub async fn delete_snapshot(&self, name: &str) -> Result<bool> {
        let inner = &self.inner;
        check_name(&inner.id, name)?;
        let _role = inner.role_lock.lock().await;
        let Some(meta) = inner.held_snapshot(name) else {
            // A log without a record (a crash mid-create) goes too.
            inner
                .snapshots
                .remove(name)
                .map_err(|e| EngineError::backend(&inner.id, "snapshot delete", e))?;
            return Ok(false);
        };
        // The record goes first: a crash before the log is removed leaves
        // an orphan log, which the next open removes.
        inner.lock().meta.snapshots.retain(|s| s.name != name);
        if let Err(e) = inner.persist().await {
            inner.lock().meta.snapshots.push(meta);
            return Err(e);
        }
        inner
            .snapshots
            .remove(name)
            .map_err(|e| EngineError::backend(&inner.id, "snapshot delete", e))?;
        tracing::info!(volume = %inner.id, snapshot = name, "snapshot deleted");
        Ok(true)
    }

    /// The snapshots this replica holds, oldest first.
    pub fn snapshots(&self) -> Vec<SnapshotInfo> {
        self.inner.snapshots.list()
    }

    /// One snapshot this replica holds.
    pub fn snapshot(&self, name: &str) -> Result<SnapshotInfo> {
        self.snapshots()
            .into_iter()
            .find(|s| s.meta.name == name)
            .ok_or_else(|| EngineError::SnapshotNotFound {
                volume: self.inner.id.clone(),
                snapshot: name.to_owned(),
            })
    }

    /// Any role: read `len` bytes of snapshot `name` at `offset`.
    pub async fn read_snapshot(&self, name: &str, offset: u64, len: u64) -> Result<Bytes> {
        let inner = self.inner.clone();
        if len > inner.config.max_message_bytes {
            return Err(EngineError::MessageTooLarge {
                volume: inner.id.clone(),
                len,
                max: inner.config.max_message_bytes,
            });
        }
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len as usize];
            inner
                .snapshots
                .read(&inner.id, &name, inner.raw_data.as_ref(), offset, &mut buf)?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|e| {
            EngineError::backend(
                &self.inner.id,
                "snapshot read",
                std::io::Error::other(e.to_string()),
            )
        })?
    }
}
