//! Roam data path: everything that happens to a byte from the moment a host
//! writes it until every data center of its copy volume group holds it.
//! Modules follow the data: frontend -> cache (journal) -> replication
//! (sender) -> receive -> role -> resync -> snapshot -> backend.
//!
//! The core does no I/O of its own: it reaches the real volume, the journal
//! and the metadata through [`backend::Backend`] and [`backend::MetaStore`],
//! and other storage systems through [`transport::Transport`].
//!
//! The handle a host side uses ([`Volume`], async, tokio):
//!
//! ```ignore
//! let vol = Volume::open(id, files, transport, EngineConfig::default()).await?;
//! let seq: u64 = vol.write(offset, Bytes::from(buf), fua).await?; // durable when it returns
//! let data: Bytes = vol.read(offset, len).await?;
//! let durable: u64 = vol.flush().await?;
//! let size: u64 = vol.size();
//! ```
//!
//! Writes are refused (`NotPrimary`, `Fenced`) unless this replica is the
//! primary; reads work in any role.

pub mod backend;
pub mod cache;
mod counters;
pub mod directory;
pub mod error;
mod fence;
pub mod frontend;
pub mod receive;
pub mod replication;
pub mod resync;
pub mod role;
pub mod snapshot;
pub mod transport;
pub mod types;
pub mod volume;

pub use backend::VolumeFiles;
pub use counters::{IoSnapshot, LATENCY_BUCKETS_MICROS, LatencySnapshot};
pub use error::{EngineError, RefusalCode, TransportError};
pub use types::*;
pub use volume::{EngineConfig, Volume};
