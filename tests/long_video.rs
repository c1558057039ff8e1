//! A 60 s 480p video through the real `vidflow serve` (built-in tiny
//! model): generated as a chain of segments, killed mid-chain and resumed
//! at the segment where it stopped, its MP4 byte-identical to an
//! uninterrupted run's with all 1441 frames (ffprobe), billed once for the
//! delivered seconds, and the process's peak memory about that of one
//! segment, not of the whole video.

mod support;

use std::time::Duration;

use support::*;
use vidflow_connectors::amqp;
use vidflow_operators::event::JobEvent;

/// 60 s at 24 fps; the default `[chain]` cuts it into 6 segments of at most
/// 257 frames sharing 17.
const FRAMES: u32 = 1441;
const STEPS: u32 = 2;
const SEGMENTS: usize = 6;

fn long_spec(job_id: &str, frames: u32) -> vidflow_operators::JobSpec {
    vidflow_operators::JobSpec::from_json(&format!(
        r#"{{"job_id":"{job_id}","tenant":"acme","tier":"standard","kind":"t2v",
            "prompt":"a slow walk along a long beach","resolution":"480p","frames":{frames},
            "mode":"realtime","steps":{STEPS},"guidance":1.0,"seed":11}}"#
    ))
    .unwrap()
}

fn completed(
    all: &[(std::time::Instant, vidflow_operators::event::EventEnvelope)],
    id: &str,
) -> bool {
    all.iter()
        .any(|(_, e)| matches!(&e.event, JobEvent::Completed { job_id, .. } if job_id == id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixty_second_video_killed_mid_chain_resumes_to_the_same_bytes() {
    // Long enough for a chain on two CPU cores.
    let setup = Setup::new(
        "long",
        "max_batch = 1\ncheckpoint_every = 0\n[engine.timeouts]\nstandard = 3600.0\n",
    );
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();

    // One pass (257 frames, a single segment): the memory a chain's
    // segment takes, in a process of its own.
    let one = setup.start("serve-0");
    amqp::publish_job(&ch, &topo, &long_spec("one-pass", 257), &amqp_user())
        .await
        .unwrap();
    events
        .until(Duration::from_secs(600), "the one-pass job", |all| {
            completed(all, "one-pass")
        })
        .await;
    let one_pass_rss = one.peak_rss();
    one.terminate();

    // Killed in the first step of segment 3 (steps 1-6 are segments 0-2).
    let mut first = setup.start_with_env("serve-1", &[("VIDFLOW_FAULT", "mid_step@7")]);
    amqp::publish_job(&ch, &topo, &long_spec("long-a", FRAMES), &amqp_user())
        .await
        .unwrap();
    wait_exit(&mut first, Duration::from_secs(900));
    let chain = setup.out.join("checkpoints/acme/long-a/chain");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(chain.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["done"], 3, "segments 0-2 stored before the kill");

    // Restarted: the redelivered job resumes at segment 3; then the same
    // video under another id, uninterrupted.
    let second = setup.start("serve-2");
    events
        .until(Duration::from_secs(900), "the resumed job", |all| {
            completed(all, "long-a")
        })
        .await;
    let resumed_rss = second.peak_rss();
    amqp::publish_job(&ch, &topo, &long_spec("long-b", FRAMES), &amqp_user())
        .await
        .unwrap();
    events
        .until(Duration::from_secs(900), "the uninterrupted job", |all| {
            completed(all, "long-b")
        })
        .await;
    let peak_rss = second.peak_rss();
    let log = second.log_text();
    second.terminate();
    assert!(log.contains("chain resumed"), "{log}");
    assert!(log.contains("segment=3"), "{log}");
    assert!(!chain.exists() || std::fs::read_dir(&chain).unwrap().next().is_none());

    let video = |id: &str| {
        let name = format!("{id}.mp4");
        setup
            .outputs()
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n == name.as_str()))
            .unwrap_or_else(|| panic!("{id}'s video"))
    };
    let (a, b) = (video("long-a"), video("long-b"));
    let (a_bytes, b_bytes) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(a_bytes == b_bytes, "resumed and uninterrupted MP4s differ");
    assert_eq!(
        ffprobe_stream(&a, "codec_name,width,height,nb_read_frames"),
        format!("h264,832,480,{FRAMES}")
    );

    // Progress counted the whole chain, in order.
    let steps: Vec<(usize, usize)> = events
        .all
        .iter()
        .filter_map(|(_, e)| match &e.event {
            JobEvent::Progress {
                job_id,
                step,
                total,
                stage: vidflow_operators::event::Stage::Denoise,
                ..
            } if job_id == "long-b" => Some((*step, *total)),
            _ => None,
        })
        .collect();
    let total = SEGMENTS * STEPS as usize;
    let want: Vec<(usize, usize)> = (1..=total).map(|s| (s, total)).collect();
    // The event sink's heartbeat may repeat a step; never go back.
    let mut dedup = steps.clone();
    dedup.dedup();
    assert_eq!(dedup, want, "{steps:?}");

    // One record and one charge per job: 1441 frames at 24 fps.
    for id in ["long-a", "long-b"] {
        let rec = setup.out.join(format!("jobs/acme/{id}.json"));
        let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(rec).unwrap()).unwrap();
        assert_eq!(rec["status"], "completed", "{rec}");
        assert_eq!(rec["billing"]["billed_ms"], 60042, "{rec}");
        println!(
            "{id}: recorded peak RSS {} bytes",
            rec["metrics"]["peak_rss_bytes"]
        );
    }
    let billed = events
        .all
        .iter()
        .filter(
            |(_, e)| matches!(&e.event, JobEvent::Completed { job_id, .. } if job_id == "long-a"),
        )
        .count();
    assert_eq!(billed, 1, "completed once");

    // Memory: one segment's, not the video's. The whole 60 s as RGB8
    // alone would be 832x480x3x1441 = 1.7 GB on top of a pass.
    let video_bytes = (832 * 480 * 3 * FRAMES) as u64;
    println!(
        "peak RSS: one pass (257 frames) {:.0} MiB; 60 s chain resumed {:.0} MiB, then a whole chain {:.0} MiB; MP4 {} bytes",
        one_pass_rss as f64 / 1048576.0,
        resumed_rss as f64 / 1048576.0,
        peak_rss as f64 / 1048576.0,
        a_bytes.len()
    );
    assert!(
        peak_rss < one_pass_rss + video_bytes / 4,
        "a 60 s chain peaked at {peak_rss} bytes, one pass at {one_pass_rss}"
    );
}
