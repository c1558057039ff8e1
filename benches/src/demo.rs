//! The default clip of the demo model (`gpu/models/ltx-demo`): one whole
//! text-to-video generation at its native size, steps and guidance (prompt
//! encoding, the CFG denoising loop, VAE decode to RGB8), model loaded once.
//! `benches/run_demo.sh` runs it next to diffusers' `LTXPipeline` on the same
//! weights (`benches/pytorch/bench_demo.py`).

use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use vidflow_gpu::demo;
use vidflow_gpu::pipeline::{Flow, LtxPipeline};

pub const PROMPT: &str = "a red circle moving left on a black background";

pub fn run(repeats: usize) -> Result<serde_json::Value> {
    let dir = demo::default_dir();
    demo::verify(dir)?;
    let t = Instant::now();
    let p = LtxPipeline::from_dir(dir)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let d = demo::info(dir)?.context("the demo model describes itself")?;
    let req = d.request(PROMPT, 0);
    p.generate(&req, &mut |_| Flow::Continue)?; // warm-up
    let mut ms = Vec::new();
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        p.generate(&req, &mut |_| Flow::Continue)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(json!({
        "prompt": PROMPT, "width": d.width, "height": d.height, "frames": d.num_frames,
        "steps": d.steps, "guidance": d.guidance_scale, "load_ms": load_ms,
        "generate_ms": ms[ms.len() / 2], "runs_ms": ms,
    }))
}
