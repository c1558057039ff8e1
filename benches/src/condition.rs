//! A conditioned denoising step next to an unconditioned one, same model,
//! size and steps, interleaved: the demo model's default clip as plain
//! text-to-video, with a keyframe at frame 0 (same tokens: per-token
//! timesteps, explicit RoPE coordinates, the per-step re-noising), and with
//! keyframes at frames 0 and 16 (one latent frame of extra tokens).
//! `benches/run_condition.sh` runs it and prints the ratios.

use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use vidflow_gpu::demo;
use vidflow_gpu::pipeline::{ConditionInput, GenerateRequest, LtxPipeline, RgbFrames};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Milliseconds of each step of one whole denoising of `req`.
fn steps_ms(p: &LtxPipeline, req: &GenerateRequest) -> Result<Vec<f64>> {
    let mut st = p.prepare(req)?;
    let pos = p.encode_prompt(&req.prompt)?;
    let neg = p.encode_prompt(&req.negative_prompt)?;
    let text = p.text_condition(&pos, Some(&neg), req.guidance_scale)?;
    let mut out = Vec::new();
    while st.step < st.schedule.steps() {
        let t = Instant::now();
        p.step(&mut st, &text)?;
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(out)
}

pub fn run(repeats: usize) -> Result<serde_json::Value> {
    let dir = demo::default_dir();
    demo::verify(dir)?;
    let p = LtxPipeline::from_dir(dir)?;
    let d = demo::info(dir)?.context("the demo model describes itself")?;
    let plain = d.request(crate::demo::PROMPT, 0);
    let frame = |salt: usize| RgbFrames {
        width: plain.width,
        height: plain.height,
        frames: 1,
        data: (0..plain.width * plain.height * 3)
            .map(|i| ((i * 7 + salt) % 251) as u8)
            .collect(),
    };
    let key = |k: usize, salt: usize| ConditionInput {
        frames: frame(salt),
        frame_index: k,
        strength: 1.0,
    };
    let first = GenerateRequest {
        conditions: vec![key(0, 1)],
        ..plain.clone()
    };
    let both = GenerateRequest {
        conditions: vec![key(0, 1), key(plain.num_frames - 1, 2)],
        ..plain.clone()
    };
    let kinds = [
        ("t2v", &plain),
        ("keyframe_0", &first),
        ("keyframes_0_last", &both),
    ];
    for (_, r) in &kinds {
        steps_ms(&p, r)?; // warm-up (and the RoPE table of each layout)
    }
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for _ in 0..repeats.max(1) {
        for (i, (_, r)) in kinds.iter().enumerate() {
            all[i].extend(steps_ms(&p, r)?);
        }
    }
    let med: Vec<f64> = all.iter().cloned().map(median).collect();
    let mut out = serde_json::Map::new();
    for ((name, r), m) in kinds.iter().zip(&med) {
        let tokens = p.prepare(r)?.latents.dim(1)?;
        out.insert(
            name.to_string(),
            json!({"step_ms": m, "tokens": tokens, "steps_timed": all[0].len()}),
        );
    }
    out.insert("keyframe_0_over_t2v".into(), json!(med[1] / med[0]));
    out.insert("keyframes_0_last_over_t2v".into(), json!(med[2] / med[0]));
    out.insert(
        "clip".into(),
        json!({"width": plain.width, "height": plain.height, "frames": plain.num_frames,
               "steps": plain.steps, "guidance": plain.guidance_scale}),
    );
    Ok(serde_json::Value::Object(out))
}
