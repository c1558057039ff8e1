//! MP4 output end to end: synthetic frames → encode_mp4 → OutputStore (a
//! tempdir) → ffprobe. ffprobe is required: the tests fail (never skip) when
//! it is missing, naming scripts/setup-system.sh.

use std::process::Command;

use vidflow_connectors::{encode_mp4, output_key, NaiveDate, OutputError, OutputStore};

/// A moving pattern: diagonal colour gradient scrolling with a bright square
/// travelling across, so consecutive frames differ (P frames carry motion).
fn moving_pattern(width: u32, height: u32, frames: u32) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let mut rgb = Vec::with_capacity(frames as usize * w * h * 3);
    for f in 0..frames as usize {
        let sq_x = (f * 5) % w.saturating_sub(16).max(1);
        let sq_y = (f * 3) % h.saturating_sub(16).max(1);
        for y in 0..h {
            for x in 0..w {
                let in_square = (sq_x..sq_x + 16).contains(&x) && (sq_y..sq_y + 16).contains(&y);
                if in_square {
                    rgb.extend_from_slice(&[250, 250, 40]);
                } else {
                    rgb.push(((x + 4 * f) * 255 / w) as u8);
                    rgb.push(((y + 2 * f) * 255 / h) as u8);
                    rgb.push(((x + y) * 128 / (w + h) + 64) as u8);
                }
            }
        }
    }
    rgb
}

fn ffprobe(file: &std::path::Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,pix_fmt,width,height,r_frame_rate,nb_frames,nb_read_frames",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run ffprobe ({e}): install it with `bash scripts/setup-system.sh` \
                 (Debian package ffmpeg); these tests never skip"
            )
        });
    assert!(
        out.status.success(),
        "ffprobe failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "ffprobe reported errors: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    println!("ffprobe {}:\n{text}", file.display());
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["streams"][0].clone()
}

fn check_case(width: u32, height: u32, frames: u32, fps: f64, r_frame_rate: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let store = OutputStore::local(dir.path().join("out")).unwrap();
    let rgb = moving_pattern(width, height, frames);
    let mp4 = encode_mp4(&rgb, width, height, frames, fps).unwrap();

    let date = NaiveDate::from_ymd_opt(2026, 1, 31).unwrap();
    let key = output_key("tenant-a", date, &format!("job_{width}x{height}")).unwrap();
    assert!(!store.exists_blocking(&key).unwrap());
    let stored = store.put_atomic_blocking(&key, mp4.clone()).unwrap();
    assert!(store.exists_blocking(&key).unwrap());
    assert_eq!(store.get_blocking(&key).unwrap(), mp4);

    let file = store.local_path(&key).unwrap();
    assert!(file.ends_with(format!("tenant-a/2026-01-31/job_{width}x{height}.mp4")));
    let on_disk = std::fs::read(&file).unwrap();
    assert_eq!(stored.key, key);
    assert_eq!(stored.size, on_disk.len() as u64);
    assert_eq!(
        stored.sha256_hex,
        vidflow_connectors::store::sha256_hex(&on_disk)
    );
    assert_eq!(stored.sha256_hex.len(), 64);
    // No staging file is left next to the published one.
    let siblings: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(siblings.len(), 1, "{siblings:?}");

    let s = ffprobe(&file);
    assert_eq!(s["codec_name"], "h264", "{s}");
    assert_eq!(s["pix_fmt"], "yuv420p", "{s}");
    assert_eq!(s["width"], width, "{s}");
    assert_eq!(s["height"], height, "{s}");
    if let Some(r_frame_rate) = r_frame_rate {
        assert_eq!(s["r_frame_rate"], r_frame_rate, "{s}");
    }
    assert_eq!(s["nb_frames"], frames.to_string(), "{s}");
    assert_eq!(s["nb_read_frames"], frames.to_string(), "{s}");

    // Deterministic: the same input gives the same bytes.
    assert_eq!(encode_mp4(&rgb, width, height, frames, fps).unwrap(), mp4);
}

