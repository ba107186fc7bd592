//! Compiles `proto/` with protox (pure Rust) so building needs no `protoc` binary.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        proto_root.join("feedbackpulse/v1/events.proto"),
        proto_root.join("feedbackpulse/v1/attempts.proto"),
        proto_root.join("feedbackpulse/v1/jobs.proto"),
        proto_root.join("feedbackpulse/v1/health.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&proto_root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
