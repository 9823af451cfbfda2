//! Where the repository, its pinned tools and the local cluster's state live.

use std::path::{Path, PathBuf};

/// The repository's root: the parent of this crate's directory (`e2e/`).
pub fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The local cluster's state directory: `$ROAM_CLUSTER_DIR`, or `.cluster` in
/// the repository (the same rule as `e2e/cluster/control-plane.sh`).
pub fn cluster_dir() -> PathBuf {
    match std::env::var_os("ROAM_CLUSTER_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        }
        _ => repo_root().join(".cluster"),
    }
}

/// A pinned upstream tool installed by `e2e/tools/install.sh`, such as
/// `kubectl` or `csi-sanity`.
pub fn tool_path(name: &str) -> PathBuf {
    repo_root().join(".tools").join("bin").join(name)
}

/// The `kubectl` to run: the pinned one in `.tools/bin` when
/// `e2e/tools/install.sh` put it there, else the first `kubectl` on `PATH`
/// (a machine that runs the suite against its own cluster, such as kind,
/// need not build the pinned tools). `None` when there is neither.
pub fn kubectl_path() -> Option<PathBuf> {
    let pinned = tool_path("kubectl");
    if pinned.is_file() {
        return Some(pinned);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("kubectl"))
        .find(|candidate| candidate.is_file())
}

/// The script that starts and stops the local control plane.
pub(crate) fn control_plane_script() -> PathBuf {
    repo_root()
        .join("e2e")
        .join("cluster")
        .join("control-plane.sh")
}
