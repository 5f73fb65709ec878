//! Compiles `proto/suivi/v1` with a protoc vendored from crates.io, so a fresh machine needs
//! nothing installed by hand, and writes the descriptor set that gRPC reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/suivi/v1/event.proto",
        "proto/suivi/v1/ingest.proto",
        "proto/suivi/v1/counters.proto",
        "proto/suivi/storage/v1/storage.proto",
    ];
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("suivi_descriptor.bin"))
        .compile_with_config(
            config,
            &protos.map(PathBuf::from),
            &[PathBuf::from("proto"), protoc_bin_vendored::include_path()?],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
