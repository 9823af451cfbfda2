//! Writes the CRD YAML generated from the Rust types into `crds/` and
//! `charts/roam/crds/` (relative to the repository root, found from this
//! crate's manifest directory).

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in roam_crds::generate::OUTPUT_DIRS {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir)?;
        for (name, yaml) in roam_crds::generate::crd_files()? {
            let path = dir.join(&name);
            std::fs::write(&path, yaml)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
