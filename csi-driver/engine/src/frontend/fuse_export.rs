//! The FUSE export: a filesystem with one regular file, `volume`, whose bytes
//! are the block target's bytes.
//!
//! Requests are taken off `/dev/fuse` by a few fuser threads (each with its
//! own cloned fd) and handed to a tokio runtime at once, so many reads and
//! writes are in flight together; each task replies when its target call
//! finishes. The file is opened with `FOPEN_DIRECT_IO` (no page cache between
//! the loop device and the target) and `FOPEN_PARALLEL_DIRECT_WRITES` (the
//! kernel does not serialize writes to it).
//!
//! The file's size is held in one shared atomic ([`ExportedSize`]) rather
//! than asked of the target on every request, so that growing a volume is
//! one deliberate step: [`ExportedSize::grow`] stores the larger size (a
//! shrink is refused), tells the kernel to drop the inode's cached
//! attributes, and stats the file so the kernel's idea of its size (which
//! the loop driver reads) is the new one.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno as NixErrno;

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, KernelConfig, LockOwner, MountOption, Notifier, OpenFlags, ReplyAttr,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    WriteFlags,
};
use tokio::runtime::Handle;
use tracing::{error, info, warn};

use super::error::FrontendError;
use super::loop_device::DEFAULT_RELEASE_TIMEOUT;
use super::target::{BlockTarget, TargetError};

/// Name of the single file in the export.
pub const VOLUME_FILE_NAME: &str = "volume";
/// Largest write the kernel sends in one request.
const MAX_WRITE: u32 = 1 << 20;
/// Background (asynchronous) requests the kernel keeps in flight.
const MAX_BACKGROUND: u16 = 64;
/// Threads reading requests off `/dev/fuse`.
const FUSE_THREADS: usize = 2;
const FILE_INO: INodeNo = INodeNo(2);
const ATTR_TTL: Duration = Duration::from_secs(3600);
/// How often a busy unmount is tried again.
const BUSY_POLL: Duration = Duration::from_millis(10);

struct VolumeFs {
    target: Arc<dyn BlockTarget>,
    size: Arc<AtomicU64>,
    runtime: Handle,
    created: SystemTime,
}

