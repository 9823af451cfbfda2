//! Cache: where a write lands first on any replica — the in-memory cache of
//! writes not yet held by every secondary ([`memory`]) and the persistent
//! journal that makes a write durable before it is acknowledged ([`journal`]).

pub mod journal;
pub mod memory;
