//! The embedded pipeline end to end: real timely graph, tiny model, MP4 on a
//! local object store checked with ffprobe.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vidflow_dataflow::{run_jobs, Engine, EngineConfig, EventSink, JobEvent, JobResult};
use vidflow_operators::{AdmissionConfig, JobSpec};

fn spec(job_id: &str, resolution: &str, frames: u32, seed: u64, steps: u32) -> JobSpec {
    serde_json::from_value(serde_json::json!({
        "job_id": job_id, "tenant": "acme", "tier": "standard", "kind": "t2v",
        "prompt": format!("test prompt {seed}"), "resolution": resolution, "frames": frames,
        "fps": 24.0, "mode": "realtime", "steps": steps, "seed": seed
    }))
    .unwrap()
}

fn engine(out: &Path, events: EventSink) -> Arc<Engine> {
    Engine::new(
        &EngineConfig {
            scheduling: Default::default(),
            admission: AdmissionConfig::builtin_tiny(),
            out_dir: out.to_path_buf(),
            max_batch: 8,
            workers: 1,
            checkpoint_every: 0,
            checkpoint_every_tier: Default::default(),
            safety: vidflow_operators::safety_record::SafetyConfig::in_repo(std::path::Path::new(
                concat!(env!("CARGO_MANIFEST_DIR"), "/.."),
            )),
        },
        events,
    )
    .unwrap()
}

fn ffprobe(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
        ])
        .arg("stream=codec_name,pix_fmt,width,height,r_frame_rate,nb_read_frames")
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe not found: run `bash scripts/setup-system.sh` (installs ffmpeg)");
    assert!(out.status.success(), "ffprobe failed on {}", path.display());
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["streams"][0].clone()
}

#[test]
fn generates_a_playable_mp4() {
    let tmp = tempfile::tempdir().unwrap();
    let (tx, rx) = channel();
    let e = engine(tmp.path(), EventSink::new(tx));
    let res = run_jobs(e, 1, vec![spec("job-e2e-1", "320x256", 17, 5, 3)]).unwrap();
    assert_eq!(res.len(), 1);
    let r = &res[0];
    assert_eq!(r.status, "completed", "{r:?}");
    assert!(r.untrained);
    let key = r.key.as_ref().unwrap();
    assert!(
        key.starts_with("acme/") && key.ends_with("/job-e2e-1.mp4"),
        "{key}"
    );
    let path = tmp.path().join(key);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, r.size.unwrap());
    let s = ffprobe(&path);
    assert_eq!(s["codec_name"], "h264");
    assert_eq!(s["pix_fmt"], "yuv420p");
    assert_eq!(s["width"], 320);
    assert_eq!(s["height"], 256);
    assert_eq!(s["r_frame_rate"], "24/1");
    assert_eq!(s["nb_read_frames"], "17");
    let events: Vec<JobEvent> = rx.try_iter().collect();
    assert!(
        matches!(events.first(), Some(JobEvent::Accepted { .. })),
        "{events:?}"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, JobEvent::Completed { .. })));
}

/// 8 jobs at once, two latent shapes: denoising ran batched, and every
/// output is byte-identical to the same job run alone. Jobs reach the
/// denoiser one by one (each through admission, the prompt check and
/// encoding first), so each needs enough steps to be still running when the
/// next arrives: with 4 steps, in a full-suite run after the CPU
/// activations got faster (gpu/src/kernels/act.rs), every job ran alone.
#[test]
fn batched_jobs_match_solo_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let specs: Vec<JobSpec> = (0..8)
        .map(|i| {
            let res = if i % 2 == 0 { "256x256" } else { "320x256" };
            spec(&format!("job-b{i}"), res, 9, 100 + i as u64, 24)
        })
        .collect();
    let batched = run_jobs(
        engine(&tmp.path().join("batched"), EventSink::discard()),
        2,
        specs.clone(),
    )
    .unwrap();
    assert_eq!(batched.len(), 8);
    let max_batch = batched
        .iter()
        .flat_map(|r| r.batch_sizes.iter().copied())
        .max()
        .unwrap_or(0);
    assert!(
        max_batch > 1,
        "expected batched denoising, batch sizes {:?}",
        batched.iter().map(|r| &r.batch_sizes).collect::<Vec<_>>()
    );
    let by_id: HashMap<&str, &JobResult> = batched.iter().map(|r| (r.job_id.as_str(), r)).collect();
    for s in specs {
        let id = s.job_id.clone().unwrap();
        let solo = run_jobs(
            engine(&tmp.path().join(format!("solo-{id}")), EventSink::discard()),
            1,
            vec![s],
        )
        .unwrap();
        assert_eq!(solo[0].batch_sizes.iter().max(), Some(&1));
        assert_eq!(
            solo[0].sha256,
            by_id[id.as_str()].sha256,
            "job {id} differs batched vs alone"
        );
    }
}

