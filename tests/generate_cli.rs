//! `vidflow generate` through the real binary: MP4 written, path and sha256
//! printed, the model's note shown (demo or untrained); the default demo
//! model draws what the prompt asks for, judged from the decoded MP4; bad
//! input is a clear error.

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
        .args([
            "--model",
            "ltx-tiny",
            "--steps",
            "2",
            "-w",
            "2",
            "--out-dir",
        ])
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

/// Decodes an MP4 to RGB8 frames with ffmpeg (installed by
/// scripts/setup-system.sh for the tests).
fn decode_rgb(path: &std::path::Path) -> Vec<u8> {
    let o = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

#[test]
fn the_default_demo_model_draws_the_prompt() {
    use vidflow_gpu::demo::{self, judge};
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("clip.mp4");
    let o = vidflow()
        .args([
            "generate",
            "a red circle moving left on a black background",
            "--seed",
            "1",
        ])
        .arg("--out-dir")
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
    assert!(
        stdout.contains("demo model") && !stdout.contains("UNTRAINED"),
        "{stdout}"
    );
    let rgb = decode_rgb(&out);
    let world = demo::World::load(demo::default_dir()).unwrap();
    // Native size: 96x96, 17 frames.
    assert_eq!(rgb.len(), 17 * 96 * 96 * 3);
    let seen = judge::judge(
        &world,
        judge::Frames {
            width: 96,
            height: 96,
            frames: 17,
            rgb: &rgb,
        },
    );
    // The shipped model draws the asked colour on the asked background
    // (100% of held-out captions, docs/BENCHMARKS.md); its shapes and motions
    // are not yet reliable enough to assert on one clip.
    let o = &seen.objects[0];
    assert_eq!(
        (seen.background.as_str(), o.colour.as_str()),
        ("black", "red"),
        "{seen:?}"
    );
}
