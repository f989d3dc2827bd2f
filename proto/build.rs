//! Generates the gRPC code from `proto/` in pure Rust: protox parses the .proto files (no system
//! `protoc`), and tonic-prost-build turns the descriptors into messages, clients and servers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["mesh/config/v1/config.proto", "mesh/ca/v1/ca.proto"];
    for file in files {
        println!("cargo:rerun-if-changed=proto/{file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().codec_path("crate::codec::MeshCodec").compile_fds(descriptors)?;
    Ok(())
}
