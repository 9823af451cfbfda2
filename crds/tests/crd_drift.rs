//! The committed CRD YAML must be what the Rust types generate.
//! Fix a failure with `cargo run -p roam-crds --bin crdgen`.

use std::path::Path;

#[test]
fn committed_crd_yaml_matches_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = roam_crds::generate::crd_files().expect("serialize CRDs");
    assert_eq!(files.len(), 3);
    for dir in roam_crds::generate::OUTPUT_DIRS {
        for (name, want) in &files {
            let path = root.join(dir).join(name);
            let got = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; run `cargo run -p roam-crds --bin crdgen`",
                    path.display()
                )
            });
            assert!(
                got == *want,
                "{} differs from the Rust types; run `cargo run -p roam-crds --bin crdgen`",
                path.display()
            );
        }
    }
}
