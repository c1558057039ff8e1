//! The Wan 2.1 family through the real binary: `vidflow model list` shows
//! the registry with each model's rules; `vidflow generate --model
//! wan-tiny` (text-to-video) and `--model wan-tiny-i2v --image` (image-to-
//! video) write H.264 MP4s at Wan's 16 fps, labelled untrained; a job that
//! breaks Wan's rules is refused naming the field.

use std::path::Path;
use std::process::Command;

fn vidflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vidflow"))
}

fn ffprobe(path: &Path) -> String {
    let o = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,r_frame_rate,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe not found: run `bash scripts/setup-system.sh` (installs ffmpeg)");
    assert!(o.status.success(), "ffprobe failed on {}", path.display());
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn generate(tmp: &Path, args: &[&str]) -> (std::process::Output, std::path::PathBuf) {
    let out = tmp.join("clip.mp4");
    let o = vidflow()
        .arg("generate")
        .args(args)
        .args(["--steps", "2", "--seed", "5", "--out-dir"])
        .arg(tmp.join("store"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    (o, out)
}

#[test]
fn model_list_shows_each_family_with_its_rules() {
    let o = vidflow().args(["model", "list"]).output().unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{s}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let block = |id: &str| -> String {
        let start = s
            .find(&format!("{id}  ("))
            .unwrap_or_else(|| panic!("{id} in {s}"));
        s[start..].lines().take(5).collect::<Vec<_>>().join("\n")
    };
    let wan = block("wan-tiny");
    assert!(wan.contains("architecture wan"), "{wan}");
    assert!(
        wan.contains("sampler Unipc") && wan.contains("kinds t2v"),
        "{wan}"
    );
    assert!(
        wan.contains("multiple of 16") && wan.contains("4n+1 up to 81"),
        "{wan}"
    );
    assert!(wan.contains("16 fps") && wan.contains("UNTRAINED"), "{wan}");
    let i2v = block("wan-tiny-i2v");
    assert!(i2v.contains("kinds i2v"), "{i2v}");
    let ltx = block("ltx-tiny");
    assert!(
        ltx.contains("architecture ltx") && ltx.contains("sampler FlowEuler"),
        "{ltx}"
    );
    assert!(
        ltx.contains("multiple of 32") && ltx.contains("8n+1"),
        "{ltx}"
    );
    assert!(s.contains("ltx-demo  (default)"), "{s}");
}

#[test]
fn wan_tiny_text_to_video_is_h264_at_16_fps() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, out) = generate(
        tmp.path(),
        &[
            "a paper boat on a pond",
            "--model",
            "wan-tiny",
            "--resolution",
            "256x256",
            "--seconds",
            "1",
        ],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("UNTRAINED"), "{stdout}");
    // 1 s at 16 fps: 16 frames, rounded up to Wan's 4n+1.
    assert_eq!(ffprobe(&out), "h264,256,256,16/1,17");
}

#[test]
fn wan_tiny_image_to_video_is_h264_at_16_fps() {
    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("first.png");
    let img = image::RgbImage::from_fn(256, 256, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) / 2 % 256) as u8])
    });
    img.save(&png).unwrap();
    let (o, out) = generate(
        tmp.path(),
        &[
            "the boat drifts to the left",
            "--model",
            "wan-tiny-i2v",
            "--image",
            png.to_str().unwrap(),
            "--resolution",
            "256x256",
            "--seconds",
            "0.5",
        ],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("UNTRAINED"), "{stdout}");
    assert_eq!(ffprobe(&out), "h264,256,256,16/1,9");
}

#[test]
fn wan_jobs_that_break_its_rules_are_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, field, says) in [
        (
            &["x", "--model", "wan-tiny", "--resolution", "264x256"][..],
            "resolution",
            "multiple of 16",
        ),
        (
            &[
                "x",
                "--model",
                "wan-tiny",
                "--resolution",
                "256x256",
                "--fps",
                "24",
            ][..],
            "fps",
            "16 fps only",
        ),
        (
            &[
                "x",
                "--model",
                "wan-tiny",
                "--resolution",
                "256x256",
                "--seconds",
                "10",
            ][..],
            "seconds",
            "81 frames",
        ),
        (
            &["x", "--model", "wan-tiny-i2v", "--resolution", "256x256"][..],
            "kind",
            "serves i2v",
        ),
    ] {
        let (o, _) = generate(tmp.path(), args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(err.contains(field) && err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn a_wan_checkpoint_directory_generates_with_its_architecture_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wan-ckpt");
    vidflow_gpu::wan::tiny::write_checkpoint(&dir, false).unwrap();
    let (o, out) = generate(
        tmp.path(),
        &[
            "a kite over dunes",
            "--model-dir",
            dir.to_str().unwrap(),
            "--architecture",
            "wan",
            "--resolution",
            "256x256",
            "--seconds",
            "0.5",
        ],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(ffprobe(&out), "h264,256,256,16/1,9");
}
