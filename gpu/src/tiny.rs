//! The built-in tiny LTX model: real architecture, toy sizes, weights drawn
//! from a fixed seed in code. It exists for demos and tests that need a whole
//! pipeline without a multi-gigabyte checkpoint.
//!
//! It is UNTRAINED: its videos are structured noise, not pictures of the
//! prompt. Everything that shows its output must say so (`Video::untrained`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{GpuError, Result};
use crate::pipeline::{LtxPipeline, TextEncoder, DEFAULT_MAX_TEXT_LEN};
use crate::rng::NoiseRng;
use crate::scheduler::SchedulerConfig;
use crate::t5::{T5Config, T5Encoder};
use crate::tokenizer::PromptTokenizer;
use crate::transformer::{LtxTransformer, TransformerConfig};
use crate::vae::{LtxVae, VaeConfig};
use crate::weights::{parse_config, Weights};

/// The seed every build uses: the tiny model is the same everywhere.
pub const TINY_SEED: u64 = 0x7469_6e79_6c74_7876; // "tinyltxv"

pub const TINY_NAME: &str = "builtin:tiny (UNTRAINED, seeded weights)";

pub fn transformer_json() -> serde_json::Value {
    serde_json::json!({
            "in_channels": 8, "out_channels": 8, "num_attention_heads": 4,
            "attention_head_dim": 8, "cross_attention_dim": 32, "num_layers": 2,
            "caption_channels": 32
    })
}

pub fn transformer_config() -> TransformerConfig {
    parse_config(transformer_json(), "tiny transformer").expect("static tiny config")
}

pub fn t5_json() -> serde_json::Value {
    serde_json::json!({
            "vocab_size": 259, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2,
            "num_heads": 4, "relative_attention_num_buckets": 32,
            "relative_attention_max_distance": 128, "feed_forward_proj": "gated-gelu",
            "layer_norm_epsilon": 1e-6
    })
}

pub fn t5_config() -> T5Config {
    parse_config(t5_json(), "tiny text encoder").expect("static tiny config")
}

pub fn vae_json() -> serde_json::Value {
    serde_json::json!({
            "block_out_channels": [8, 16, 16, 16],
            "decoder_block_out_channels": [8, 16, 16, 16],
            "layers_per_block": [1, 1, 1, 1, 1],
            "decoder_layers_per_block": [1, 1, 1, 1, 1],
            "spatio_temporal_scaling": [true, true, true, false],
            "decoder_spatio_temporal_scaling": [true, true, true, false],
            "decoder_inject_noise": [false, false, false, false, false],
            "upsample_residual": [false, false, false, false],
            "upsample_factor": [1, 1, 1, 1],
            "latent_channels": 8, "in_channels": 3, "out_channels": 3,
            "patch_size": 4, "patch_size_t": 1, "timestep_conditioning": false,
            "encoder_causal": true, "decoder_causal": false, "scaling_factor": 1.0
    })
}

pub fn vae_config() -> VaeConfig {
    parse_config(vae_json(), "tiny vae").expect("static tiny config")
}

