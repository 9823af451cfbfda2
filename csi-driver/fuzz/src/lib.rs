//! What the fuzz targets share: in-memory files behind the engine's backend
//! traits, a transport that reaches nobody, one runtime per thread, a reader
//! of fuzz input, and the storage server's own request handling (compiled
//! here from `csi-driver/src/storage/`, the same files the server is built
//! from, since that crate is a binary).
//!
//! Each target's logic lives in a module with `run(&[u8])`, so that the
//! committed corpus and every input that once crashed (`regressions/`)
//! replay as ordinary tests: `cargo test` in this directory.

use std::sync::{Arc, Mutex};

use roam_engine::TransportError;
use roam_engine::backend::{Backend, MetaStore};
use roam_engine::transport::{PeerLink, PeerReply, PeerRequest, Transport};

pub mod journal_replay;
pub mod peer_message;
pub mod storage_request;

// The storage server's request validation and conversions, unchanged.
#[allow(dead_code, unused_imports)]
#[path = "../../src/storage/convert.rs"]
pub mod convert;
#[allow(dead_code, unused_imports)]
#[path = "../../src/storage/error.rs"]
pub mod error;
#[allow(dead_code, unused_imports)]
#[path = "../../src/storage/registry.rs"]
pub mod registry;
#[allow(dead_code, unused_imports)]
#[path = "../../src/storage/service.rs"]
pub mod service;

/// A file in memory. `sync` does nothing: a fuzz run has no power cuts.
#[derive(Default)]
pub struct MemFile(pub Mutex<Vec<u8>>);

impl MemFile {
    pub fn with(bytes: Vec<u8>) -> Arc<MemFile> {
        Arc::new(MemFile(Mutex::new(bytes)))
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Backend for MemFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        buf.fill(0);
        let start = (offset as usize).min(f.len());
        let end = (offset as usize).saturating_add(buf.len()).min(f.len());
        buf[..end - start].copy_from_slice(&f[start..end]);
        Ok(())
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let end = offset as usize + data.len();
        if f.len() < end {
            f.resize(end, 0);
        }
        f[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.0.lock().unwrap_or_else(|e| e.into_inner()).len() as u64)
    }
    fn resize(&self, size: u64) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .resize(size as usize, 0);
        Ok(())
    }
}

#[derive(Default)]
pub struct MemMeta(pub Mutex<Option<Vec<u8>>>);

impl MetaStore for MemMeta {
    fn load(&self) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
    fn store(&self, bytes: &[u8]) -> std::io::Result<()> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes.to_vec());
        Ok(())
    }
}

/// Every peer is unreachable.
pub struct Nowhere;

#[tonic::async_trait]
impl Transport for Nowhere {
    async fn open(&self, endpoint: &str) -> Result<PeerLink, TransportError> {
        Err(TransportError::Connect {
            endpoint: endpoint.into(),
            reason: "no network in a fuzz run".into(),
        })
    }
    async fn call(&self, endpoint: &str, _req: PeerRequest) -> Result<PeerReply, TransportError> {
        Err(TransportError::Connect {
            endpoint: endpoint.into(),
            reason: "no network in a fuzz run".into(),
        })
    }
}

/// Runs `f` to completion on this thread's runtime (one per thread, made once).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
    }
    RT.with(|rt| rt.block_on(f))
}

/// Reads fuzz input front to back; past the end everything is zero.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }
    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    pub fn u16(&mut self) -> u16 {
        let b = self.bytes(2);
        let mut a = [0u8; 2];
        a[..b.len()].copy_from_slice(b);
        u16::from_le_bytes(a)
    }
    pub fn u64(&mut self) -> u64 {
        let b = self.bytes(8);
        let mut a = [0u8; 8];
        a[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(a)
    }
    /// A length-prefixed chunk (u16 length).
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = self.u16() as usize;
        self.bytes(n)
    }
}

/// Replays every file of `dir` through `run` (the corpus and the inputs that
/// once crashed a target).
pub fn replay_dir(dir: &str, run: fn(&[u8])) -> usize {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let Ok(entries) = std::fs::read_dir(&path) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let data = std::fs::read(e.path()).expect("read input");
        run(&data);
        n += 1;
    }
    n
}
