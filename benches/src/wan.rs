//! `--suite wan`: one forward of a one-layer Wan 2.1 transformer at the
//! 1.3B model's widths (12 heads x 128, FFN 8960, UMT5 text 4096) on a
//! 480p-sized latent of two frames (3,120 tokens) and 512 text tokens, with
//! seeded random weights: the Rust side of `benches/run_wan.sh`, whose
//! PyTorch side runs diffusers' `WanTransformer3DModel` at the same shapes.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
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
