//! Checkpoint inspection and the VRAM estimate used by admission.
//!
//! `inspect_dir` reads only configs and safetensors headers (no weights), so
//! it is instant even for a 20 GB checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::Result;
use crate::transformer::TransformerConfig;
use crate::vae::VaeConfig;
use crate::weights::{read_config, Weights};

/// One component folder.
#[derive(Debug, Clone)]
pub struct ComponentInfo {
    pub name: String,
    pub params: u64,
    /// Parameter count per on-disk dtype.
    pub dtypes: BTreeMap<String, u64>,
    /// Bytes of tensor data on disk.
    pub bytes: u64,
    pub tensors: usize,
}

#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    pub components: Vec<ComponentInfo>,
    pub transformer: Option<TransformerConfig>,
    pub vae: Option<VaeConfig>,
    pub text_encoder_present: bool,
    pub tokenizer: String,
}

fn dtype_bytes(d: &str) -> u64 {
    match d {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        _ => 1,
    }
}

/// Summarises a weight set (any source).
pub fn summarize(name: &str, w: &Weights) -> ComponentInfo {
    let mut info = ComponentInfo {
        name: name.to_string(),
        params: 0,
        dtypes: BTreeMap::new(),
        bytes: 0,
        tensors: 0,
    };
    for m in w.metas() {
        let n: u64 = m.shape.iter().map(|d| *d as u64).product();
        info.params += n;
        info.bytes += n * dtype_bytes(&m.dtype);
        *info.dtypes.entry(m.dtype).or_default() += n;
        info.tensors += 1;
    }
    info
}

/// Reads a diffusers-format checkpoint directory's configs and headers.
pub fn inspect_dir(dir: &Path) -> Result<CheckpointInfo> {
    let mut components = Vec::new();
    for name in ["transformer", "vae", "text_encoder"] {
        let d = dir.join(name);
        if d.is_dir() {
            components.push(summarize(name, &Weights::from_dir(&d)?));
        }
    }
    let tp = dir.join("transformer").join("config.json");
    let vp = dir.join("vae").join("config.json");
    let tk = dir.join("tokenizer");
    let tokenizer = if tk.join("tokenizer.json").is_file() {
        "tokenizer.json".to_string()
    } else if tk.join("spiece.model").is_file() {
        "spiece.model only (needs tokenizer.json)".to_string()
    } else if tk.join("tokenizer_config.json").is_file() {
        "tokenizer_config.json".to_string()
    } else {
        "missing".to_string()
    };
    Ok(CheckpointInfo {
        components,
        transformer: if tp.exists() {
            Some(read_config(&tp)?)
        } else {
            None
        },
        vae: if vp.exists() {
            Some(read_config(&vp)?)
        } else {
            None
        },
        text_encoder_present: dir.join("text_encoder").is_dir(),
        tokenizer,
    })
}

/// The VRAM a generation needs, by part. An estimate: it counts the large
/// tensors each stage holds at once and adds no allocator slack.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VramEstimate {
    /// Transformer + VAE (+ text encoder when co-resident) weights.
    pub weights_bytes: u64,
    /// The latent video: frames/t x H/s x W/s x channels, per batch item.
    pub latent_bytes: u64,
    /// Peak activations of one transformer forward (CFG batch included).
    pub transformer_workspace_bytes: u64,
    /// Peak activations of the VAE decode.
    pub vae_workspace_bytes: u64,
    pub total_bytes: u64,
}

impl VramEstimate {
    /// The parts, and their total: weights and latents stay resident, the
    /// transformer's and the VAE's workspaces are not alive together.
    fn new(weights: u64, latent: u64, transformer: u64, vae: u64) -> VramEstimate {
        VramEstimate {
            weights_bytes: weights,
            latent_bytes: latent,
            transformer_workspace_bytes: transformer,
            vae_workspace_bytes: vae,
            total_bytes: weights + latent + transformer.max(vae),
        }
    }
}

/// Shape of a generation for the estimate.
#[derive(Debug, Clone, Copy)]
pub struct EstimateInput {
    pub width: usize,
    pub height: usize,
    pub frames: usize,
    /// Bytes per activation element (4 f32, 2 bf16).
    pub act_bytes: u64,
    /// 2 with classifier-free guidance.
    pub cfg_batch: u64,
    pub text_len: usize,
}

/// Attention score elements our CPU path materialises at most per chunk
/// (see `transformer::MAX_SCORE_ELEMS`); a flash kernel needs none.
const SCORE_CHUNK_ELEMS: u64 = 1 << 26;

