//! Roam data path: everything that happens to a byte from the moment a host
//! writes it until every data center of its copy volume group holds it.
//! Modules follow the data: frontend -> cache (journal) -> replication ->
//! receive -> backend.

pub mod frontend;
