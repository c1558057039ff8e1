//! Parity tests for the Wan 2.1 golden cases in `../shared/golden/wan` that
//! the runtime implements so far. A missing folder fails with its path:
//! these tests never skip.

use vidflow_gpu::golden::{check_case, wan_golden_dir};

fn run(name: &str) {
    let dir = wan_golden_dir().join(name);
    assert!(
        dir.is_dir(),
        "golden case folder missing: {} (the tests read ../shared/golden/wan relative to the project root)",
        dir.display()
    );
    let report = check_case(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for t in &report.tensors {
        eprintln!(
            "{name}/{}: max abs err {:.3e} (atol {}, rtol {}) {}",
            t.name,
            t.max_abs_err,
            report.tolerance.atol,
            report.tolerance.rtol,
            if t.pass { "PASS" } else { "FAIL" }
        );
    }
    assert!(
        report.pass(),
        "{name}: outside tolerance: {:?}",
        report.tensors
    );
}

#[test]
fn unipc_flow_schedule() {
    run("unipc_flow_schedule");
}

#[test]
fn umt5_encoder() {
    run("umt5_encoder");
}

#[test]
fn clip_vision_encoder() {
    run("clip_vision_encoder");
}

#[test]
fn wan_transformer_t2v() {
    run("wan_transformer_t2v");
}

#[test]
fn wan_transformer_i2v() {
    run("wan_transformer_i2v");
}

#[test]
fn wan_vae_decoder() {
    run("wan_vae_decoder");
}

#[test]
fn wan_vae_encoder() {
    run("wan_vae_encoder");
}

#[test]
fn wan_pipeline_t2v() {
    run("wan_pipeline_t2v");
}

#[test]
fn wan_pipeline_i2v() {
    run("wan_pipeline_i2v");
}
