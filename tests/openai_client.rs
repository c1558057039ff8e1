//! A client written for the `/v1/videos` convention works unchanged: the
//! `openai` Python package (pinned in scripts/setup-python.sh) creates,
//! polls, lists, downloads and deletes videos on a real `vidflow serve`,
//! including an image-to-video job sent as a multipart file.

mod support;

use std::process::Command;

use support::*;

fn python() -> String {
    let p = std::env::var("VIDFLOW_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv-test/bin/python").into());
    assert!(
        std::path::Path::new(&p).exists(),
        "no Python with the openai package at {p}: run `bash scripts/setup-python.sh` (scripts/test.sh does)"
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_drives_the_http_api() {
    let setup = Setup::new("openai", "max_batch = 2");
    let serve = setup.start("serve");
    let base = serve.http.clone().expect("HTTP address");
    let first = setup.tmp.path().join("first.png");
    image::RgbImage::from_fn(256, 256, |x, y| image::Rgb([x as u8, y as u8, 200]))
        .save(&first)
        .unwrap();
    let out = tokio::task::spawn_blocking({
        let (base, dir, first) = (base.clone(), setup.tmp.path().to_path_buf(), first.clone());
        move || {
            Command::new(python())
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/py/openai_videos.py"
                ))
                .arg(&base)
                .arg(KEY_A)
                .arg(&dir)
                .arg(&first)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the openai client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        serve.log_text()
    );
    let seen: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    println!("openai client saw: {seen}");
    let id = seen["created"]["id"].as_str().unwrap();
    assert_eq!(seen["created"]["object"], "video");
    assert_eq!(seen["polled"]["status"], "completed");
    assert_eq!(seen["polled"]["progress"], 100);
    assert_eq!(seen["polled"]["size"], "256x256");
    assert_eq!(seen["polled"]["model"], "ltx-tiny");
    assert!(seen["listed"].as_array().unwrap().iter().any(|v| v == id));
    let mp4 = std::path::Path::new(seen["downloaded"].as_str().unwrap());
    assert_eq!(
        ffprobe_stream(mp4, "codec_name,width,height,nb_read_frames"),
        "h264,256,256,25"
    );
    assert!(seen["thumbnail_bytes"].as_u64().unwrap() > 100);
    assert_eq!(seen["i2v"]["status"], "completed", "{seen}");
    assert_eq!(seen["deleted"]["deleted"], true);
    assert_eq!(seen["deleted"]["object"], "video.deleted");
    assert_eq!(seen["missing"], 404);
    assert_eq!(seen["bad_key"], 401);
    serve.terminate();
}
