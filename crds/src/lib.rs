//! Roam API types. Filled in by the directory-server work.
