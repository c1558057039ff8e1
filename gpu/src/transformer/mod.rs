//! The LTX-Video transformer (diffusers `LTXVideoTransformer3DModel`): a DiT
//! over patch-1 video tokens with adaLN-single time modulation, 3D RoPE on
//! self-attention, and cross-attention to projected T5 states.
//!
//! Text conditioning is prepared once per job (`prepare_text`): the caption
//! projection and every layer's cross-attention keys and values do not change
//! across denoising steps, so recomputing them each step would be waste.

use candle_core::{DType, Tensor};

use crate::error::{GpuError, Result};
use crate::kernels::{self, ada_norm, qk_norm_rope, NormKind};
use crate::nn::{rms_norm, Linear, TimestepEmbedder};
use crate::weights::Weights;

mod config;
mod rope;

pub use config::TransformerConfig;
pub use rope::{rope_tables, rope_tables_for, LatentGrid, Positions, TokenCoords};

struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    norm_q: Tensor,
    norm_k: Tensor,
}

/// RMSNorm on q/k spans all heads together ("across heads"), eps fixed by the
/// reference at 1e-5 regardless of the config's norm_eps.
const QK_NORM_EPS: f64 = 1e-5;

impl Attention {
    fn load(w: &Weights, d: usize, kv_in: usize, cfg: &TransformerConfig) -> Result<Self> {
        Ok(Attention {
            to_q: Linear::load(w, "to_q", d, d, cfg.attention_bias)?,
            to_k: Linear::load(w, "to_k", kv_in, d, cfg.attention_bias)?,
            to_v: Linear::load(w, "to_v", kv_in, d, cfg.attention_bias)?,
            to_out: Linear::load(w, "to_out.0", d, d, cfg.attention_out_bias)?,
            norm_q: w.get("norm_q.weight", &[d])?,
            norm_k: w.get("norm_k.weight", &[d])?,
        })
    }

    fn keys_values(&self, ctx: &Tensor, heads: usize) -> Result<(Tensor, Tensor)> {
        let k = rms_norm(&self.to_k.forward(ctx)?, Some(&self.norm_k), QK_NORM_EPS)?;
        let v = self.to_v.forward(ctx)?;
        Ok((split_heads(&k, heads)?, split_heads(&v, heads)?))
    }
}

/// `[B,S,D]` -> `[B,H,S,D/H]`, contiguous.
fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, s, d) = x.dims3()?;
    Ok(x.reshape((b, s, heads, d / heads))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// `[B,S,H*dh]` -> the per-head view `[B,H,S,dh]`, no copy: the attention
/// kernels read strided heads directly.
fn heads_view(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, s, d) = x.dims3()?;
    Ok(x.reshape((b, s, heads, d / heads))?.transpose(1, 2)?)
}

struct Block {
    attn1: Attention,
    attn2: Attention,
    ff_in: Linear,
    ff_out: Linear,
    table: Tensor,
}

/// Per-job (or per-batch) text conditioning, computed once and reused across
/// denoising steps.
pub struct TextCond {
    /// Cross-attention keys/values per layer, `[B,H,L,dh]`.
    kv: Vec<(Tensor, Tensor)>,
    /// Additive key bias `[B,1,1,L]`: 0 keep, -10000 pad.
    bias: Tensor,
    batch: usize,
}

impl TextCond {
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Concatenates conditionings along the batch (for CFG and cross-job
    /// batching). All must come from the same model and text length.
    pub fn cat(parts: &[&TextCond]) -> Result<TextCond> {
        let layers = parts.first().map(|p| p.kv.len()).unwrap_or(0);
        let mut kv = Vec::with_capacity(layers);
        for l in 0..layers {
            let ks: Vec<&Tensor> = parts.iter().map(|p| &p.kv[l].0).collect();
            let vs: Vec<&Tensor> = parts.iter().map(|p| &p.kv[l].1).collect();
            kv.push((Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?));
        }
        let bs: Vec<&Tensor> = parts.iter().map(|p| &p.bias).collect();
        Ok(TextCond {
            kv,
            bias: Tensor::cat(&bs, 0)?,
            batch: parts.iter().map(|p| p.batch).sum(),
        })
    }
}

pub struct LtxTransformer {
    pub config: TransformerConfig,
    proj_in: Linear,
    proj_out: Linear,
    table_out: Tensor,
    t_embedder: TimestepEmbedder,
    t_linear: Linear,
    cap1: Linear,
    cap2: Linear,
    blocks: Vec<Block>,
    /// The last grid's RoPE tables: every step of a job (and every job at
    /// that resolution) uses the same ones, and building them is S*D sin/cos
    /// on the host plus an upload (~100 MB at 6144 tokens, 2048 wide).
    rope_cache: std::sync::Mutex<Option<RopeEntry>>,
}

/// What a RoPE table was built for: a grid, or hashed explicit coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RopeKey {
    Grid(usize, usize, usize, [u64; 3]),
    Coords(usize, u64),
}