fn name_hash(name: &str) -> u64 {
    // FNV-1a: a fixed, dependency-free name -> stream id map.
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Draws one tensor with a scale that keeps activations O(1) through the
/// network (fan-in scaling for matrices and convs, ~1 for norm gains).
/// Also the [`Weights::seeded`] draw of the built-in tiny Wan.
pub(crate) fn init_tensor(name: &str, shape: &[usize], seed: u64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut rng = NoiseRng::stream(seed, name_hash(name));
    let z = rng.normal_vec(n);
    let last = name.rsplit('.').next().unwrap_or("");
    let vals: Vec<f32> = if name.ends_with("timestep_scale_multiplier") {
        vec![1000.0; n]
    } else if name.ends_with("latents_std") {
        z.iter().map(|v| 1.0 + 0.1 * v.abs()).collect()
    } else if name.ends_with("latents_mean") {
        z.iter().map(|v| 0.1 * v).collect()
    } else if last == "bias" {
        z.iter().map(|v| 0.02 * v).collect()
    } else if shape.len() == 1 || last == "gamma" {
        // Norm gains (Wan's VAE keeps its RMS gains as `gamma` [C,1,1,1]).
        z.iter().map(|v| 1.0 + 0.1 * v).collect()
    } else if name.ends_with("scale_shift_table") {
        let d = *shape.last().unwrap_or(&1) as f32;
        z.iter().map(|v| v / d.sqrt()).collect()
    } else if name.ends_with("shared.weight") || name.ends_with("embed_tokens.weight") {
        z
    } else if name.ends_with("relative_attention_bias.weight") {
        z.iter().map(|v| 0.1 * v).collect()
    } else {
        let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
        let s = 1.0 / (fan_in as f32).sqrt();
        z.iter().map(|v| v * s).collect()
    };
    Ok(Tensor::from_vec(vals, shape, &Device::Cpu)?)
}

/// Seeded weights for any list of (name, shape).
pub fn seeded_weights(shapes: &[(String, Vec<usize>)], seed: u64, desc: &str) -> Result<Weights> {
    let mut m = HashMap::new();
    for (name, shape) in shapes {
        m.insert(name.clone(), init_tensor(name, shape, seed)?);
    }
    Ok(Weights::from_tensors(m, desc))
}

/// The built-in tiny pipeline (byte-level tokenizer, seeded weights).
pub fn pipeline() -> Result<LtxPipeline> {
    let tc = transformer_config();
    let vc = vae_config();
    let ec = t5_config();
    let tw = seeded_weights(&tc.tensor_shapes(), TINY_SEED, "builtin tiny transformer")?;
    let vw = seeded_weights(
        &crate::vae::expected_tensor_shapes(&vc),
        TINY_SEED,
        "builtin tiny vae",
    )?;
    let ew = seeded_weights(
        &crate::t5::expected_tensor_shapes(&ec),
        TINY_SEED,
        "builtin tiny text encoder",
    )?;
    let p = LtxPipeline {
        transformer: LtxTransformer::load(&tw, &tc)?,
        vae: LtxVae::load(&vw, &vc)?,
        text: TextEncoder {
            tokenizer: PromptTokenizer::byte_level(),
            encoder: T5Encoder::load(&ew, &ec)?,
            max_len: DEFAULT_MAX_TEXT_LEN,
        },
        scheduler: SchedulerConfig::default(),
        untrained: true,
        name: TINY_NAME.into(),
        device: Device::Cpu,
        decode_budget_bytes: crate::vae::DEFAULT_DECODE_BUDGET_BYTES,
        lora_targets: std::sync::Arc::new(tw.linears()),
    };
    p.check_compatible()?;
    Ok(p)
}

/// Creates a folder of an exported checkpoint.
pub(crate) fn create_dir(d: &Path) -> Result<()> {
    std::fs::create_dir_all(d).map_err(|source| GpuError::Io {
        path: d.to_path_buf(),
        source,
    })
}

/// Writes one JSON file of an exported checkpoint.
pub(crate) fn write_json(p: &Path, v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| GpuError::config(p.display().to_string(), e.to_string()))?;
    std::fs::write(p, text).map_err(|source| GpuError::Io {
        path: p.to_path_buf(),
        source,
    })
}

/// The `tokenizer/` folder of an exported tiny model: the ByT5 marker that
/// is the whole byte-level tokenizer.
pub(crate) fn write_byte_tokenizer(dir: &Path) -> Result<()> {
    let tk = dir.join("tokenizer");
    create_dir(&tk)?;
    write_json(
        &tk.join("tokenizer_config.json"),
        &serde_json::json!({"tokenizer_class": "ByT5Tokenizer"}),
    )
}

/// Writes the tiny model as a diffusers-format checkpoint directory, so the
/// file-loading path (configs, safetensors, tokenizer marker) can be
/// exercised end to end and corrupted on purpose in tests.
pub fn write_checkpoint(dir: &Path) -> Result<()> {
    let comps: [(&str, serde_json::Value, Vec<(String, Vec<usize>)>, &str); 3] = [
        (
            "transformer",
            transformer_json(),
            transformer_config().tensor_shapes(),
            "diffusion_pytorch_model.safetensors",
        ),
        (
            "vae",
            vae_json(),
            crate::vae::expected_tensor_shapes(&vae_config()),
            "diffusion_pytorch_model.safetensors",
        ),
        (
            "text_encoder",
            t5_json(),
            crate::t5::expected_tensor_shapes(&t5_config()),
            "model.safetensors",
        ),
    ];
    for (name, cfg, shapes, file) in comps {
        let d = dir.join(name);
        create_dir(&d)?;
        write_json(&d.join("config.json"), &cfg)?;
        let mut m = HashMap::new();
        for (n, s) in &shapes {
            m.insert(n.clone(), init_tensor(n, s, TINY_SEED)?);
        }
        candle_core::safetensors::save(&m, d.join(file))?;
    }
    write_byte_tokenizer(dir)?;
    let sc = dir.join("scheduler");
    create_dir(&sc)?;
    write_json(
        &sc.join("scheduler_config.json"),
        &serde_json::to_value(SchedulerConfig::default()).unwrap_or_default(),
    )?;
    write_json(
        &dir.join("model_index.json"),
        &serde_json::json!({
            "_class_name": "LTXPipeline",
            "_vidflow_note": "built-in tiny model, UNTRAINED seeded weights",
            "_vidflow_untrained": true
        }),
    )?;
    Ok(())
}
