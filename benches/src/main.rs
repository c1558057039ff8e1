//! CPU benchmark of the LTX runtime at the tiny and mid configs: time per
//! denoise step (CFG batch 2) and per VAE decode, with seeded random weights.
//! `benches/run_cpu.sh` runs it next to the PyTorch peer
//! (`benches/pytorch/bench_ltx.py`, same shapes) and reports the ratio.

mod condition;
mod cost;
mod demo;
mod intake;
mod nsfw;
mod pipeline;
mod wan;

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use clap::Parser;
use vidflow_gpu::rng::NoiseRng;
use vidflow_gpu::tiny;
use vidflow_gpu::transformer::{LatentGrid, LtxTransformer, TransformerConfig};
use vidflow_gpu::vae::{LtxVae, VaeConfig};
use vidflow_gpu::weights::parse_config;

#[derive(Parser)]
#[command(about = "LTX runtime CPU benchmark (tiny and mid configs)")]
struct Args {
    /// tiny, mid or all.
    #[arg(long, default_value = "all")]
    config: String,
    /// Timed repeats per measurement (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Timed repeats for the mid VAE decode.
    #[arg(long, default_value_t = 1)]
    decode_repeats: usize,
    /// `runtime` (model step/decode vs PyTorch shapes), `pipeline`
    /// (orchestration overhead and batching throughput, tiny model) or
    /// `intake` (jobs/s from RabbitMQ through `vidflow serve` with a no-op
    /// model, next to raw lapin; needs a broker, see benches/run_intake.sh)
    /// or `cost` (the scheduler's cost-model calibration: step time at
    /// three token counts, fitted against counted FLOPs)
    /// or `nsfw` (the visual safety check on K sampled 832x480 frames)
    /// or `demo` (the demo model's default clip, whole generation)
    /// or `condition` (a conditioned denoising step next to a plain one).
    #[arg(long, default_value = "runtime")]
    suite: String,
    /// Broker for the intake suite (or VIDFLOW_AMQP_URL).
    #[arg(
        long,
        env = "VIDFLOW_AMQP_URL",
        default_value = "amqp://vidflow:vidflow@127.0.0.1:5679/%2f"
    )]
    amqp: String,
    /// intake suite: also run with the state in PostgreSQL (an admin URL;
    /// each run makes a fresh database next to it).
    #[arg(long, env = "VIDFLOW_BENCH_DATABASE_URL")]
    database: Option<String>,
    /// intake suite: tenants the jobs are spread over.
    #[arg(long, env = "TENANTS", default_value_t = 1)]
    tenants: usize,
    /// pipeline suite: jobs, resolution, frames, steps.
    #[arg(long, default_value_t = 8)]
    jobs: usize,
    #[arg(long, default_value = "256x256")]
    resolution: String,
    #[arg(long, default_value_t = 17)]
    frames: u32,
    #[arg(long, default_value_t = 8)]
    steps: u32,
    /// Time only this part: `step` or `decode` (for profiling).
    #[arg(long)]
    only: Option<String>,
}

struct Shape {
    name: &'static str,
    transformer: serde_json::Value,
    vae: serde_json::Value,
    /// Latent grid (frames, height, width) and the video it decodes to.
    grid: (usize, usize, usize),
    video: (usize, usize, usize),
}

fn shapes() -> Vec<Shape> {
    vec![
        Shape {
            name: "tiny",
            transformer: tiny::transformer_json(),
            vae: tiny::vae_json(),
            grid: (2, 2, 3),
            video: (9, 64, 96),
        },
        Shape {
            name: "mid",
            transformer: serde_json::json!({
                "in_channels": 128, "out_channels": 128, "num_attention_heads": 32,
                "attention_head_dim": 64, "cross_attention_dim": 2048, "num_layers": 2,
                "caption_channels": 4096
            }),
            // diffusers' defaults: the LTX-Video 0.9.0 VAE.
            vae: serde_json::json!({}),
            grid: (4, 8, 8),
            video: (25, 256, 256),
        },
    ]
}

fn median_ms(mut f: impl FnMut() -> Result<()>, repeats: usize) -> Result<(f64, Vec<f64>)> {
    f()?; // warm-up
    let mut v = Vec::new();
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut s = v.clone();
    s.sort_by(|a, b| a.total_cmp(b));
    Ok((s[s.len() / 2], v))
}

const TEXT_LEN: usize = 128;

/// The latent grid of a benchmark shape (frames, height, width in latent
/// cells), with the RoPE scale of LTX at 25 fps.
fn bench_grid((frames, height, width): (usize, usize, usize)) -> LatentGrid {
    LatentGrid {
        frames,
        height,
        width,
        rope_scale: [8.0 / 25.0, 32.0, 32.0],
    }
}

