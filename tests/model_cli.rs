//! `vidflow model ...` end to end through the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn golden_root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/ltx");
    assert!(
        p.is_dir(),
        "golden cases missing: {} (tests read ../shared/golden/ltx)",
        p.display()
    );
    p
}

fn vidflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vidflow"))
}

#[test]
fn check_passes_all_golden_cases() {
    let root = golden_root();
    // The cases of the runtime as it is: the shared folder also holds the
    // 0.9.5 VAE and conditioning cases, which the LTX conditioning work
    // checks on its own.
    const CASES: [&str; 8] = [
        "flow_match_schedule",
        "ltx_pipeline_t2v",
        "ltx_transformer_i2v_per_token_timestep",
        "ltx_transformer_t2v",
        "ltx_vae_decoder",
        "ltx_vae_decoder_timestep_conditioned",
        "ltx_vae_encoder",
        "t5_encoder",
    ];
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .filter(|p| CASES.iter().any(|c| p.ends_with(c)))
        .collect();
    dirs.sort();
    assert_eq!(
        dirs.len(),
        8,
        "expected the 8 golden cases in {}",
        root.display()
    );
    let out = vidflow()
        .args(["model", "check"])
        .args(&dirs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "model check failed:\n{stdout}");
    assert_eq!(stdout.matches(" PASS").count(), 8, "{stdout}");
    assert!(stdout.contains("8 passed, 0 failed"), "{stdout}");
}

/// Copies a case and changes one weight: the check must FAIL, exit non-zero.
#[test]
fn check_fails_on_a_corrupted_weight() {
    let src = golden_root().join("ltx_transformer_t2v");
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("ltx_transformer_t2v_corrupted");
    std::fs::create_dir(&dst).unwrap();
    for f in [
        "case.json",
        "inputs.safetensors",
        "expected.safetensors",
        "weights.safetensors",
    ] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    // Locate proj_out.bias in the header and overwrite its first f32.
    let wpath = dst.join("weights.safetensors");
    let mut bytes = std::fs::read(&wpath).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let off = header["proj_out.bias"]["data_offsets"][0].as_u64().unwrap() as usize;
    let at = 8 + n + off;
    bytes[at..at + 4].copy_from_slice(&1.5f32.to_le_bytes());
    std::fs::write(&wpath, bytes).unwrap();

    let out = vidflow()
        .args(["model", "check"])
        .arg(&dst)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "corrupted case passed:\n{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn check_missing_folder_fails_naming_it() {
    let out = vidflow()
        .args(["model", "check", "/nonexistent/case_dir"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("/nonexistent/case_dir"), "{stdout}");
}

#[test]
fn info_reads_an_exported_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    let st = vidflow()
        .args(["model", "export-tiny"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    let out = vidflow()
        .args(["model", "info"])
        .arg(&dir)
        .args(["--width", "96", "--height", "64", "--frames", "9"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "transformer",
        "vae",
        "text_encoder",
        "F32",
        "VRAM estimate",
        "latent 2x2x3x8",
        "total",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
}

#[test]
fn sample_same_seed_same_bytes_and_labelled_untrained() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |out: &Path, seed: &str| {
        let o = vidflow()
            .args(["model", "sample", "--steps", "3", "--seed", seed, "--out"])
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(s.contains("UNTRAINED"), "{s}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("UNTRAINED"));
        s.split("sha256 ")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap()
            .to_string()
    };
    let a = run(&tmp.path().join("a"), "7");
    let b = run(&tmp.path().join("b"), "7");
    let c = run(&tmp.path().join("c"), "8");
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(std::fs::read_dir(tmp.path().join("a")).unwrap().count(), 9);
}
