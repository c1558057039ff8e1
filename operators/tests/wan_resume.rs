//! Checkpoints of Wan jobs (built-in tiny Wan): a job stopped after a
//! checkpoint and resumed from it in a fresh model gives the same video,
//! byte for byte, as the uninterrupted run (UniPC's history travels in the
//! checkpoint), with or without a LoRA adapter; a checkpoint taken under
//! one adapter is never resumed under another.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use vidflow_connectors::store::OutputStore;
use vidflow_gpu::lora::Applied;
use vidflow_gpu::model::Model;
use vidflow_gpu::pipeline::GenerateRequest;
use vidflow_operators::checkpoint::Checkpoints;

fn model() -> Model {
    Model::from(vidflow_gpu::wan::tiny::pipeline(false).unwrap().0)
}

fn adapter(m: &Model, seed: f64) -> Applied {
    let dev = Device::Cpu;
    let mut t = HashMap::new();
    let r = |shape: &[usize]| (Tensor::randn(0f32, 1f32, shape, &dev).unwrap() * seed).unwrap();
    t.insert("blocks.0.attn1.to_v.lora_A.weight".to_string(), r(&[4, 24]));
    t.insert("blocks.0.attn1.to_v.lora_B.weight".to_string(), r(&[24, 4]));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.safetensors");
    candle_core::safetensors::save(&t, &p).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    Applied {
        adapter: Arc::new(m.load_adapter("a", &bytes).unwrap()),
        strength: 1.0,
    }
}

fn request(lora: Option<Applied>) -> GenerateRequest {
    GenerateRequest {
        prompt: b"a lantern in the fog".to_vec(),
        negative_prompt: Vec::new(),
        width: 64,
        height: 48,
        num_frames: 9,
        fps: 16.0,
        steps: 6,
        guidance_scale: 3.0,
        seed: 4,
        lora,
        ..Default::default()
    }
}

/// Denoises `req` (resuming from `ck` when given and it holds one),
/// saving checkpoints when `ck` is given; stops after step `stop` (the
/// process "dies") or decodes. Returns the frames and the step it resumed at.
fn run(
    m: &Model,
    req: &GenerateRequest,
    ck: Option<&Checkpoints>,
    job: &str,
    stop: Option<usize>,
) -> (Option<Vec<u8>>, usize) {
    let pos = m.encode_prompt(&req.prompt).unwrap();
    let neg = m.encode_prompt(&req.negative_prompt).unwrap();
    let text = m
        .text_condition(&pos, Some(&neg), req.guidance_scale)
        .unwrap();
    let mut st = m.prepare(req).unwrap();
    let from = ck
        .and_then(|c| c.resume("acme", job, req, &mut st))
        .map_or(0, |r| r.step);
    while st.step < st.schedule.steps() {
        m.step(&mut st, &text).unwrap();
        if let Some(c) = ck {
            if c.due(vidflow_operators::Tier::Standard, st.step, req.steps) {
                c.save("acme", job, req, &st).unwrap();
            }
        }
        if Some(st.step) == stop {
            return (None, from);
        }
    }
    (Some(m.decode_video(&st, req).unwrap().rgb), from)
}

#[test]
fn a_resumed_wan_job_equals_the_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = Checkpoints {
        store: Arc::new(OutputStore::local(tmp.path()).unwrap()),
        every: 2,
        per_tier: Default::default(),
        keep: 2,
    };
    let m = model();
    let (a, b) = (adapter(&m, 0.3), adapter(&m, 0.5));
    for (job, l) in [("plain", None), ("with-lora", Some(a.clone()))] {
        let req = request(l);
        let (whole, _) = run(&model(), &req, None, job, None);
        // Dies after step 5 (checkpoints at 2 and 4), then a fresh model
        // resumes from step 4.
        let (none, _) = run(&model(), &req, Some(&ck), job, Some(5));
        assert!(none.is_none());
        let (resumed, from) = run(&model(), &req, Some(&ck), job, None);
        assert_eq!(from, 4, "{job}");
        assert!(
            resumed.unwrap() == whole.unwrap(),
            "{job}: resumed video differs"
        );
    }
    // A checkpoint taken under adapter A is foreign to the same job under B.
    let (none, _) = run(&m, &request(Some(a)), Some(&ck), "switched", Some(3));
    assert!(none.is_none());
    let req_b = request(Some(b));
    let mut st = m.prepare(&req_b).unwrap();
    let r = ck.resume("acme", "switched", &req_b, &mut st).unwrap();
    assert_eq!((r.step, st.step), (0, 0));
    assert!(!r.rejected.is_empty());
}