#[test]
fn progress_every_two_seconds_and_cancellation_within_a_step() {
    let tmp = tempfile::tempdir().unwrap();
    let (tx, rx) = channel();
    let e = engine(tmp.path(), EventSink::new(tx));
    // Long enough to run > 5 s on 2 cores with the tiny model.
    let long = spec("job-long", "480p", 49, 9, 150);
    let cancel_me = spec("job-cancel", "256x256", 9, 10, 200);
    let e2 = e.clone();
    let handle = std::thread::spawn(move || run_jobs(e2, 1, vec![long, cancel_me]).unwrap());
    let mut times: HashMap<String, Vec<Instant>> = HashMap::new();
    let mut cancel_requested_at: Option<usize> = None;
    let mut cancelled_at = None;
    let start = Instant::now();
    let mut done = 0;
    while done < 2 {
        let ev = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("pipeline stalled");
        if let JobEvent::Progress { job_id, step, .. } = &ev {
            times
                .entry(job_id.clone())
                .or_default()
                .push(Instant::now());
            if job_id == "job-cancel" && *step >= 3 && cancel_requested_at.is_none() {
                e.cancel(&vidflow_operators::JobKey::new("acme", "job-cancel"));
                cancel_requested_at = Some(*step);
            }
        }
        if let JobEvent::Cancelled { job_id, step } = &ev {
            assert_eq!(job_id, "job-cancel");
            cancelled_at = Some(*step);
        }
        if ev.is_terminal() {
            done += 1;
        }
    }
    let results = handle.join().unwrap();
    let elapsed = start.elapsed();
    let long_times = &times["job-long"];
    let max_gap = long_times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        elapsed > Duration::from_secs(5),
        "job must run > 5 s to test heartbeats ({elapsed:?})"
    );
    assert!(
        max_gap <= Duration::from_secs(2),
        "progress gap {max_gap:?}"
    );
    let req = cancel_requested_at.unwrap();
    let at = cancelled_at.expect("cancelled event");
    assert!(
        at <= req + 1,
        "cancel requested at step {req}, stopped at {at}"
    );
    let c = results.iter().find(|r| r.job_id == "job-cancel").unwrap();
    assert_eq!(c.status, "cancelled");
    assert_eq!(
        results
            .iter()
            .find(|r| r.job_id == "job-long")
            .unwrap()
            .status,
        "completed"
    );
}

#[test]
fn invalid_specs_fail_with_their_error_and_others_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let (tx, rx) = channel();
    let bad_frames = spec("job-bad-frames", "256x256", 10, 1, 2);
    let mut bad_tenant = spec("job-bad-tenant", "256x256", 9, 1, 2);
    bad_tenant.tenant = "../etc".into();
    let mut bad_model = spec("job-bad-model", "256x256", 9, 1, 2);
    bad_model.model = Some("nope".into());
    let good = spec("job-good", "256x256", 9, 1, 2);
    let res = run_jobs(
        engine(tmp.path(), EventSink::new(tx)),
        1,
        vec![bad_frames, bad_tenant, bad_model, good],
    )
    .unwrap();
    let by: HashMap<String, JobResult> = res.into_iter().map(|r| (r.job_id.clone(), r)).collect();
    assert_eq!(by["job-good"].status, "completed");
    for (id, needle) in [
        ("job-bad-frames", "frames"),
        ("job-bad-tenant", "tenant"),
        ("job-bad-model", "nope"),
    ] {
        let r = &by[id];
        assert_eq!(r.status, "failed", "{id}");
        assert!(
            r.error.as_ref().unwrap().contains(needle),
            "{id}: {:?}",
            r.error
        );
    }
    let failed = rx
        .try_iter()
        .filter(|e| matches!(e, JobEvent::Failed { .. }))
        .count();
    assert_eq!(failed, 3);
}

/// Image-to-video with the first frame named by an object-store key; a
/// missing key fails naming `image`.
#[test]
fn i2v_reads_the_first_frame_from_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, 128])
    });
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    std::fs::create_dir_all(tmp.path().join("acme/inputs")).unwrap();
    std::fs::write(tmp.path().join("acme/inputs/first.png"), &png).unwrap();
    let mk = |id: &str, key: &str| -> JobSpec {
        serde_json::from_value(serde_json::json!({
            "job_id": id, "tenant": "acme", "tier": "standard", "kind": "i2v",
            "prompt": "waves", "resolution": "256x256", "frames": 9, "steps": 2,
            "image": {"key": key}
        }))
        .unwrap()
    };
    let res = run_jobs(
        engine(tmp.path(), EventSink::discard()),
        1,
        vec![
            mk("job-i2v", "acme/inputs/first.png"),
            mk("job-i2v-missing", "acme/inputs/none.png"),
        ],
    )
    .unwrap();
    let by: HashMap<String, JobResult> = res.into_iter().map(|r| (r.job_id.clone(), r)).collect();
    assert_eq!(
        by["job-i2v"].status, "completed",
        "{:?}",
        by["job-i2v"].error
    );
    let miss = &by["job-i2v-missing"];
    assert_eq!(miss.status, "failed");
    assert!(
        miss.error.as_ref().unwrap().contains("image"),
        "{:?}",
        miss.error
    );
}
