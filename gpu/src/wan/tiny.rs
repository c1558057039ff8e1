//! The built-in tiny Wan 2.1 models (text-to-video and image-to-video):
//! the real architectures at toy sizes, weights drawn from a fixed seed as
//! the loaders ask for them ([`Weights::seeded`]), so no list of tensor
//! names is kept apart from the loaders.
//!
//! They are UNTRAINED: their videos are structured noise, not pictures of
//! the prompt. Everything that shows their output says so
//! (`Video::untrained`).

use candle_core::Device;

use super::serve::WanPipeline;
use super::{WanConfig, WanTransformer, WanVae, WanVaeConfig};
use crate::clip::{ClipVisionConfig, ClipVisionEncoder};
use crate::error::Result;
use crate::pipeline::TextEncoder;
use crate::t5::{T5Config, T5Encoder};
use crate::tokenizer::PromptTokenizer;
use crate::unipc::UniPcConfig;
use crate::weights::{parse_config, Weights};

/// The seed every build uses: the tiny Wan is the same everywhere.
pub const TINY_WAN_SEED: u64 = 0x7469_6e79_7761_6e21; // "tinywan!"

pub const TINY_WAN_NAME: &str = "builtin:wan-tiny (UNTRAINED, seeded weights)";
pub const TINY_WAN_I2V_NAME: &str = "builtin:wan-tiny-i2v (UNTRAINED, seeded weights)";

/// Latent channels of the tiny VAE.
const Z: usize = 4;
/// Width of the tiny CLIP tower (the I2V transformer's `image_dim`).
const CLIP_DIM: usize = 32;

/// `transformer/config.json` of the tiny model; `i2v` adds the image
/// cross-attention and the condition channels.
pub fn transformer_json(i2v: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "patch_size": [1, 2, 2], "num_attention_heads": 2, "attention_head_dim": 12,
        "in_channels": Z, "out_channels": Z, "text_dim": 32, "freq_dim": 256,
        "ffn_dim": 48, "num_layers": 2, "cross_attn_norm": true,
        "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024
    });
    if i2v {
        v["in_channels"] = serde_json::json!(2 * Z + 4);
        v["image_dim"] = serde_json::json!(CLIP_DIM);
        v["added_kv_proj_dim"] = serde_json::json!(24);
    }
    v
}

pub fn transformer_config(i2v: bool) -> WanConfig {
    parse_config(transformer_json(i2v), "tiny wan transformer").expect("static tiny config")
}

pub fn vae_json() -> serde_json::Value {
    serde_json::json!({
        "base_dim": 8, "z_dim": Z, "dim_mult": [1, 2, 2, 2], "num_res_blocks": 1,
        "attn_scales": [], "temperal_downsample": [false, true, true],
        "latents_mean": [0.05, -0.1, 0.0, 0.08], "latents_std": [1.1, 0.9, 1.0, 1.2]
    })
}

pub fn vae_config() -> WanVaeConfig {
    parse_config(vae_json(), "tiny wan vae").expect("static tiny config")
}

/// UMT5 at toy size (per-layer position bias, as Wan's encoder has).
pub fn text_json() -> serde_json::Value {
    serde_json::json!({
        "vocab_size": 259, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2,
        "num_heads": 4, "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128, "feed_forward_proj": "gated-gelu",
        "layer_norm_epsilon": 1e-6, "model_type": "umt5"
    })
}

pub fn text_config() -> T5Config {
    parse_config(text_json(), "tiny wan text encoder").expect("static tiny config")
}

pub fn clip_json() -> serde_json::Value {
    serde_json::json!({
        "hidden_size": CLIP_DIM, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "image_size": 32, "patch_size": 8, "hidden_act": "gelu"
    })
}

pub fn clip_config() -> ClipVisionConfig {
    parse_config(clip_json(), "tiny wan image encoder").expect("static tiny config")
}

/// The sampler: Wan's UniPC defaults (shift 3, as for 480p).
pub fn sampler_config() -> UniPcConfig {
    UniPcConfig::default()
}

/// The tiny transformer's weights, drawn as its loader asks for them (the
/// same tensors [`pipeline`] loads).
pub fn transformer_weights() -> Weights {
    Weights::seeded(
        crate::tiny::init_tensor,
        TINY_WAN_SEED,
        "builtin tiny wan transformer",
    )
}

