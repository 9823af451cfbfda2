//! Compiles every .proto in this folder. protoc comes from the
//! protoc-bin-vendored crate so that a build needs nothing from apt.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let mut protos: Vec<std::path::PathBuf> = Vec::new();
    for dir in ["csi", "roam"] {
        // The folder too: a .proto added later must rebuild as well.
        println!("cargo:rerun-if-changed={dir}");
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "proto") {
                println!("cargo:rerun-if-changed={}", path.display());
                protos.push(path);
            }
        }
    }
    protos.sort();
    // Replication payloads stay `bytes::Bytes` end to end (no copy per hop).
    tonic_prost_build::configure()
        .bytes(".roam.replication.v1")
        .compile_protos(&protos, &[std::path::PathBuf::from(".")])?;
    Ok(())
}
