//! Generates the protobuf types of `proto/job.proto` with protox (a
//! pure-Rust proto compiler: no `protoc` on the machine) and prost-build,
//! the same way `connectors/` generates the gRPC API that embeds them.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/job.proto");
    let fds = protox::compile(["job.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
