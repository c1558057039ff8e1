//! `vidflow generate` through the real binary: MP4 written, path and sha256
//! printed, the untrained-model note shown; bad input is a clear error.

use std::process::Command;

use sha2::{Digest, Sha256};

fn vidflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vidflow"))
}

#[test]
fn generate_writes_mp4_and_reports_sha256() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("clip.mp4");
    let o = vidflow()
        .args([
            "generate",
            "a lighthouse at dusk",
            "--resolution",
            "256x256",
            "--seconds",
            "0.4",
            "--seed",
            "3",
        ])
        .args(["--steps", "2", "-w", "2", "--out-dir"])
        .arg(tmp.path().join("store"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("UNTRAINED"), "{stdout}");
    let bytes = std::fs::read(&out).unwrap();
    let sha: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(stdout.contains(&format!("sha256 {sha}")), "{stdout}");
}

#[test]
fn generate_rejects_bad_sizes_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let o = vidflow()
        .args(["generate", "x", "--resolution", "1000x512", "--out-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("resolution") && err.contains("992 or 1024"),
        "{err}"
    );
}
