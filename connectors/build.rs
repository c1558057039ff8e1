//! Generates the gRPC code from proto/api.proto (+ the job spec in
//! operators/job/proto) with protox, a pure-Rust proto compiler, so building
//! needs no `protoc` on the machine. The file descriptor set is also written
//! for the reflection service.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    println!("cargo:rerun-if-changed=../operators/job/proto/job.proto");
    let fds = protox::compile(["api.proto"], ["proto", "../operators/job/proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    {
        use prost::Message;
        std::fs::write(out.join("vidflow_descriptor.bin"), fds.encode_to_vec())?;
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The job spec's Rust types are written by hand in vidflow-job
        // (with conversions to the JSON form); reuse them.
        .extern_path(".vidflow.v1.JobSpec", "::vidflow_job::proto::JobSpec")
        .extern_path(
            ".vidflow.v1.ImageSource",
            "::vidflow_job::proto::ImageSource",
        )
        .extern_path(".vidflow.v1.Tier", "::vidflow_job::proto::Tier")
        .extern_path(".vidflow.v1.JobKind", "::vidflow_job::proto::JobKind")
        .extern_path(".vidflow.v1.Mode", "::vidflow_job::proto::Mode")
        .compile_fds(fds)?;
    Ok(())
}
