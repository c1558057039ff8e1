//! One parity test per golden case in `../shared/golden/ltx`. A missing folder
//! fails with its path: these tests never skip.

use vidflow_gpu::golden::{check_case, default_golden_dir};

fn run(name: &str) {
    let dir = default_golden_dir().join(name);
    assert!(
        dir.is_dir(),
        "golden case folder missing: {} (the tests read ../shared/golden/ltx relative to the project root)",
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
fn flow_match_schedule() {
    run("flow_match_schedule");
}

#[test]
fn t5_encoder() {
    run("t5_encoder");
}

#[test]
fn ltx_transformer_t2v() {
    run("ltx_transformer_t2v");
}

#[test]
fn ltx_transformer_i2v_per_token_timestep() {
    run("ltx_transformer_i2v_per_token_timestep");
}

#[test]
fn ltx_vae_decoder() {
    run("ltx_vae_decoder");
}

#[test]
fn ltx_vae_decoder_timestep_conditioned() {
    run("ltx_vae_decoder_timestep_conditioned");
}

#[test]
fn ltx_vae_encoder() {
    run("ltx_vae_encoder");
}

#[test]
fn ltx_pipeline_t2v() {
    run("ltx_pipeline_t2v");
}