impl VolumeFs {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, size, perm, nlink) = if ino == INodeNo::ROOT {
            (FileType::Directory, 0, 0o755, 2)
        } else if ino == FILE_INO {
            (FileType::RegularFile, self.size(), 0o600, 1)
        } else {
            return None;
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.created,
            mtime: self.created,
            ctime: self.created,
            crtime: self.created,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

/// Logs a failed target call once, where it becomes an errno.
fn to_errno(e: &TargetError) -> Errno {
    match e {
        TargetError::OutOfRange { .. } => {
            error!("{e}");
            Errno::EINVAL
        }
        TargetError::StaleEpoch { .. } => {
            error!("{e}: failing the I/O with EIO");
            Errno::EIO
        }
        _ => {
            error!("{e}");
            Errno::EIO
        }
    }
}

impl Filesystem for VolumeFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(nearest) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(nearest);
        }
        // The loop driver's direct I/O reaches FUSE as asynchronous
        // (background) requests; the kernel's default of 12 in flight caps a
        // deep queue well below what the target can take.
        if let Err(nearest) = config.set_max_background(MAX_BACKGROUND) {
            let _ = config.set_max_background(nearest);
        }
        if let Err(nearest) = config.set_congestion_threshold(MAX_BACKGROUND * 3 / 4) {
            let _ = config.set_congestion_threshold(nearest);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.attr(FILE_INO) {
            Some(attr) if parent == INodeNo::ROOT && name == VOLUME_FILE_NAME => {
                reply.entry(&ATTR_TTL, &attr, Generation(0))
            }
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&ATTR_TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // The size is the volume's; everything else is fixed.
        match (self.attr(ino), size) {
            (Some(_), Some(s)) if s != self.size() => reply.error(Errno::EPERM),
            (Some(attr), _) => reply.attr(&ATTR_TTL, &attr),
            (None, _) => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino != FILE_INO {
            return reply.error(Errno::EISDIR);
        }
        reply.opened(
            FileHandle(0),
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != FILE_INO {
            return reply.error(Errno::EISDIR);
        }
        let volume_size = self.size();
        if offset >= volume_size {
            return reply.data(&[]);
        }
        let len = (volume_size - offset).min(u64::from(size)) as u32;
        let target = Arc::clone(&self.target);
        self.runtime.spawn(async move {
            match target.read_at(offset, len).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(to_errno(&e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if ino != FILE_INO {
            return reply.error(Errno::EISDIR);
        }
        let fua = flags.0 & (libc::O_DSYNC | libc::O_SYNC) != 0;
        let len = data.len() as u32;
        let data = data.to_vec();
        let target = Arc::clone(&self.target);
        self.runtime.spawn(async move {
            match target.write_at(offset, data, fua).await {
                Ok(()) => reply.written(len),
                Err(TargetError::OutOfRange { .. }) => reply.error(Errno::ENOSPC),
                Err(e) => reply.error(to_errno(&e)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(): nothing is buffered here; durability is fsync's job.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let target = Arc::clone(&self.target);
        self.runtime.spawn(async move {
            match target.flush().await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(to_errno(&e)),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (FILE_INO, FileType::RegularFile, VOLUME_FILE_NAME),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks = self.size() / 4096;
        reply.statfs(blocks, 0, 0, 2, 0, 4096, 255, 4096);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }
}

/// The exported file's size, shared by the FUSE request handlers and the
/// owner of the export. Cloning shares it.
#[derive(Clone)]
pub struct ExportedSize {
    volume: String,
    bytes: Arc<AtomicU64>,
    notifier: Notifier,
    file: PathBuf,
}

impl ExportedSize {
    /// The size the file shows now.
    pub fn get(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Makes the file `new_size` bytes long as the kernel sees it. Refuses a
    /// shrink (nothing changes then); the same size is a no-op. Blocking: it
    /// stats the file through the kernel.
    pub fn grow(&self, new_size: u64) -> Result<u64, FrontendError> {
        let current = self.get();
        if new_size < current {
            return Err(FrontendError::ShrinkRefused {
                volume: self.volume.clone(),
                current,
                requested: new_size,
            });
        }
        if new_size == current {
            return Ok(current);
        }
        self.bytes.store(new_size, Ordering::Release);
        // Attributes only (offset < 0): there is no page cache to drop.
        self.notifier
            .inval_inode(FILE_INO, -1, 0)
            .map_err(|source| FrontendError::InvalidateAttributes {
                volume: self.volume.clone(),
                source,
            })?;
        let seen = std::fs::metadata(&self.file)
            .map_err(|source| FrontendError::StatExport {
                path: self.file.clone(),
                source,
            })?
            .len();
        if seen != new_size {
            return Err(FrontendError::SizeNotSeen {
                path: self.file.clone(),
                expected: new_size,
                seen,
            });
        }
        info!(volume = %self.volume, size = new_size, "FUSE export grown");
        Ok(new_size)
    }
}

/// A mounted FUSE export. Unmount with [`FuseExport::unmount`]; dropping it
/// unmounts too.
pub struct FuseExport {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    size: ExportedSize,
    /// The connection's number in fusectl (the minor of the mount's device).
    connection: u64,
}

/// Ends FUSE connection `connection` through fusectl
/// (`/sys/fs/fuse/connections/<n>/abort`), mounting fusectl first when it
/// is not mounted.
fn abort_connection(connection: u64) -> std::io::Result<()> {
    let connections = Path::new("/sys/fs/fuse/connections");
    let abort = connections.join(connection.to_string()).join("abort");
    if !abort.exists() {
        // Mounting it a second time is refused, harmlessly.
        let _ = nix::mount::mount(
            Some("fusectl"),
            connections,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
    match std::fs::write(&abort, b"1") {
        // Gone meanwhile: the connection ended by itself.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl FuseExport {
    /// Mounts the export of `target` at `mountpoint` (an existing empty
    /// directory); requests are served on `runtime`.
    pub fn mount(
        target: Arc<dyn BlockTarget>,
        mountpoint: &Path,
        runtime: Handle,
    ) -> Result<Self, FrontendError> {
        let volume = target.volume_id().to_owned();
        let size = Arc::new(AtomicU64::new(target.size()));
        let fs = VolumeFs {
            target,
            size: Arc::clone(&size),
            runtime,
            created: SystemTime::now().max(UNIX_EPOCH),
        };
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName(format!("roam:{volume}")),
            MountOption::Subtype("roam".into()),
            MountOption::NoAtime,
            MountOption::NoDev,
            MountOption::NoSuid,
        ];
        config.n_threads = Some(FUSE_THREADS);
        config.clone_fd = true;
        let session = fuser::spawn_mount(fs, mountpoint, &config).map_err(|source| {
            FrontendError::MountFuse {
                volume: volume.clone(),
                path: mountpoint.to_owned(),
                source,
            }
        })?;
        info!(volume, mountpoint = %mountpoint.display(), "FUSE export mounted");
        let connection = std::fs::metadata(mountpoint)
            .map(|m| libc::minor(std::os::unix::fs::MetadataExt::dev(&m)) as u64)
            .map_err(|source| FrontendError::StatExport {
                path: mountpoint.to_owned(),
                source,
            })?;
        let size = ExportedSize {
            volume,
            bytes: size,
            notifier: session.notifier(),
            file: mountpoint.join(VOLUME_FILE_NAME),
        };
        Ok(Self {
            session: Some(session),
            mountpoint: mountpoint.to_owned(),
            size,
            connection,
        })
    }

    /// The exported file's size, to read or grow.
    pub fn size(&self) -> &ExportedSize {
        &self.size
    }

    /// Path of the volume file inside the export.
    pub fn volume_file(&self) -> PathBuf {
        self.mountpoint.join(VOLUME_FILE_NAME)
    }

    /// Unmounts and waits for the request threads to finish. A mount that
    /// is still busy (something has the volume file open) is tried again
    /// until `timeout` has passed. Resumable: after an error the export stays
    /// mounted and served, and a second call tries again; after success it
    /// is a no-op.
    pub fn unmount(&mut self, timeout: Duration) -> Result<(), FrontendError> {
        if self.session.is_none() {
            return Ok(());
        }
        // Unmount here rather than through the session, which is consumed
        // by its unmount even when that fails: the mount would be left
        // behind with nothing tracking it.
        let deadline = Instant::now() + timeout;
        loop {
            match nix::mount::umount(&self.mountpoint) {
                Ok(()) => break,
                // Unmounted already (by hand, or by an earlier try).
                Err(NixErrno::EINVAL | NixErrno::ENOENT) => break,
                Err(NixErrno::EBUSY) if Instant::now() < deadline => std::thread::sleep(BUSY_POLL),
                Err(e) => {
                    return Err(FrontendError::UnmountFuse {
                        path: self.mountpoint.clone(),
                        source: e.into(),
                    });
                }
            }
        }
        // The kernel ended the connection, so the request threads stop.
        // Join them; the session's own unmount guard is dropped only then
        // (it finds the mount gone, at worst logs that it could not unmount
        // it again) while this export still owns the mountpoint.
        if let Some(mut session) = self.session.take() {
            let threads = std::mem::replace(&mut session.guard, std::thread::spawn(|| Ok(())));
            // The connection ends with its last mount. A copy of the mount in
            // another mount namespace (one made while the export was
            // mounted) keeps it open, and the threads would serve that copy
            // for as long as it lives: after a bounded wait, end the
            // connection through fusectl, as `fusermount -u` cannot.
            let deadline = Instant::now() + timeout;
            while !threads.is_finished() && Instant::now() < deadline {
                std::thread::sleep(BUSY_POLL);
            }
            if !threads.is_finished() {
                warn!(
                    mountpoint = %self.mountpoint.display(),
                    "FUSE connection still open after the unmount (a copy of the mount in \
                     another mount namespace?); aborting it"
                );
                abort_connection(self.connection).map_err(|source| FrontendError::UnmountFuse {
                    path: self.mountpoint.clone(),
                    source,
                })?;
            }
            let served = threads.join().map_err(|_| FrontendError::UnmountFuse {
                path: self.mountpoint.clone(),
                source: std::io::Error::other("a FUSE request thread panicked"),
            })?;
            drop(session);
            if let Err(e) = served {
                // Unmounted all the same: the threads' last error is news,
                // not a failure of the unmount.
                warn!(mountpoint = %self.mountpoint.display(), "FUSE session ended with {e}");
            }
        }
        info!(mountpoint = %self.mountpoint.display(), "FUSE export unmounted");
        Ok(())
    }
}

impl Drop for FuseExport {
    fn drop(&mut self) {
        if let Err(e) = self.unmount(DEFAULT_RELEASE_TIMEOUT) {
            error!("{e:#}");
        }
    }
}
