//! Compiles `proto/` with protox (pure Rust: no system `protoc`) and feeds the
//! descriptors to tonic-prost-build. The encoded descriptor set is written to
//! OUT_DIR for server reflection; protox keeps source info in it, so grpcurl
//! `describe` shows the proto comments.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/rooms/v1/rooms.proto",
        "proto/rooms/v1/sessions.proto",
        "proto/rooms/v1/events.proto",
    ];
    // With compile_fds, tonic-prost-build neither writes the descriptor set nor
    // emits rerun-if-changed lines, so both are done here.
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("rooms_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
