//! The CLIP vision encoder Wan 2.1's image-to-video models condition on
//! (transformers' `CLIPVisionModelWithProjection`, open-clip ViT-H/14 in the
//! public checkpoints): patches plus a class token, learned positions, a
//! LayerNorm before the stack, pre-norm layers with biased attention and an
//! MLP. Wan reads the second-to-last layer's output, before any final norm;
//! the pooled, projected embedding is kept for checks.

use candle_core::{DType, Tensor};
use serde::Deserialize;

use crate::error::{GpuError, Result};
use crate::nn::{AffineNorm, Linear};
use crate::weights::Weights;

/// transformers' `CLIPVisionConfig` fields the encoder uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "three")]
    pub num_channels: usize,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    /// `"gelu"` (exact, ViT-H/14) or `"quick_gelu"` (OpenAI CLIP).
    #[serde(default = "gelu")]
    pub hidden_act: String,
    #[serde(default)]
    pub projection_dim: Option<usize>,
}

fn three() -> usize {
    3
}
fn eps() -> f64 {
    1e-5
}
fn gelu() -> String {
    "gelu".into()
}

struct Layer {
    ln1: AffineNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: AffineNorm,
    fc1: Linear,
    fc2: Linear,
}

/// What one forward pass gives.
pub struct ClipVisionOutput {
    /// `[B, 1 + patches, D]`: the second-to-last layer's output (Wan's
    /// image conditioning).
    pub penultimate: Tensor,
    /// `[B, 1 + patches, D]`: the last layer's output.
    pub last: Tensor,
    /// `[B, projection_dim]`: the final-normed class token, projected.
    pub image_embeds: Option<Tensor>,
}

pub struct ClipVisionEncoder {
    pub config: ClipVisionConfig,
    class: Tensor,
    patch: Tensor,
    positions: Tensor,
    pre_ln: AffineNorm,
    layers: Vec<Layer>,
    post_ln: AffineNorm,
    projection: Option<Linear>,
    quick_gelu: bool,
}