pub fn estimate_vram(
    t: &TransformerConfig,
    v: &VaeConfig,
    weights_bytes: u64,
    x: &EstimateInput,
) -> VramEstimate {
    let s = v.spatial_compression().max(1);
    let tc = v.temporal_compression().max(1);
    let lf = (x.frames.saturating_sub(1) / tc + 1) as u64;
    let (lh, lw) = ((x.height / s) as u64, (x.width / s) as u64);
    let tokens = lf * lh * lw;
    let latent_bytes = tokens * v.latent_channels as u64 * 4; // latents stay f32
    let d = t.inner_dim() as u64;
    let b = x.cfg_batch.max(1);
    // Live at once in one block: residual, normed copy, q/k/v, attention out,
    // FF hidden (4D) and its activation (4D), plus the text K/V of all layers.
    let per_token = 15 * d;
    let scores = (b * t.num_attention_heads as u64 * tokens * tokens).min(SCORE_CHUNK_ELEMS) * 2;
    let text_kv = t.num_layers as u64 * 2 * b * x.text_len as u64 * d;
    let transformer_workspace_bytes = (b * tokens * per_token + scores + text_kv) * x.act_bytes;
    // Decoder: the finest level's activations and its convolution's im2col
    // buffer, for the tile the runtime will decode (a clip over the decode
    // budget is tiled, see `vae::DecodeTiling`).
    let latent = (lf as usize, lh as usize, lw as usize);
    let t = crate::vae::DecodeTiling::plan(
        v,
        latent,
        x.act_bytes,
        crate::vae::DEFAULT_DECODE_BUDGET_BYTES,
    );
    let tile = (
        t.tile_frames.min(latent.0),
        t.tile.min(latent.1),
        t.tile.min(latent.2),
    );
    let vae_workspace_bytes = crate::vae::decode_workspace_bytes(v, tile, x.act_bytes);
    VramEstimate::new(
        weights_bytes,
        latent_bytes,
        transformer_workspace_bytes,
        vae_workspace_bytes,
    )
}

/// Wan 2.1's VRAM estimate, the same parts as [`estimate_vram`]'s: the
/// latents with UniPC's history (three more latent-sized tensors) and, for
/// image-to-video, the condition channels; one transformer forward over its
/// 1x2x2 patches with 512 text tokens; and the VAE decode, which runs one
/// latent frame (four output frames) at a time, its peak the finest level's
/// causal 3x3x3 convolution with its unfolded input.
pub fn estimate_vram_wan(
    t: &crate::wan::WanConfig,
    v: &crate::wan::WanVaeConfig,
    weights_bytes: u64,
    x: &EstimateInput,
) -> VramEstimate {
    use crate::wan::serve::{SPATIAL, TEMPORAL};
    let lf = (x.frames.saturating_sub(1) / TEMPORAL + 1) as u64;
    let (lh, lw) = ((x.height / SPATIAL) as u64, (x.width / SPATIAL) as u64);
    let [pt, ph, pw] = t.patch_size.map(|p| p.max(1) as u64);
    let tokens = (lf / pt).max(1) * (lh / ph).max(1) * (lw / pw).max(1);
    let cells = lf * lh * lw;
    let latent_bytes = cells * (4 * v.z_dim as u64 + (t.in_channels - v.z_dim) as u64) * 4;
    let d = t.dim() as u64;
    let b = x.cfg_batch.max(1);
    // Residual, normed copy, q/k/v, attention out (6D) and the FF hidden
    // with its activation (2 x ffn_dim).
    let per_token = 6 * d + 2 * t.ffn_dim as u64;
    let scores = (b * t.num_attention_heads as u64 * tokens * tokens).min(SCORE_CHUNK_ELEMS) * 2;
    let text_kv = t.num_layers as u64 * 2 * b * crate::wan::transformer::TEXT_LEN as u64 * d;
    let transformer_workspace_bytes = (b * tokens * per_token + scores + text_kv) * x.act_bytes;
    let c = v.decoder_base_dim.unwrap_or(v.base_dim) as u64
        * v.dim_mult.first().copied().unwrap_or(1) as u64;
    let pixels = (x.height * x.width) as u64 * TEMPORAL as u64;
    let vae_workspace_bytes = pixels * c * (27 + 2) * x.act_bytes;
    VramEstimate::new(
        weights_bytes,
        latent_bytes,
        transformer_workspace_bytes,
        vae_workspace_bytes,
    )
}
