//! Wan 2.1 jobs through the real `vidflow serve` (built-in tiny Wan, real
//! RabbitMQ): a text-to-video job with a LoRA adapter from the tenant's
//! store and an image-to-video job complete as H.264 at 16 fps, each
//! recorded and billed once for its seconds at Wan's frame rate, the same
//! path LTX jobs take.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use candle_core::{Device, Tensor};
use support::*;
use vidflow_connectors::amqp;
use vidflow_operators::event::JobEvent;

fn configs(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/configs/modes.toml"),
        dir.join("modes.toml"),
    )
    .unwrap();
    std::fs::write(
        dir.join("models.toml"),
        "[[model]]\nid = \"wan-tiny\"\npath = \"builtin:wan-tiny\"\narchitecture = \"wan\"\nuntrained = true\n\n\
         [[model]]\nid = \"wan-tiny-i2v\"\npath = \"builtin:wan-tiny-i2v\"\narchitecture = \"wan\"\nuntrained = true\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_jobs_are_served_recorded_and_billed_like_ltx_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("configs");
    configs(&dir);
    let setup = Setup::new(
        "wan",
        &format!("configs_dir = \"{}\"\nmax_batch = 2\n", dir.display()),
    );
    // The tenant's adapter and first frame, in the store jobs read from.
    let dev = Device::Cpu;
    let mut t = HashMap::new();
    let r = |shape: &[usize]| (Tensor::randn(0f32, 1f32, shape, &dev).unwrap() * 0.3).unwrap();
    t.insert("blocks.0.attn1.to_q.lora_A.weight".to_string(), r(&[4, 24]));
    t.insert("blocks.0.attn1.to_q.lora_B.weight".to_string(), r(&[24, 4]));
    std::fs::create_dir_all(setup.out.join("acme/loras")).unwrap();
    candle_core::safetensors::save(&t, setup.out.join("acme/loras/grain.safetensors")).unwrap();
    std::fs::create_dir_all(setup.out.join("acme/inputs")).unwrap();
    image::RgbImage::from_fn(256, 256, |x, y| image::Rgb([x as u8, y as u8, 90]))
        .save(setup.out.join("acme/inputs/first.png"))
        .unwrap();

    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let serve = setup.start("serve");
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let t2v: vidflow_operators::JobSpec = serde_json::from_value(serde_json::json!({
        "job_id": "wan-t2v", "tenant": "acme", "tier": "standard", "kind": "t2v",
        "prompt": "a kite over dunes", "resolution": "256x256", "frames": 17, "steps": 2,
        "model": "wan-tiny", "lora": {"key": "acme/loras/grain.safetensors", "strength": 0.7}
    }))
    .unwrap();
    let i2v: vidflow_operators::JobSpec = serde_json::from_value(serde_json::json!({
        "job_id": "wan-i2v", "tenant": "acme", "tier": "standard", "kind": "i2v",
        "prompt": "the kite climbs", "resolution": "256x256", "frames": 9, "steps": 2,
        "model": "wan-tiny-i2v", "image": {"key": "acme/inputs/first.png"}
    }))
    .unwrap();
    for s in [&t2v, &i2v] {
        amqp::publish_job(&ch, &topo, s, &amqp_user())
            .await
            .unwrap();
    }
    events
        .until(Duration::from_secs(600), "both Wan jobs completed", |all| {
            all.iter()
                .filter(|(_, e)| matches!(e.event, JobEvent::Completed { .. }))
                .count()
                >= 2
        })
        .await;
    serve.terminate();
    assert_eq!(events.count(|e| matches!(e, JobEvent::Failed { .. })), 0);
    for (id, frames) in [("wan-t2v", 17u32), ("wan-i2v", 9)] {
        let rec: serde_json::Value = serde_json::from_slice(
            &std::fs::read(setup.out.join(format!("jobs/acme/{id}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(rec["status"], "completed", "{rec}");
        assert!(rec["untrained"].as_bool().unwrap(), "{rec}");
        assert_eq!(
            rec["billing"]["billed_ms"],
            vidflow_operators::billing::billed_ms(frames, 16.0),
            "{rec}"
        );
        let name = format!("{id}.mp4");
        let mp4 = setup
            .outputs()
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n == name.as_str()))
            .unwrap();
        assert_eq!(
            ffprobe_stream(&mp4, "codec_name,width,height,r_frame_rate,nb_read_frames"),
            format!("h264,256,256,16/1,{frames}")
        );
    }
    assert_eq!(
        events
            .all
            .iter()
            .filter(|(_, e)| matches!(e.event, JobEvent::Completed { .. }))
            .count(),
        2,
        "completed once each"
    );
}