impl ClipVisionEncoder {
    /// Loads from transformers' names (`vision_model.*`, `visual_projection`).
    pub fn load(w: &Weights, cfg: &ClipVisionConfig) -> Result<Self> {
        let quick_gelu = match cfg.hidden_act.as_str() {
            "gelu" => false,
            "quick_gelu" => true,
            other => {
                return Err(GpuError::config(
                    "clip vision config",
                    format!("hidden_act {other:?} (gelu or quick_gelu)"),
                ))
            }
        };
        if cfg.patch_size == 0
            || cfg.image_size % cfg.patch_size != 0
            || cfg.num_attention_heads == 0
            || cfg.hidden_size % cfg.num_attention_heads != 0
        {
            return Err(GpuError::config(
                "clip vision config",
                format!(
                    "image_size {} / patch_size {}, hidden_size {} / heads {} must divide",
                    cfg.image_size, cfg.patch_size, cfg.hidden_size, cfg.num_attention_heads
                ),
            ));
        }
        let (d, f, p, c) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.patch_size,
            cfg.num_channels,
        );
        let tokens = (cfg.image_size / p).pow(2) + 1;
        let v = w.pp("vision_model");
        let e = v.pp("embeddings");
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = v.pp(format!("encoder.layers.{i}"));
            let a = l.pp("self_attn");
            layers.push(Layer {
                ln1: AffineNorm::load(&l, "layer_norm1", d)?,
                q: Linear::load(&a, "q_proj", d, d, true)?,
                k: Linear::load(&a, "k_proj", d, d, true)?,
                v: Linear::load(&a, "v_proj", d, d, true)?,
                o: Linear::load(&a, "out_proj", d, d, true)?,
                ln2: AffineNorm::load(&l, "layer_norm2", d)?,
                fc1: Linear::load(&l.pp("mlp"), "fc1", d, f, true)?,
                fc2: Linear::load(&l.pp("mlp"), "fc2", f, d, true)?,
            });
        }
        let projection = match cfg.projection_dim {
            Some(pd) if w.contains("visual_projection.weight") => {
                Some(Linear::load(w, "visual_projection", d, pd, false)?)
            }
            _ => None,
        };
        Ok(ClipVisionEncoder {
            class: e.get("class_embedding", &[d])?,
            patch: e.get("patch_embedding.weight", &[d, c, p, p])?,
            positions: e.get("position_embedding.weight", &[tokens, d])?,
            pre_ln: AffineNorm::load(&v, "pre_layrnorm", d)?,
            post_ln: AffineNorm::load(&v, "post_layernorm", d)?,
            layers,
            projection,
            quick_gelu,
            config: cfg.clone(),
        })
    }

    fn attention(&self, l: &Layer, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let h = self.config.num_attention_heads;
        let hd = d / h;
        let heads = |y: Tensor| -> Result<Tensor> {
            Ok(y.reshape((b, t, h, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = heads(l.q.forward_f32(x)?.affine((hd as f64).powf(-0.5), 0.0)?)?;
        let k = heads(l.k.forward_f32(x)?)?;
        let v = heads(l.v.forward_f32(x)?)?;
        let scores = q.matmul(&k.t()?.contiguous()?)?;
        let probs = crate::kernels::softmax_last_dim(&scores)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, d))?;
        l.o.forward_f32(&ctx)
    }

    fn mlp(&self, l: &Layer, x: &Tensor) -> Result<Tensor> {
        let hdn = l.fc1.forward_f32(x)?;
        let hdn = if self.quick_gelu {
            (&hdn * candle_nn::ops::sigmoid(&hdn.affine(1.702, 0.0)?)?)?
        } else {
            hdn.gelu_erf()?
        };
        l.fc2.forward_f32(&hdn)
    }

    /// `[B, C, S, S]` CLIP-normalised pixels (S = `image_size`) -> the
    /// penultimate and last layers' outputs and the projected embedding.
    pub fn forward(&self, pixels: &Tensor) -> Result<ClipVisionOutput> {
        let cfg = &self.config;
        let (c, s) = (cfg.num_channels, cfg.image_size);
        if pixels.rank() != 4 || pixels.dims()[1..] != [c, s, s] {
            return Err(GpuError::invalid(
                "pixel_values",
                format!("shape {:?}, expected [batch, {c}, {s}, {s}]", pixels.dims()),
            ));
        }
        if self.layers.len() < 2 {
            return Err(GpuError::config(
                "clip vision config",
                "Wan reads the second-to-last layer: at least 2 layers",
            ));
        }
        let b = pixels.dim(0)?;
        let d = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        // Patches: a stride-p convolution without bias, then [B, N, D].
        let wt = crate::wan::vae::conv_weight(&self.patch)?;
        let px = pixels.to_dtype(wt.dtype())?;
        let patches = px
            .conv2d(&wt, 0, cfg.patch_size, 1, 1)?
            .flatten_from(2)?
            .transpose(1, 2)?
            .to_dtype(DType::F32)?;
        let class = self
            .class
            .to_dtype(DType::F32)?
            .reshape((1, 1, d))?
            .broadcast_as((b, 1, d))?
            .contiguous()?;
        let x = Tensor::cat(&[&class, &patches], 1)?
            .broadcast_add(&self.positions.to_dtype(DType::F32)?.unsqueeze(0)?)?;
        let mut x = self.pre_ln.forward(&x, eps)?;
        let mut penultimate = None;
        let n = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            let a = self.attention(l, &l.ln1.forward(&x, eps)?)?;
            x = (x + a)?;
            let m = self.mlp(l, &l.ln2.forward(&x, eps)?)?;
            x = (x + m)?;
            if i + 2 == n {
                penultimate = Some(x.clone());
            }
        }
        let image_embeds = match &self.projection {
            Some(p) => {
                let pooled = self.post_ln.forward(&x.narrow(1, 0, 1)?.squeeze(1)?, eps)?;
                Some(p.forward_f32(&pooled)?)
            }
            None => None,
        };
        let penultimate = penultimate
            .ok_or_else(|| GpuError::config("clip vision config", "no second-to-last layer"))?;
        Ok(ClipVisionOutput {
            penultimate,
            last: x,
            image_embeds,
        })
    }
}
