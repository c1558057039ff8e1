//! Generates the Rust types of `proto/onnx.proto` (the subset of the ONNX
//! format our interpreter reads) with protox and prost-build, as
//! `vidflow-job` and `vidflow-connectors` do for their protos: no `protoc`
//! on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["onnx.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