#[test]
fn mp4_17_frames_96x64_24fps() {
    check_case(96, 64, 17, 24.0, Some("24/1"));
}

#[test]
fn mp4_9_frames_128x96_25fps() {
    check_case(128, 96, 9, 25.0, Some("25/1"));
}

#[test]
fn mp4_33_frames_160x96_30fps() {
    check_case(160, 96, 33, 30.0, Some("30/1"));
}

#[test]
fn mp4_ntsc_rate_10_frames_64x32() {
    check_case(64, 32, 10, 30000.0 / 1001.0, Some("30000/1001"));
}

/// One frame: the sample lasts one tick (see `encode_mp4`), so the frame
/// rate is not checked; the frame count, codec and size are.
#[test]
fn mp4_single_frame() {
    check_case(32, 32, 1, 24.0, None);
}

#[test]
fn invalid_inputs_name_their_field() {
    let rgb = moving_pattern(32, 32, 2);
    let field = |r: Result<Vec<u8>, OutputError>| {
        let e = r.unwrap_err();
        let f = e
            .field()
            .unwrap_or_else(|| panic!("not an Invalid error: {e}"));
        assert!(e.to_string().contains(f), "{e}");
        f
    };
    assert_eq!(field(encode_mp4(&rgb, 31, 32, 2, 24.0)), "width");
    assert_eq!(field(encode_mp4(&rgb, 32, 33, 2, 24.0)), "height");
    assert_eq!(field(encode_mp4(&rgb, 32, 32, 0, 24.0)), "frames");
    assert_eq!(field(encode_mp4(&rgb, 32, 32, 2, 0.0)), "fps");
    assert_eq!(field(encode_mp4(&rgb, 32, 32, 2, f64::NAN)), "fps");
    assert_eq!(field(encode_mp4(&rgb[1..], 32, 32, 2, 24.0)), "rgb");
    assert_eq!(field(encode_mp4(&rgb, 32, 32, 3, 24.0)), "rgb");
}

#[test]
fn key_validation() {
    let date = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
    assert_eq!(
        output_key("t1", date, "j1").unwrap().as_ref(),
        "t1/2026-12-01/j1.mp4"
    );
    let long = "x".repeat(65);
    for bad in ["../x", "a/b", ".", "", "ünï", long.as_str()] {
        assert_eq!(
            output_key(bad, date, "j").unwrap_err().field(),
            Some("tenant"),
            "{bad:?}"
        );
        assert_eq!(
            output_key("t", date, bad).unwrap_err().field(),
            Some("job_id"),
            "{bad:?}"
        );
    }
}

#[test]
fn missing_object() {
    let dir = tempfile::tempdir().unwrap();
    let store = OutputStore::local(dir.path()).unwrap();
    let key = output_key("t", NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), "nope").unwrap();
    assert!(!store.exists_blocking(&key).unwrap());
    assert!(store.get_blocking(&key).unwrap_err().is_not_found());
}

#[tokio::test]
async fn async_api_and_blocking_guard() {
    let dir = tempfile::tempdir().unwrap();
    let store = OutputStore::local(dir.path()).unwrap();
    let key = output_key("t", NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), "a").unwrap();
    let stored = store.put_atomic(&key, b"hello".to_vec()).await.unwrap();
    assert_eq!(stored.size, 5);
    assert_eq!(
        stored.sha256_hex,
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert!(store.exists(&key).await.unwrap());
    assert_eq!(store.get(&key).await.unwrap(), b"hello");
    // Overwrite replaces the object.
    store.put_atomic(&key, b"bye".to_vec()).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), b"bye");
    // Blocking calls inside a runtime are refused, not a panic.
    assert!(matches!(
        store.exists_blocking(&key),
        Err(OutputError::Runtime(_))
    ));
}
