//! Calibration of the scheduler's cost model (`vidflow-sched` `cost`): the
//! denoising step (CFG batch 2, text prepared once) timed at three token
//! counts per architecture, FLOPs counted by the cost model, and
//! `seconds = overhead + flops / rate` fitted by least squares. The VAE
//! decode is timed once for its FLOPs-per-voxel figure at that rate.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use vidflow_gpu::rng::NoiseRng;
use vidflow_gpu::tiny;
use vidflow_gpu::transformer::{LtxTransformer, TransformerConfig};
use vidflow_gpu::vae::{LtxVae, VaeConfig};
use vidflow_gpu::weights::parse_config;
use vidflow_operators::cost::arch_of;
use vidflow_sched::Calibration;

const TEXT_LEN: usize = 128;

fn median_s(mut f: impl FnMut() -> Result<()>, repeats: usize) -> Result<f64> {
    f()?;
    let mut v = Vec::new();
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64());
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v[v.len() / 2])
}

fn calibrate(
    name: &str,
    transformer: serde_json::Value,
    grids: &[(usize, usize, usize)],
    repeats: usize,
) -> Result<(serde_json::Value, Calibration)> {
    let dev = Device::Cpu;
    let tc: TransformerConfig = parse_config(transformer, "cost transformer")?;
    let arch = arch_of(&tc);
    let w = tiny::seeded_weights(&tc.tensor_shapes(), 1, "cost transformer")?;
    let model = LtxTransformer::load(&w, &tc)?;
    let mut rng = NoiseRng::new(5);
    let text = rng.randn(&[2, TEXT_LEN, tc.caption_channels], &dev)?;
    let mask = Tensor::ones((2, TEXT_LEN), candle_core::DType::F32, &dev)?;
    let cond = model.prepare_text(&text, &mask)?;
    let ts = Tensor::new(&[500f32, 500.0], &dev)?;
    let mut points = Vec::new();
    let mut rows = Vec::new();
    for &(f, h, wd) in grids {
        let grid = crate::bench_grid((f, h, wd));
        let tokens = grid.tokens();
        let x = rng.randn(&[2, tokens, tc.in_channels], &dev)?;
        let s = median_s(
            || Ok(model.forward(&x, &cond, &ts, &grid).map(|_| ())?),
            repeats,
        )?;
        let flops = 2.0 * arch.forward_flops(tokens as u64);
        eprintln!(
            "{name}: {tokens} tokens: {:.2} ms, {:.3} GFLOP",
            s * 1e3,
            flops / 1e9
        );
        points.push((flops, s));
        rows.push(serde_json::json!({"tokens": tokens, "step_s": s, "flops": flops}));
    }
    let cal = Calibration::fit(&points)
        .ok_or_else(|| anyhow::anyhow!("{name}: step times do not grow with FLOPs"))?;
    Ok((
        serde_json::json!({
            "arch": arch,
            "points": rows,
            "rate_gflops": cal.rate / 1e9,
            "overhead_ms": cal.overhead_s * 1e3,
            "max_rel_error": cal.max_rel_error,
        }),
        cal,
    ))
}

pub fn run(repeats: usize) -> Result<serde_json::Value> {
    let (tiny_j, _) = calibrate(
        "tiny",
        tiny::transformer_json(),
        &[(2, 8, 8), (3, 16, 16), (5, 16, 32)],
        repeats.max(5),
    )?;
    let (mid_j, mid) = calibrate(
        "mid",
        serde_json::json!({
            "in_channels": 128, "out_channels": 128, "num_attention_heads": 32,
            "attention_head_dim": 64, "cross_attention_dim": 2048, "num_layers": 2,
            "caption_channels": 4096
        }),
        &[(2, 8, 8), (4, 8, 8), (4, 16, 16)],
        repeats,
    )?;
    // The LTX-Video 0.9 VAE decode (diffusers' defaults), 25 x 256 x 256.
    let dev = Device::Cpu;
    let vc: VaeConfig = parse_config(serde_json::json!({}), "cost vae")?;
    let vw = tiny::seeded_weights(
        &vidflow_gpu::vae::expected_tensor_shapes(&vc),
        1,
        "cost vae",
    )?;
    let vae = LtxVae::load(&vw, &vc)?;
    let z = NoiseRng::new(6).randn(&[1, vc.latent_channels, 4, 8, 8], &dev)?;
    let decode_s = median_s(|| Ok(vae.decode(&z, None).map(|_| ())?), 1)?;
    let voxels = 25.0 * 256.0 * 256.0;
    Ok(serde_json::json!({
        "machine_threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "tiny": tiny_j,
        "mid": mid_j,
        "decode_s_25x256x256": decode_s,
        "decode_flops_per_voxel_at_mid_rate": decode_s * mid.rate / voxels,
    }))
}
