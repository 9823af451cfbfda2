//! Shared pieces of the multi-process data-plane tests: network namespaces
//! with a bridge, storage systems started as separate processes inside them,
//! a delay proxy in front of each, faults (kill -9, SIGSTOP, partitions,
//! full disks), and a writer whose every block can be checked afterwards.
//!
//! Everything a test sets up is owned by a value whose drop removes it
//! (processes killed, namespaces, veths, bridge and mounts deleted), so a
//! failing test leaves nothing behind. Names carry the test process id and a
//! counter, so runs don't collide. These tests need root; run them one at a
//! time (`--test-threads=1`).
#![allow(dead_code)]

pub mod blocks;
pub mod cluster;
pub mod directory;
pub mod netns;
pub mod raw_grpc;
pub mod tmpfs;
pub mod writer;

/// Runs a command and fails with its stderr when it does not succeed.
pub fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("run {program} {args:?}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {args:?}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A name unique to this test process and call: `<prefix><pid % 1000><n>`,
/// short enough for an interface name (15 bytes).
pub fn unique_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 1000) * 100 + NEXT.fetch_add(1, Ordering::Relaxed) % 100
}
