//! `--suite wan`: one forward of a one-layer Wan 2.1 transformer at the
//! 1.3B model's widths (12 heads x 128, FFN 8960, UMT5 text 4096) on a
//! 480p-sized latent of two frames (3,120 tokens) and 512 text tokens, with
//! seeded random weights: the Rust side of `benches/run_wan.sh`, whose
//! PyTorch side runs diffusers' `WanTransformer3DModel` at the same shapes.
//!
//! `--suite wan-lora`: the same forward with a LoRA adapter on the block's
//! ten linear layers (rank 16 and rank 64, applied as side products) next
//! to the forward without one, in the same run, and what merging the
//! adapter into those layers' weights costs instead (the alternative
//! design: merge before a batch, unmerge after).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use vidflow_gpu::lora::{self, Adapter, Applied, LoraLayer};
use vidflow_gpu::wan::{WanConfig, WanTransformer};
use vidflow_gpu::weights::Weights;

const D: usize = 1536;
const FFN: usize = 8960;
const TEXT: usize = 4096;

fn weights(dev: &Device) -> Result<Weights> {
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("patch_embedding.weight".into(), vec![D, 16, 1, 2, 2]),
        ("patch_embedding.bias".into(), vec![D]),
        (
            "condition_embedder.time_embedder.linear_1.weight".into(),
            vec![D, 256],
        ),
        (
            "condition_embedder.time_embedder.linear_1.bias".into(),
            vec![D],
        ),
        (
            "condition_embedder.time_embedder.linear_2.weight".into(),
            vec![D, D],
        ),
        (
            "condition_embedder.time_embedder.linear_2.bias".into(),
            vec![D],
        ),
        ("condition_embedder.time_proj.weight".into(), vec![6 * D, D]),
        ("condition_embedder.time_proj.bias".into(), vec![6 * D]),
        (
            "condition_embedder.text_embedder.linear_1.weight".into(),
            vec![D, TEXT],
        ),
        (
            "condition_embedder.text_embedder.linear_1.bias".into(),
            vec![D],
        ),
        (
            "condition_embedder.text_embedder.linear_2.weight".into(),
            vec![D, D],
        ),
        (
            "condition_embedder.text_embedder.linear_2.bias".into(),
            vec![D],
        ),
        ("blocks.0.norm2.weight".into(), vec![D]),
        ("blocks.0.norm2.bias".into(), vec![D]),
        ("blocks.0.ffn.net.0.proj.weight".into(), vec![FFN, D]),
        ("blocks.0.ffn.net.0.proj.bias".into(), vec![FFN]),
        ("blocks.0.ffn.net.2.weight".into(), vec![D, FFN]),
        ("blocks.0.ffn.net.2.bias".into(), vec![D]),
        ("blocks.0.scale_shift_table".into(), vec![1, 6, D]),
        ("proj_out.weight".into(), vec![64, D]),
        ("proj_out.bias".into(), vec![64]),
        ("scale_shift_table".into(), vec![1, 2, D]),
    ];
    for a in ["attn1", "attn2"] {
        for l in ["to_q", "to_k", "to_v", "to_out.0"] {
            shapes.push((format!("blocks.0.{a}.{l}.weight"), vec![D, D]));
            shapes.push((format!("blocks.0.{a}.{l}.bias"), vec![D]));
        }
        shapes.push((format!("blocks.0.{a}.norm_q.weight"), vec![D]));
        shapes.push((format!("blocks.0.{a}.norm_k.weight"), vec![D]));
    }
    let mut map = HashMap::new();
    for (name, shape) in shapes {
        let t = if name.contains("norm") && !name.contains("bias") {
            Tensor::ones(shape, candle_core::DType::F32, dev)?
        } else {
            (Tensor::randn(0f32, 1f32, shape, dev)? * 0.02)?
        };
        map.insert(name, t);
    }
    Ok(Weights::from_tensors(map, "wan bench"))
}