fn bench(shape: &Shape, args: &Args) -> Result<serde_json::Value> {
    let dev = Device::Cpu;
    let tc: TransformerConfig = parse_config(shape.transformer.clone(), "bench transformer")?;
    let vc: VaeConfig = parse_config(shape.vae.clone(), "bench vae")?;
    let tw = tiny::seeded_weights(&tc.tensor_shapes(), 1, "bench transformer")?;
    let vw = tiny::seeded_weights(
        &vidflow_gpu::vae::expected_tensor_shapes(&vc),
        1,
        "bench vae",
    )?;
    let model = LtxTransformer::load(&tw, &tc)?;
    let vae = LtxVae::load(&vw, &vc)?;
    let (f, h, w) = shape.grid;
    let grid = bench_grid(shape.grid);
    let s = grid.tokens();
    let mut rng = NoiseRng::new(5);
    let x = rng.randn(&[2, s, tc.in_channels], &dev)?;
    let text = rng.randn(&[2, TEXT_LEN, tc.caption_channels], &dev)?;
    let mask = Tensor::ones((2, TEXT_LEN), candle_core::DType::F32, &dev)?;
    let ts = Tensor::new(&[500f32, 500.0], &dev)?;

    if args.only.as_deref() == Some("decode") {
        let z = rng.randn(&[1, vc.latent_channels, f, h, w], &dev)?;
        let (ms, all) = median_ms(
            || Ok(vae.decode(&z, None).map(|_| ())?),
            args.decode_repeats,
        )?;
        return Ok(serde_json::json!({"decode_ms": ms, "decode_ms_all": all}));
    }
    // As served: text conditioning prepared once per job, reused every step.
    let cond = model.prepare_text(&text, &mask)?;
    let (step_ms, step_all) = median_ms(
        || Ok(model.forward(&x, &cond, &ts, &grid).map(|_| ())?),
        args.repeats,
    )?;
    // Like-for-like with the PyTorch forward, which projects the text each call.
    let (step_text_ms, _) = median_ms(
        || {
            let c = model.prepare_text(&text, &mask)?;
            Ok(model.forward(&x, &c, &ts, &grid).map(|_| ())?)
        },
        args.repeats,
    )?;
    let z = rng.randn(&[1, vc.latent_channels, f, h, w], &dev)?;
    let reps = if shape.name == "mid" {
        args.decode_repeats
    } else {
        args.repeats
    };
    let mut out_dims = Vec::new();
    let (decode_ms, decode_all) = median_ms(
        || {
            let v = vae.decode(&z, None)?;
            out_dims = v.dims().to_vec();
            Ok(())
        },
        reps,
    )?;
    let expect = [1, 3, shape.video.0, shape.video.1, shape.video.2];
    anyhow::ensure!(
        out_dims == expect,
        "decode produced {out_dims:?}, expected {expect:?}"
    );
    Ok(serde_json::json!({
        "tokens": s,
        "step_ms": step_ms,
        "step_ms_all": step_all,
        "step_with_text_projection_ms": step_text_ms,
        "decode_ms": decode_ms,
        "decode_ms_all": decode_all,
        "decode_output": out_dims,
    }))
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.suite == "intake" {
        let r = intake::run(
            &args.amqp,
            args.jobs,
            args.database.as_deref(),
            args.tenants,
        )?;
        println!("{}", serde_json::to_string_pretty(&r)?);
        // The service thread is still consuming; the results are out.
        std::process::exit(0);
    }
    if args.suite == "cost" {
        println!(
            "{}",
            serde_json::to_string_pretty(&cost::run(args.repeats)?)?
        );
        return Ok(());
    }
    if args.suite == "demo" {
        println!(
            "{}",
            serde_json::to_string_pretty(&demo::run(args.repeats)?)?
        );
        return Ok(());
    }
    if args.suite == "condition" {
        println!(
            "{}",
            serde_json::to_string_pretty(&condition::run(args.repeats)?)?
        );
        return Ok(());
    }
    if args.suite == "wan" {
        println!(
            "{}",
            serde_json::to_string_pretty(&wan::run(args.repeats)?)?
        );
        return Ok(());
    }
    if args.suite == "wan-lora" {
        println!(
            "{}",
            serde_json::to_string_pretty(&wan::run_lora(args.repeats)?)?
        );
        return Ok(());
    }
    if args.suite == "nsfw" {
        println!("{}", serde_json::to_string_pretty(&nsfw::run()?)?);
        return Ok(());
    }
    if args.suite == "pipeline" {
        let r = pipeline::run(args.jobs, &args.resolution, args.frames, args.steps)?;
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let mut out = serde_json::Map::new();
    out.insert(
        "threads".into(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .into(),
    );
    out.insert("backend".into(), "candle 0.11 CPU, f32".into());
    for shape in shapes() {
        if args.config == "all" || args.config == shape.name {
            eprintln!("benchmarking {} ...", shape.name);
            out.insert(shape.name.into(), bench(&shape, &args)?);
        }
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Object(out))?
    );
    Ok(())
}
