//! A small tmpfs mounted for one test (a storage system's data directory
//! that fills up), unmounted on drop.

use std::path::{Path, PathBuf};

use super::sh;

pub struct SmallTmpfs {
    path: PathBuf,
}

impl SmallTmpfs {
    pub fn mount(path: &Path, size_bytes: u64) -> Self {
        std::fs::create_dir_all(path).expect("create tmpfs mountpoint");
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_bytes}"),
                "roam-test",
                path.to_str().expect("utf-8 path"),
            ],
        )
        .expect("mount tmpfs");
        Self {
            path: path.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let p = self.path.to_string_lossy().into_owned();
        if sh("umount", &[&p]).is_err() {
            let _ = sh("umount", &["--lazy", &p]);
        }
    }
}
