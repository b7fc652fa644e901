//! Compiles the protobuf schemas with `protox` (pure Rust), so a fresh
//! machine needs no system `protoc`: `proto/fieldlink/v1/*.proto` (the
//! gateway → registry stream, with gRPC stubs) and
//! `proto/sparkplug_b/sparkplug_b.proto` (the Sparkplug B payload the
//! gateway's Sparkplug host and the simulators speak).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/fieldlink/v1/ingest.proto",
        "proto/sparkplug_b/sparkplug_b.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Metric bytes share the received payload's buffer instead of copying.
        .bytes(".sparkplug_b")
        .compile_fds(descriptors)?;
    Ok(())
}