struct RopeEntry {
    key: RopeKey,
    device: candle_core::Device,
    cos: Tensor,
    sin: Tensor,
}

impl LtxTransformer {
    pub fn load(w: &Weights, cfg: &TransformerConfig) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.inner_dim();
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let bw = w.pp(format!("transformer_blocks.{i}"));
            blocks.push(Block {
                attn1: Attention::load(&bw.pp("attn1"), d, d, cfg)?,
                attn2: Attention::load(&bw.pp("attn2"), d, cfg.cross_attention_dim, cfg)?,
                ff_in: Linear::load(&bw, "ff.net.0.proj", d, 4 * d, true)?,
                ff_out: Linear::load(&bw, "ff.net.2", 4 * d, d, true)?,
                table: bw.get("scale_shift_table", &[6, d])?,
            });
        }
        if cfg.cross_attention_dim != d {
            // The caption projection outputs width D, which attn2 consumes.
            return Err(GpuError::config(
                "transformer config",
                format!(
                    "`cross_attention_dim` {} must equal num_attention_heads*attention_head_dim {d}",
                    cfg.cross_attention_dim
                ),
            ));
        }
        Ok(LtxTransformer {
            config: cfg.clone(),
            proj_in: Linear::load(w, "proj_in", cfg.in_channels, d, true)?,
            proj_out: Linear::load(w, "proj_out", d, cfg.out_channels, true)?,
            table_out: w.get("scale_shift_table", &[2, d])?,
            t_embedder: TimestepEmbedder::load(&w.pp("time_embed.emb.timestep_embedder"), d)?,
            t_linear: Linear::load(w, "time_embed.linear", d, 6 * d, true)?,
            cap1: Linear::load(
                w,
                "caption_projection.linear_1",
                cfg.caption_channels,
                d,
                true,
            )?,
            cap2: Linear::load(w, "caption_projection.linear_2", d, d, true)?,
            blocks,
            rope_cache: std::sync::Mutex::new(None),
        })
    }

    /// RoPE tables for the grid, from the one-entry cache when it matches.
    fn rope(&self, pos: Positions, device: &candle_core::Device) -> Result<(Tensor, Tensor)> {
        let key = match pos {
            Positions::Grid(grid) => RopeKey::Grid(
                grid.frames,
                grid.height,
                grid.width,
                grid.rope_scale.map(f64::to_bits),
            ),
            Positions::Coords(c) => RopeKey::Coords(c.len(), c.key()),
        };
        let mut slot = self.rope_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = slot.as_ref() {
            if e.key == key && e.device.same_device(device) {
                return Ok((e.cos.clone(), e.sin.clone()));
            }
        }
        let (cos, sin) = match pos {
            Positions::Grid(grid) => rope_tables(self.config.inner_dim(), grid, device)?,
            Positions::Coords(c) => rope_tables_for(self.config.inner_dim(), c, device)?,
        };
        *slot = Some(RopeEntry {
            key,
            device: device.clone(),
            cos: cos.clone(),
            sin: sin.clone(),
        });
        Ok((cos, sin))
    }

    /// The weights' dtype (activations follow it).
    pub fn dtype(&self) -> DType {
        self.proj_in.weight.dtype()
    }

    /// Projects text states `[B,L,caption_channels]` and precomputes every
    /// layer's cross-attention keys/values; `mask` `[B,L]` is 1 keep / 0 pad.
    pub fn prepare_text(&self, text: &Tensor, mask: &Tensor) -> Result<TextCond> {
        let (b, l, c) = text.dims3().map_err(|_| {
            GpuError::invalid(
                "encoder_hidden_states",
                format!("expected [B,L,C], got {:?}", text.dims()),
            )
        })?;
        if c != self.config.caption_channels {
            return Err(GpuError::invalid(
                "encoder_hidden_states",
                format!(
                    "has {c} channels, the model expects caption_channels={}",
                    self.config.caption_channels
                ),
            ));
        }
        if mask.dims() != [b, l] {
            return Err(GpuError::invalid(
                "encoder_attention_mask",
                format!("shape {:?}, expected [{b}, {l}]", mask.dims()),
            ));
        }
        let dt = self.proj_in.weight.dtype();
        let ctx = self.cap2.forward(&crate::kernels::gelu_tanh(
            &self.cap1.forward(&text.to_dtype(dt)?)?,
        )?)?;
        let heads = self.config.num_attention_heads;
        let kv = self
            .blocks
            .iter()
            .map(|blk| blk.attn2.keys_values(&ctx, heads))
            .collect::<Result<Vec<_>>>()?;
        let bias = ((mask.to_dtype(DType::F32)?.affine(-1.0, 1.0)? * -10000.0)?)
            .to_dtype(dt)?
            .reshape((b, 1, 1, l))?;
        Ok(TextCond { kv, bias, batch: b })
    }

    /// Time embedding for `timestep` `[B]`, `[B,1]` or `[B,S]` (sigma*1000). Returns
    /// (`temb` `[B,T,6D]`, `embedded` `[B,T,D]`) with T = 1 or S. Distinct
    /// values are embedded once: per-token timesteps take only a few values
    /// (image-to-video: 0 and t), and per-token MLPs would cost far more.
    fn time_embed(&self, timestep: &Tensor, b: usize, s: usize) -> Result<(Tensor, Tensor)> {
        let t_per = match timestep.dims() {
            [tb] if *tb == b => 1,
            [tb, 1] if *tb == b && s != 1 => 1,
            [tb, ts] if *tb == b && *ts == s => s,
            other => {
                return Err(GpuError::invalid(
                    "timestep",
                    format!("shape {other:?}, expected [{b}], [{b}, 1] or [{b}, {s}]"),
                ))
            }
        };
        let vals: Vec<f32> = timestep.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let mut uniq: Vec<f32> = Vec::new();
        let mut index: Vec<u32> = Vec::with_capacity(vals.len());
        for v in &vals {
            let pos = match uniq.iter().position(|u| u.to_bits() == v.to_bits()) {
                Some(p) => p,
                None => {
                    uniq.push(*v);
                    uniq.len() - 1
                }
            };
            index.push(pos as u32);
        }
        let dev = timestep.device();
        // One value at a time: the embedding MLP's GEMM shape then never
        // depends on how many distinct timesteps the batch holds.
        let mut embs = Vec::with_capacity(uniq.len());
        let mut tembs = Vec::with_capacity(uniq.len());
        for u in &uniq {
            let e = self
                .t_embedder
                .forward(&Tensor::from_vec(vec![*u], 1, dev)?)?; // [1, D]
            tembs.push(self.t_linear.forward(&crate::kernels::silu(&e)?)?); // [1, 6D]
            embs.push(e);
        }
        let emb = Tensor::cat(&embs, 0)?;
        let temb = Tensor::cat(&tembs, 0)?;
        let idx = Tensor::from_vec(index, vals.len(), dev)?;
        let d = self.config.inner_dim();
        let emb = emb.index_select(&idx, 0)?.reshape((b, t_per, d))?;
        let temb = temb.index_select(&idx, 0)?.reshape((b, t_per, 6 * d))?;
        Ok((temb, emb))
    }

    /// One forward pass: packed latents `x` `[B,S,in]` -> velocity `[B,S,out]`.
    pub fn forward(
        &self,
        x: &Tensor,
        text: &TextCond,
        timestep: &Tensor,
        grid: &LatentGrid,
    ) -> Result<Tensor> {
        self.forward_at(x, text, timestep, Positions::Grid(grid))
    }

    /// [`Self::forward`] with the tokens at `pos` (a grid, or explicit
    /// coordinates for conditioned generation).
    pub fn forward_at(
        &self,
        x: &Tensor,
        text: &TextCond,
        timestep: &Tensor,
        pos: Positions,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (b, s, c) = x.dims3().map_err(|_| {
            GpuError::invalid(
                "hidden_states",
                format!("expected [B,S,C], got {:?}", x.dims()),
            )
        })?;
        if c != cfg.in_channels {
            return Err(GpuError::invalid(
                "hidden_states",
                format!(
                    "has {c} channels, the model expects in_channels={}",
                    cfg.in_channels
                ),
            ));
        }
        if s != pos.tokens() {
            let what = match pos {
                Positions::Grid(g) => {
                    format!("the latent grid {}x{}x{}", g.frames, g.height, g.width)
                }
                Positions::Coords(_) => "the token coordinates".to_string(),
            };
            return Err(GpuError::invalid(
                "hidden_states",
                format!("{s} tokens but {what} has {}", pos.tokens()),
            ));
        }
        if text.batch != b {
            return Err(GpuError::invalid(
                "encoder_hidden_states",
                format!(
                    "batch {} does not match hidden_states batch {b}",
                    text.batch
                ),
            ));
        }
        let d = cfg.inner_dim();
        let heads = cfg.num_attention_heads;
        let dt = self.proj_in.weight.dtype();
        let (cos, sin) = self.rope(pos, x.device())?;
        let (temb, emb) = self.time_embed(timestep, b, s)?;
        let temb = temb.to_dtype(dt)?;
        let t_per = temb.dim(1)?;

        let mut h = self.proj_in.forward(&x.to_dtype(dt)?)?;
        for (blk, (ck, cv)) in self.blocks.iter().zip(&text.kv) {
            let ada = temb
                .reshape((b, t_per, 6, d))?
                .broadcast_add(&blk.table.unsqueeze(0)?.unsqueeze(0)?)?;
            let m = |i: usize| -> Result<Tensor> { Ok(ada.narrow(2, i, 1)?.squeeze(2)?) };
            let (shift_msa, scale_msa, gate_msa) = (m(0)?, m(1)?, m(2)?);
            let (shift_mlp, scale_mlp, gate_mlp) = (m(3)?, m(4)?, m(5)?);

            // Self-attention with RoPE (norm, modulation, q/k norm and rotation
            // fused on CUDA).
            let nh = ada_norm(&h, &shift_msa, &scale_msa, NormKind::Rms, cfg.norm_eps)?;
            let a = &blk.attn1;
            let q = qk_norm_rope(&a.to_q.forward(&nh)?, &a.norm_q, &cos, &sin, QK_NORM_EPS)?;
            let k = qk_norm_rope(&a.to_k.forward(&nh)?, &a.norm_k, &cos, &sin, QK_NORM_EPS)?;
            let v = a.to_v.forward(&nh)?;
            let o = kernels::attention(
                &heads_view(&q, heads)?,
                &heads_view(&k, heads)?,
                &heads_view(&v, heads)?,
                None,
            )?;
            let o = a.to_out.forward(&o)?;
            h = (h + o.broadcast_mul(&gate_msa)?)?;

            // Cross-attention: unnormalised input, ungated residual.
            let a = &blk.attn2;
            let q = rms_norm(&a.to_q.forward(&h)?, Some(&a.norm_q), QK_NORM_EPS)?;
            let o = kernels::attention(&heads_view(&q, heads)?, ck, cv, Some(&text.bias))?;
            h = (&h + a.to_out.forward(&o)?)?;

            // Feed-forward.
            let nh = ada_norm(&h, &shift_mlp, &scale_mlp, NormKind::Rms, cfg.norm_eps)?;
            let ff = blk
                .ff_out
                .forward(&crate::kernels::gelu_tanh(&blk.ff_in.forward(&nh)?)?)?;
            h = (h + ff.broadcast_mul(&gate_mlp)?)?;
        }
        let ss = emb
            .to_dtype(dt)?
            .unsqueeze(2)?
            .broadcast_add(&self.table_out.unsqueeze(0)?.unsqueeze(0)?)?; // [B,T,2,D]
        let shift = ss.narrow(2, 0, 1)?.squeeze(2)?;
        let scale = ss.narrow(2, 1, 1)?.squeeze(2)?;
        let h = ada_norm(&h, &shift, &scale, NormKind::Layer, 1e-6)?;
        self.proj_out.forward(&h)
    }
}
