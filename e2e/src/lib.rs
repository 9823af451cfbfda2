//! Test support: a real control plane for integration tests.
