//! GPU parity checks and the LTX-2B step benchmark. Built with
//! `bash scripts/build-cuda.sh`, carried to the device machine and run by
//! `benches/gpu/run.sh` next to the diffusers/PyTorch peer in the same run.
//! Without the `cuda` feature every subcommand runs on the CPU (small
//! shapes only make sense there); the kernel checks need a GPU.
//!
//! Each subcommand prints one JSON object per measurement line, so the
//! script can collect them, and exits non-zero when a check fails.

mod check;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Parser, Subcommand};
use serde_json::json;
use vidflow_gpu::golden::check_case_on;
use vidflow_gpu::info::{estimate_vram, EstimateInput};
use vidflow_gpu::kernels::{self, AttentionImpl, PeakMemory};
use vidflow_gpu::transformer::{LatentGrid, LtxTransformer, TransformerConfig};
use vidflow_gpu::vae::{decode_workspace_bytes, DecodeTiling, VaeConfig};
use vidflow_gpu::weights::{parse_config, Weights};

#[derive(Parser)]
#[command(about = "vidflow GPU checks and benchmark")]
struct Args {
    /// Run on the CPU even when built with CUDA.
    #[arg(long)]
    cpu: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Our kernels against the composed reference ops on fresh random inputs.
    Check,
    /// The run-time NVRTC compile of every kernel source (no GPU needed).
    Nvrtc,
    /// Every golden case on this device: f32 against its tolerance, then
    /// bf16 weights (the error bound is measured, not asserted).
    Golden {
        #[arg(long, default_value = "../shared/golden/ltx")]
        dir: PathBuf,
    },
    /// LTX-2B shapes (random weights, bf16): ms per CFG denoise step.
    Step {
        #[arg(long, default_value_t = 28)]
        layers: usize,
        #[command(flatten)]
        clip: Clip,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// The GPU's dense bf16 peak for MFU (H100 SXM: 989 TFLOP/s).
        #[arg(long, default_value_t = 989.0)]
        peak_tflops: f64,
    },
    /// The LTX-Video 0.9.0 VAE decoder (random weights) on one clip.
    Vae {
        #[command(flatten)]
        clip: Clip,
        /// Decode working-set budget (GiB) for the tile plan.
        #[arg(long, default_value_t = 8.0)]
        budget_gib: f64,
        /// One piece, no tiles.
        #[arg(long)]
        whole: bool,
    },
    /// The attention kernels alone at the step's shapes.
    Attention {
        #[arg(long, default_value_t = 6144)]
        tokens: usize,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
}

/// The clip the step and the decode are measured on (768x512, 121 frames:
/// the spec's real-time shape, 6144 latent tokens).
#[derive(clap::Args, Clone, Copy)]
struct Clip {
    #[arg(long, default_value_t = 121)]
    frames: usize,
    #[arg(long, default_value_t = 512)]
    height: usize,
    #[arg(long, default_value_t = 768)]
    width: usize,
}

fn device(cpu: bool) -> Result<Device> {
    if cpu {
        return Ok(Device::Cpu);
    }
    #[cfg(feature = "cuda")]
    {
        return Ok(Device::new_cuda(0).context("no CUDA device 0")?);
    }
    #[allow(unreachable_code)]
    Ok(Device::Cpu)
}

fn sync(dev: &Device) -> Result<()> {
    dev.synchronize()?;
    Ok(())
}

/// Median of `repeats` timed runs after one warm-up, device synchronised
/// around each.
fn time_ms(
    dev: &Device,
    repeats: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<(f64, Vec<f64>)> {
    f()?;
    sync(dev)?;
    let mut v = Vec::new();
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        f()?;
        sync(dev)?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut s = v.clone();
    s.sort_by(|a, b| a.total_cmp(b));
    Ok((s[s.len() / 2], v))
}

/// ||a - b|| / ||b|| in f64 on the host, and whether `a` is all finite.
fn rel_err(a: &Tensor, b: &Tensor) -> Result<(f64, bool)> {
    let a: Vec<f32> = a.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let b: Vec<f32> = b.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let (mut num, mut den, mut finite) = (0f64, 0f64, true);
    for (x, y) in a.iter().zip(&b) {
        finite &= x.is_finite();
        num += (*x as f64 - *y as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    Ok(((num / den.max(1e-30)).sqrt(), finite))
}

fn randn(shape: &[usize], dev: &Device, dt: DType) -> Result<Tensor> {
    Ok(Tensor::randn(0f32, 1f32, shape, dev)?.to_dtype(dt)?)
}

fn golden(dev: &Device, dir: &std::path::Path) -> Result<bool> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("golden folder {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.path())
        .collect();
    names.sort();
    let mut ok = true;
    for case in &names {
        let name = case
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        for dt in [DType::F32, DType::BF16] {
            if dt == DType::BF16 && name.starts_with("flow_match") {
                continue;
            }
            let t = Instant::now();
            match check_case_on(case, dev, dt) {
                Ok(r) => {
                    for tr in &r.tensors {
                        let pass = tr.pass;
                        if dt == DType::F32 {
                            ok &= pass;
                        }
                        println!(
                            "{}",
                            json!({"golden": name, "dtype": format!("{dt:?}"), "tensor": tr.name,
                                   "max_abs_err": tr.max_abs_err, "rel_l2_err": tr.rel_l2_err, "atol": r.tolerance.atol,
                                   "rtol": r.tolerance.rtol, "within_tolerance": pass,
                                   "secs": t.elapsed().as_secs_f64()})
                        );
                    }
                }
                Err(e) => {
                    ok &= dt != DType::F32;
                    println!(
                        "{}",
                        json!({"golden": name, "dtype": format!("{dt:?}"), "error": e.to_string()})
                    );
                }
            }
        }
    }
    Ok(ok)
}

/// diffusers' LTX-Video 2B transformer config (0.9.x), `layers` deep.
fn ltx2b(layers: usize) -> Result<TransformerConfig> {
    Ok(parse_config(
        json!({
            "in_channels": 128, "out_channels": 128, "patch_size": 1, "patch_size_t": 1,
            "num_attention_heads": 32, "attention_head_dim": 64, "cross_attention_dim": 2048,
            "num_layers": layers, "caption_channels": 4096, "norm_eps": 1e-6,
            "attention_bias": true, "attention_out_bias": true
        }),
        "LTX-2B bench config",
    )?)
}

/// Random weights generated on the device (curand): N(0, 1/fan_in) for
/// matrices and kernels (fan-in = every dim after the first), N(0, 0.02)
/// for vectors, ones for the q/k norm weights.
fn random_weights(
    shapes: Vec<(String, Vec<usize>)>,
    dev: &Device,
    dt: DType,
    desc: &str,
) -> Result<Weights> {
    let mut m = std::collections::HashMap::new();
    for (name, shape) in shapes {
        let t = if name.ends_with("norm_q.weight") || name.ends_with("norm_k.weight") {
            Tensor::ones(shape.as_slice(), dt, dev)?
        } else if shape.len() == 1 {
            Tensor::randn(0f32, 0.02, shape.as_slice(), dev)?.to_dtype(dt)?
        } else {
            let fan_in = shape[1..].iter().product::<usize>().max(1) as f32;
            Tensor::randn(0f32, 1.0 / fan_in.sqrt(), shape.as_slice(), dev)?.to_dtype(dt)?
        };
        m.insert(name, t);
    }
    Ok(Weights::from_tensors(m, desc)
        .with_dtype(dt)
        .with_device(dev.clone()))
}

/// FLOPs of one forward at batch 1 (2 per multiply-add): every GEMM, the
/// self-attention QK^T and PV, the cross-attention against `l` text tokens.
fn forward_flops(cfg: &TransformerConfig, s: usize, l: usize) -> f64 {
    let d = cfg.inner_dim() as f64;
    let (s, l) = (s as f64, l as f64);
    let per_layer = 2.0 * s * d * d * 4.0 // attn1 q k v o
        + 4.0 * s * s * d                 // attn1 scores + PV
        + 2.0 * s * d * d * 2.0           // attn2 q o
        + 4.0 * s * l * d                 // attn2 scores + PV
        + 2.0 * s * d * 4.0 * d * 2.0; // FF in + out
    cfg.num_layers as f64 * per_layer + 2.0 * s * d * (cfg.in_channels + cfg.out_channels) as f64
}

fn step(dev: &Device, a: &Cmd) -> Result<()> {
    let Cmd::Step {
        layers,
        clip: Clip {
            frames,
            height,
            width,
        },
        repeats,
        peak_tflops,
    } = a
    else {
        unreachable!()
    };
    let cfg = ltx2b(*layers)?;
    let dt = if dev.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    };
    let base = kernels::device_memory(dev)?.map(|m| m.0).unwrap_or(0);
    let w = random_weights(cfg.tensor_shapes(), dev, dt, "random LTX-2B")?;
    let model = LtxTransformer::load(&w, &cfg)?;
    drop(w);
    let weights_bytes = kernels::device_memory(dev)?
        .map(|m| m.0)
        .unwrap_or(0)
        .saturating_sub(base);
    let grid = LatentGrid {
        frames: (frames - 1) / 8 + 1,
        height: height / 32,
        width: width / 32,
        rope_scale: [8.0 / 25.0, 32.0, 32.0],
    };
    let s = grid.tokens();
    let l = 128;
    let x = Tensor::randn(0f32, 1f32, (2, s, cfg.in_channels), dev)?;
    let text = Tensor::randn(0f32, 1f32, (2, l, cfg.caption_channels), dev)?;
    let mask = Tensor::ones((2, l), DType::F32, dev)?;
    let ts = Tensor::new(&[500f32, 500.0], dev)?;
    let cond = model.prepare_text(&text, &mask)?;
    let peak = PeakMemory::start(dev);
    let (ms, all) = time_ms(dev, *repeats, || {
        Ok(model.forward(&x, &cond, &ts, &grid).map(|_| ())?)
    })?;
    let peak = peak.finish();
    let flops = 2.0 * forward_flops(&cfg, s, l);
    let tflops = flops / (ms * 1e-3) / 1e12;
    let vcfg: VaeConfig = parse_config(json!({}), "vae")?;
    let est = estimate_vram(
        &cfg,
        &vcfg,
        weights_bytes,
        &EstimateInput {
            width: *width,
            height: *height,
            frames: *frames,
            act_bytes: 2,
            cfg_batch: 2,
            text_len: l,
        },
    );
    println!(
        "{}",
        json!({"bench": "step", "device": format!("{dev:?}"), "layers": layers, "tokens": s,
               "cfg_batch": 2, "ms_per_step": ms, "ms_all": all, "tflop_per_step": flops / 1e12,
               "tflops": tflops, "mfu": tflops / peak_tflops,
               "weights_bytes": weights_bytes, "peak_bytes_in_use": peak,
               "peak_over_baseline_bytes": peak.saturating_sub(base),
               "estimate_total_bytes": est.total_bytes,
               "estimate_transformer_workspace_bytes": est.transformer_workspace_bytes})
    );
    Ok(())
}

fn vae_bench(
    dev: &Device,
    frames: usize,
    height: usize,
    width: usize,
    budget_gib: f64,
    whole: bool,
) -> Result<()> {
    let vc: VaeConfig = parse_config(json!({}), "LTX-Video 0.9.0 VAE")?;
    let dt = if dev.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    };
    let base = kernels::device_memory(dev)?.map(|m| m.0).unwrap_or(0);
    let w = random_weights(
        vidflow_gpu::vae::expected_tensor_shapes(&vc),
        dev,
        dt,
        "random LTX VAE",
    )?;
    let vae = vidflow_gpu::vae::LtxVae::load(&w, &vc)?;
    drop(w);
    let weights_bytes = kernels::device_memory(dev)?
        .map(|m| m.0)
        .unwrap_or(0)
        .saturating_sub(base);
    // Warm-up on a small clip (module loads, cuBLAS handles), then one
    // timed decode of the full clip.
    let small = Tensor::randn(0f32, 1f32, (1, vc.latent_channels, 2, 2, 2), dev)?;
    vae.decode(&small, None)?;
    sync(dev)?;
    let (lf, lh, lw) = ((frames - 1) / 8 + 1, height / 32, width / 32);
    let z = Tensor::randn(0f32, 1f32, (1, vc.latent_channels, lf, lh, lw), dev)?;
    let act_bytes = if dt == DType::F32 { 4 } else { 2 };
    let tiling = if whole {
        DecodeTiling::WHOLE
    } else {
        DecodeTiling::plan(
            &vc,
            (lf, lh, lw),
            act_bytes,
            (budget_gib * (1u64 << 30) as f64) as u64,
        )
    };
    let tile = (
        tiling.tile_frames.min(lf),
        tiling.tile.min(lh),
        tiling.tile.min(lw),
    );
    let peak = PeakMemory::start(dev);
    let t = Instant::now();
    let r = vae.decode_tiled(&z, None, tiling);
    sync(dev)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let peak = peak.finish();
    let tcfg = ltx2b(28)?;
    let est = estimate_vram(
        &tcfg,
        &vc,
        0,
        &EstimateInput {
            width,
            height,
            frames,
            act_bytes: 2,
            cfg_batch: 2,
            text_len: 128,
        },
    );
    match r {
        Ok(v) => println!(
            "{}",
            json!({"bench": "vae_decode", "output": v.dims(), "ms": ms, "weights_bytes": weights_bytes,
                   "tiling": format!("{tiling:?}"),
                   "estimate_tile_workspace_bytes": decode_workspace_bytes(&vc, tile, act_bytes),
                   "peak_bytes_in_use": peak, "peak_over_baseline_bytes": peak.saturating_sub(base),
                   "estimate_vae_workspace_bytes": est.vae_workspace_bytes})
        ),
        Err(e) => println!(
            "{}",
            json!({"bench": "vae_decode", "tiling": format!("{tiling:?}"), "error": e.to_string(), "ms": ms, "peak_bytes_in_use": peak})
        ),
    }
    Ok(())
}

fn attention_bench(dev: &Device, tokens: usize, repeats: usize) -> Result<()> {
    let (b, h, dh) = (2, 32, 64);
    let dt = if dev.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    };
    let q = randn(&[b, tokens, h * dh], dev, dt)?;
    let k = randn(&[b, tokens, h * dh], dev, dt)?;
    let v = randn(&[b, tokens, h * dh], dev, dt)?;
    let view =
        |t: &Tensor| -> Result<Tensor> { Ok(t.reshape((b, tokens, h, dh))?.transpose(1, 2)?) };
    let (qv, kv, vv) = (view(&q)?, view(&k)?, view(&v)?);
    let flops = 4.0 * (b * h * tokens * tokens * dh) as f64;
    let mut variants: Vec<(String, AttentionImpl, usize, usize)> =
        vec![("composed".into(), AttentionImpl::Composed, 4, 1)];
    if !dev.is_cpu() {
        for v in [1, 2, 3] {
            for w in [4, 8] {
                variants.push((
                    format!("tensor_core_v{v}_w{w}"),
                    AttentionImpl::TensorCore,
                    w,
                    v,
                ));
            }
        }
        variants.push(("simt".into(), AttentionImpl::Simt, 4, 1));
    }
    let mut best: Option<(f64, usize, usize)> = None;
    let reference = if dev.is_cpu() {
        None
    } else {
        Some(kernels::attention_with(&qv, &kv, &vv, None, Some(AttentionImpl::Simt))?.0)
    };
    for (name, imp, warps, variant) in variants {
        #[cfg(feature = "cuda")]
        {
            kernels::cuda::set_tc_warps(warps);
            kernels::cuda::set_tc_variant(variant);
        }
        let (ms, _) = time_ms(dev, repeats, || {
            Ok(kernels::attention_with(&qv, &kv, &vv, None, Some(imp)).map(|_| ())?)
        })?;
        // A configuration is eligible only if it agrees with the SIMT kernel
        // at this shape (checked against the composed ops by `check`).
        let agrees = match &reference {
            Some(r) if imp == AttentionImpl::TensorCore => {
                let out = kernels::attention_with(&qv, &kv, &vv, None, Some(imp))?.0;
                let (e, finite) = rel_err(&out, r)?;
                Some((e, finite && e < 1e-2))
            }
            _ => None,
        };
        println!(
            "{}",
            json!({"bench": "attention", "variant": name, "shape": [b, h, tokens, dh],
                   "ms": ms, "tflops": flops / (ms * 1e-3) / 1e12,
                   "rel_err_vs_simt": agrees.map(|a| a.0), "agrees": agrees.map(|a| a.1)})
        );
        if agrees.is_some_and(|a| a.1) && best.is_none_or(|(t, _, _)| ms < t) {
            best = Some((ms, warps, variant));
        }
    }
    // Leave the fastest tensor-core configuration selected (the step
    // benchmark runs after this in the same process).
    if let Some((ms, warps, variant)) = best {
        #[cfg(feature = "cuda")]
        {
            kernels::cuda::set_tc_warps(warps);
            kernels::cuda::set_tc_variant(variant);
        }
        println!(
            "{}",
            json!({"bench": "attention_pick", "warps": warps, "variant": variant, "ms": ms})
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dev = device(args.cpu)?;
    match &args.cmd {
        Cmd::Check => {
            if dev.is_cpu() {
                bail!("the kernel checks need a CUDA build on a GPU machine");
            }
            if !check::run(&dev)? {
                bail!("kernel checks failed");
            }
        }
        Cmd::Nvrtc => {
            #[cfg(feature = "cuda")]
            {
                let t = Instant::now();
                let files = kernels::cuda::compile_all()?;
                let secs = t.elapsed().as_secs_f64();
                println!("{}", json!({"nvrtc": files, "secs_all": secs}));
            }
            #[cfg(not(feature = "cuda"))]
            bail!("built without the cuda feature");
        }
        Cmd::Golden { dir } => {
            if !golden(&dev, dir)? {
                bail!("golden cases failed in f32");
            }
        }
        Cmd::Step { .. } => step(&dev, &args.cmd)?,
        Cmd::Vae {
            clip,
            budget_gib,
            whole,
        } => vae_bench(
            &dev,
            clip.frames,
            clip.height,
            clip.width,
            *budget_gib,
            *whole,
        )?,
        Cmd::Attention { tokens, repeats } => attention_bench(&dev, *tokens, *repeats)?,
    }
    Ok(())
}