/// The built-in tiny Wan (byte-level tokenizer, seeded weights), and the
/// number of parameters it drew.
pub fn pipeline(i2v: bool) -> Result<(WanPipeline, u64)> {
    let w = |part: &str| {
        Weights::seeded(
            crate::tiny::init_tensor,
            TINY_WAN_SEED,
            &format!("builtin tiny wan {part}"),
        )
    };
    let (tw, vw, ew, cw) = (
        w("transformer"),
        w("vae"),
        w("text encoder"),
        w("image encoder"),
    );
    let transformer = WanTransformer::load(&tw, &transformer_config(i2v))?;
    let vae = WanVae::load(&vw, &vae_config())?;
    let encoder = T5Encoder::load(&ew, &text_config())?;
    let clip = if i2v {
        Some(ClipVisionEncoder::load(&cw, &clip_config())?)
    } else {
        None
    };
    let params = [&tw, &vw, &ew, &cw]
        .iter()
        .flat_map(|w| w.metas())
        .map(|m| m.shape.iter().product::<usize>() as u64)
        .sum();
    let p = WanPipeline {
        transformer,
        vae,
        text: TextEncoder {
            tokenizer: PromptTokenizer::byte_level(),
            encoder,
            max_len: super::transformer::TEXT_LEN,
        },
        clip,
        sampler: sampler_config(),
        untrained: true,
        name: if i2v {
            TINY_WAN_I2V_NAME
        } else {
            TINY_WAN_NAME
        }
        .into(),
        device: Device::Cpu,
        lora_targets: std::sync::Arc::new(tw.linears()),
    };
    Ok((p, params))
}

/// Writes the tiny Wan as a diffusers-format checkpoint directory
/// (`transformer/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`,
/// and `image_encoder/` for I2V), so the file-loading path
/// ([`WanPipeline::from_dir_on`]) can be exercised end to end.
pub fn write_checkpoint(dir: &std::path::Path, i2v: bool) -> Result<()> {
    use crate::tiny::{create_dir, write_byte_tokenizer, write_json};
    let seeded = || Weights::seeded(crate::tiny::init_tensor, TINY_WAN_SEED, "tiny wan");
    let mut comps: Vec<(&str, serde_json::Value, Weights, &str)> = Vec::new();
    let tw = seeded();
    WanTransformer::load(&tw, &transformer_config(i2v))?;
    comps.push((
        "transformer",
        transformer_json(i2v),
        tw,
        "diffusion_pytorch_model.safetensors",
    ));
    let vw = seeded();
    WanVae::load(&vw, &vae_config())?;
    comps.push(("vae", vae_json(), vw, "diffusion_pytorch_model.safetensors"));
    let ew = seeded();
    T5Encoder::load(&ew, &text_config())?;
    comps.push(("text_encoder", text_json(), ew, "model.safetensors"));
    if i2v {
        let cw = seeded();
        ClipVisionEncoder::load(&cw, &clip_config())?;
        comps.push(("image_encoder", clip_json(), cw, "model.safetensors"));
    }
    for (name, cfg, w, file) in comps {
        let d = dir.join(name);
        create_dir(&d)?;
        write_json(&d.join("config.json"), &cfg)?;
        let mut m = std::collections::HashMap::new();
        for meta in w.metas() {
            m.insert(meta.name.clone(), w.get(&meta.name, &meta.shape)?);
        }
        candle_core::safetensors::save(&m, d.join(file))?;
    }
    write_byte_tokenizer(dir)?;
    let sc = dir.join("scheduler");
    create_dir(&sc)?;
    write_json(
        &sc.join("scheduler_config.json"),
        &serde_json::json!({
            "_class_name": "UniPCMultistepScheduler", "flow_shift": 3.0,
            "prediction_type": "flow_prediction", "use_flow_sigmas": true
        }),
    )?;
    write_json(
        &dir.join("model_index.json"),
        &serde_json::json!({
            "_class_name": if i2v { "WanImageToVideoPipeline" } else { "WanPipeline" },
            "_vidflow_note": "built-in tiny Wan, UNTRAINED seeded weights",
            "_vidflow_untrained": true
        }),
    )?;
    Ok(())
}