pub fn run(repeats: usize) -> Result<serde_json::Value> {
    let dev = Device::Cpu;
    let cfg: WanConfig = serde_json::from_value(serde_json::json!({
        "num_attention_heads": 12, "attention_head_dim": 128, "in_channels": 16,
        "out_channels": 16, "text_dim": TEXT, "ffn_dim": FFN, "num_layers": 1,
        "qk_norm": "rms_norm_across_heads", "cross_attn_norm": true
    }))?;
    let model = WanTransformer::load(&weights(&dev)?, &cfg)?;
    let latents = Tensor::randn(0f32, 1f32, (1, 16, 2, 60, 104), &dev)?;
    let text = Tensor::randn(0f32, 1f32, (1, 512, TEXT), &dev)?;
    let t = Tensor::new(&[999f32], &dev)?;
    model.forward(&latents, &t, &text, None)?; // warm-up
    let mut ms = Vec::new();
    for _ in 0..repeats.max(1) {
        let t0 = Instant::now();
        model.forward(&latents, &t, &text, None)?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    Ok(serde_json::json!({
        "what": "one-layer Wan 2.1 1.3B-width transformer forward, 3120 video + 512 text tokens, f32",
        "threads": candle_core::utils::get_num_threads(),
        "median_ms": ms[ms.len() / 2],
        "all_ms": ms,
    }))
}

fn median(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(|a, b| a.total_cmp(b));
    ms[ms.len() / 2]
}

/// A rank-`r` adapter on every linear layer of block 0.
fn adapter(targets: &BTreeMap<String, (usize, usize)>, r: usize, dev: &Device) -> Result<Adapter> {
    let mut layers = BTreeMap::new();
    for (name, &(out, inp)) in targets.iter().filter(|(n, _)| n.starts_with("blocks.0.")) {
        layers.insert(
            name.clone(),
            LoraLayer {
                down: (Tensor::randn(0f32, 1f32, (r, inp), dev)? * 0.02)?,
                up: (Tensor::randn(0f32, 1f32, (out, r), dev)? * 0.02)?,
                scale: 1.0,
            },
        );
    }
    Ok(Adapter {
        name: format!("bench-r{r}"),
        layers,
        rank: r,
        bytes: 0,
        sha256: String::new(),
    })
}

pub fn run_lora(repeats: usize) -> Result<serde_json::Value> {
    let dev = Device::Cpu;
    let cfg: WanConfig = serde_json::from_value(serde_json::json!({
        "num_attention_heads": 12, "attention_head_dim": 128, "in_channels": 16,
        "out_channels": 16, "text_dim": TEXT, "ffn_dim": FFN, "num_layers": 1,
        "qk_norm": "rms_norm_across_heads", "cross_attn_norm": true
    }))?;
    let w = weights(&dev)?;
    let model = WanTransformer::load(&w, &cfg)?;
    let targets = w.linears();
    let latents = Tensor::randn(0f32, 1f32, (1, 16, 2, 60, 104), &dev)?;
    let text = Tensor::randn(0f32, 1f32, (1, 512, TEXT), &dev)?;
    let t = Tensor::new(&[999f32], &dev)?;
    let forward = |a: Option<&Arc<Adapter>>| -> Result<f64> {
        let rows = vec![a.map(|a| Applied {
            adapter: a.clone(),
            strength: 1.0,
        })];
        let t0 = Instant::now();
        lora::scoped(rows, || model.forward(&latents, &t, &text, None))?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    };
    let r16 = Arc::new(adapter(&targets, 16, &dev)?);
    let r64 = Arc::new(adapter(&targets, 64, &dev)?);
    forward(None)?; // warm-up
    let (mut base, mut a16, mut a64) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved, so drift in the machine's speed hits all three alike.
    for _ in 0..repeats.max(1) {
        base.push(forward(None)?);
        a16.push(forward(Some(&r16))?);
        a64.push(forward(Some(&r64))?);
    }
    // The alternative: W + s up down into every adapted layer (and the
    // same again to take it out), per batch that changes adapter.
    let originals: BTreeMap<String, Tensor> = r16
        .layers
        .keys()
        .map(|n| Ok((n.clone(), w.get_unchecked(&format!("{n}.weight"))?)))
        .collect::<Result<_>>()?;
    let mut merge = Vec::new();
    for _ in 0..repeats.max(1) {
        let t0 = Instant::now();
        let m = r16.merged(&originals, 1.0)?;
        std::hint::black_box(&m);
        merge.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let (b, s16, s64, mg) = (median(base), median(a16), median(a64), median(merge));
    Ok(serde_json::json!({
        "what": "one-layer Wan 2.1 1.3B-width forward (3120 video + 512 text tokens, f32) with a LoRA adapter on the block's 10 linear layers, applied as side products",
        "threads": candle_core::utils::get_num_threads(),
        "adapted_layers": r16.layers.len(),
        "base_ms": b,
        "rank16_ms": s16,
        "rank64_ms": s64,
        "rank16_over_base": s16 / b,
        "rank64_over_base": s64 / b,
        "merge_rank16_ms": mg,
    }))
}
