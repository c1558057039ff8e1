//! T5 v1.1 encoder stack, as transformers' `T5EncoderModel`.
//!
//! Pre-norm blocks (T5 layer norm = RMS norm with weight, no mean
//! subtraction, no bias), self-attention without the `1/sqrt(d)` scaling and
//! with a bucketed relative position bias that layer 0 computes and every layer
//! shares, then a (gated) feed-forward; a final layer norm closes the stack.
//! No bias terms anywhere. The encoder runs without an attention mask, as the
//! LTX pipeline does.
//!
//! The residual stream, norms and attention scores/softmax are kept in f32;
//! the linear layers run in the weights' dtype (f32 or bf16/f16).

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::error::{GpuError, Result};
use crate::nn::{rms_norm, Linear};
use crate::weights::Weights;

fn default_num_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ff_proj() -> String {
    "gated-gelu".to_string()
}

/// The subset of a transformers `T5Config` the encoder needs. Unknown keys are
/// ignored; a missing required key is a serde error naming it.
#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    #[serde(default = "default_num_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `"gated-gelu"` (T5 v1.1), `"relu"` (original T5), or `[gated-]ACT` with
    /// ACT one of `relu`, `gelu`, `gelu_new`, `silu`.
    #[serde(default = "default_ff_proj")]
    pub feed_forward_proj: String,
    /// `"umt5"`: every layer has its own relative position bias (Wan's
    /// text encoder); T5 shares layer 0's.
    #[serde(default)]
    pub model_type: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Relu,
    /// Exact (erf) GELU: transformers' `ACT2FN["gelu"]`.
    GeluErf,
    /// Tanh approximation: `gelu_new`.
    GeluTanh,
    Silu,
}

impl Act {
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Act::Relu => x.relu()?,
            Act::GeluErf => x.gelu_erf()?,
            Act::GeluTanh => crate::kernels::gelu_tanh(x)?,
            Act::Silu => crate::kernels::silu(x)?,
        })
    }
}

impl T5Config {
    /// `(gated, activation)` as transformers derives them from
    /// `feed_forward_proj` (`"gated-gelu"` is special-cased to `gelu_new`).
    fn ff_kind(&self) -> Result<(bool, Act)> {
        let p = self.feed_forward_proj.as_str();
        if p == "gated-gelu" {
            return Ok((true, Act::GeluTanh));
        }
        let (gated, act) = match p.split_once('-') {
            Some(("gated", act)) => (true, act),
            None => (false, p),
            // Not a valid form: falls through to the error below.
            Some(_) => (false, ""),
        };
        let act = match act {
            "relu" => Act::Relu,
            "gelu" => Act::GeluErf,
            "gelu_new" => Act::GeluTanh,
            "silu" | "swish" => Act::Silu,
            _ => {
                return Err(GpuError::config(
                    "T5 config",
                    format!(
                        "unsupported `feed_forward_proj` {p:?} (supported: \"gated-gelu\", \
                         \"relu\", or [\"gated-\"]ACT with ACT in relu, gelu, gelu_new, silu)"
                    ),
                ))
            }
        };
        Ok((gated, act))
    }

    /// Checks the values a model cannot be built with.
    fn validate(&self) -> Result<()> {
        let fields = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_heads", self.num_heads),
            (
                "relative_attention_num_buckets",
                self.relative_attention_num_buckets,
            ),
        ];
        for (name, v) in fields {
            if v == 0 {
                return Err(GpuError::config(
                    "T5 config",
                    format!("`{name}` must be > 0"),
                ));
            }
        }
        if self.relative_attention_num_buckets < 4 {
            return Err(GpuError::config(
                "T5 config",
                "`relative_attention_num_buckets` must be at least 4",
            ));
        }
        if self.relative_attention_max_distance < self.relative_attention_num_buckets / 4 + 1 {
            return Err(GpuError::config(
                "T5 config",
                "`relative_attention_max_distance` must exceed num_buckets / 4",
            ));
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon >= 0.0) {
            return Err(GpuError::config(
                "T5 config",
                "`layer_norm_epsilon` must be finite and >= 0",
            ));
        }
        self.ff_kind()?;
        Ok(())
    }

    /// UMT5 gives every layer its own relative position bias.
    pub fn per_layer_bias(&self) -> bool {
        self.model_type.as_deref() == Some("umt5")
    }

    fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }
}

/// Every tensor name [`T5Encoder::load`] reads, with its shape. The embedding
/// is listed as `shared.weight` (`encoder.embed_tokens.weight` is preferred
/// when a checkpoint has it).
pub fn expected_tensor_shapes(cfg: &T5Config) -> Vec<(String, Vec<usize>)> {
    let (d, inner, ff) = (cfg.d_model, cfg.inner_dim(), cfg.d_ff);
    let gated = cfg.ff_kind().map(|k| k.0).unwrap_or(true);
    let mut v = vec![("shared.weight".to_string(), vec![cfg.vocab_size, d])];
    for i in 0..cfg.num_layers {
        let b = format!("encoder.block.{i}.layer");
        for p in ["q", "k", "v"] {
            v.push((format!("{b}.0.SelfAttention.{p}.weight"), vec![inner, d]));
        }
        v.push((format!("{b}.0.SelfAttention.o.weight"), vec![d, inner]));
        if i == 0 || cfg.per_layer_bias() {
            v.push((
                format!("{b}.0.SelfAttention.relative_attention_bias.weight"),
                vec![cfg.relative_attention_num_buckets, cfg.num_heads],
            ));
        }
        v.push((format!("{b}.0.layer_norm.weight"), vec![d]));
        if gated {
            v.push((format!("{b}.1.DenseReluDense.wi_0.weight"), vec![ff, d]));
            v.push((format!("{b}.1.DenseReluDense.wi_1.weight"), vec![ff, d]));
        } else {
            v.push((format!("{b}.1.DenseReluDense.wi.weight"), vec![ff, d]));
        }
        v.push((format!("{b}.1.DenseReluDense.wo.weight"), vec![d, ff]));
        v.push((format!("{b}.1.layer_norm.weight"), vec![d]));
    }
    v.push(("encoder.final_layer_norm.weight".to_string(), vec![d]));
    v
}

struct Block {
    ln0: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln1: Tensor,
    /// `wi_0` when gated, `wi` otherwise.
    wi: Linear,
    /// `wi_1` (the linear half of the gate) when gated.
    wi_gate: Option<Linear>,
    wo: Linear,
}

pub struct T5Encoder {
    pub config: T5Config,
    embed: Tensor,
    /// `[num_buckets, num_heads]`, f32: one shared (T5) or one per layer
    /// (UMT5).
    rel_bias: Vec<Tensor>,
    blocks: Vec<Block>,
    final_ln: Tensor,
    act: Act,
}

/// transformers keeps the feed-forward `wo` in f32 (`_keep_in_fp32_modules`)
/// because T5's activations overflow f16 there; we do the same for f16
/// weights (bf16 has f32's range and stays as is).
fn keep_f32_if_f16(l: Linear) -> Result<Linear> {
    if l.weight.dtype() == DType::F16 {
        return Ok(Linear {
            weight: l.weight.to_dtype(DType::F32)?,
            bias: None,
            name: l.name,
        });
    }
    Ok(l)
}

/// transformers' `T5Attention._relative_position_bucket` for bidirectional
/// attention; `rel = key_pos - query_pos`. The log is taken in f32 as the
/// reference does, so bucket boundaries agree.
fn relative_position_bucket(rel: i64, num_buckets: usize, max_distance: usize) -> usize {
    let nb = (num_buckets / 2) as i64;
    let mut bucket = if rel > 0 { nb } else { 0 };
    let n = rel.abs();
    let max_exact = nb / 2;
    if n < max_exact {
        bucket += n;
    } else {
        let ratio = (n as f32 / max_exact as f32).ln();
        let denom = (max_distance as f64 / max_exact as f64).ln() as f32;
        let large = max_exact + (ratio / denom * (nb - max_exact) as f32) as i64;
        bucket += large.min(nb - 1);
    }
    bucket as usize
}

impl T5Encoder {
    /// Loads from a view whose names are transformers' (`shared.weight`,
    /// `encoder.block.{i}...`). Every tensor is shape-checked.
    pub fn load(w: &Weights, cfg: &T5Config) -> Result<Self> {
        cfg.validate()?;
        let (gated, act) = cfg.ff_kind()?;
        let (d, inner, ff) = (cfg.d_model, cfg.inner_dim(), cfg.d_ff);
        let embed = if w.contains("encoder.embed_tokens.weight") {
            w.get("encoder.embed_tokens.weight", &[cfg.vocab_size, d])?
        } else {
            w.get("shared.weight", &[cfg.vocab_size, d])?
        };
        let enc = w.pp("encoder");
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        let mut rel_bias = Vec::new();
        for i in 0..cfg.num_layers {
            let b = enc.pp(format!("block.{i}.layer"));
            let a = b.pp("0.SelfAttention");
            if i == 0 || cfg.per_layer_bias() {
                rel_bias.push(
                    a.get(
                        "relative_attention_bias.weight",
                        &[cfg.relative_attention_num_buckets, cfg.num_heads],
                    )?
                    .to_dtype(DType::F32)?,
                );
            }
            let f = b.pp("1.DenseReluDense");
            let (wi, wi_gate) = if gated {
                (
                    Linear::load(&f, "wi_0", d, ff, false)?,
                    Some(Linear::load(&f, "wi_1", d, ff, false)?),
                )
            } else {
                (Linear::load(&f, "wi", d, ff, false)?, None)
            };
            blocks.push(Block {
                ln0: b.get("0.layer_norm.weight", &[d])?.to_dtype(DType::F32)?,
                q: Linear::load(&a, "q", d, inner, false)?,
                k: Linear::load(&a, "k", d, inner, false)?,
                v: Linear::load(&a, "v", d, inner, false)?,
                o: Linear::load(&a, "o", inner, d, false)?,
                ln1: b.get("1.layer_norm.weight", &[d])?.to_dtype(DType::F32)?,
                wi,
                wi_gate,
                wo: keep_f32_if_f16(Linear::load(&f, "wo", ff, d, false)?)?,
            });
        }
        let final_ln = enc
            .get("final_layer_norm.weight", &[d])?
            .to_dtype(DType::F32)?;
        Ok(T5Encoder {
            config: cfg.clone(),
            embed,
            rel_bias,
            blocks,
            final_ln,
            act,
        })
    }

    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    /// Validates `[B, T]` ids (u32 or any integer dtype) against the
    /// vocabulary and returns them as u32 on the model's device.
    fn checked_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        if input_ids.rank() != 2 {
            return Err(GpuError::invalid(
                "input_ids",
                format!("expected shape [batch, tokens], got {:?}", input_ids.dims()),
            ));
        }
        if input_ids.dtype().is_float() {
            return Err(GpuError::invalid(
                "input_ids",
                format!("expected integer ids, got dtype {:?}", input_ids.dtype()),
            ));
        }
        let (b, t) = input_ids.dims2()?;
        if b == 0 || t == 0 {
            return Err(GpuError::invalid(
                "input_ids",
                format!("empty batch or sequence (shape {:?})", input_ids.dims()),
            ));
        }
        let ids: Vec<i64> = input_ids.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?;
        let vocab = self.config.vocab_size as i64;
        if let Some((pos, bad)) = ids.iter().enumerate().find(|(_, &v)| v < 0 || v >= vocab) {
            return Err(GpuError::invalid(
                "input_ids",
                format!(
                    "token id {bad} at [{}, {}] is outside the vocabulary (size {vocab})",
                    pos / t,
                    pos % t
                ),
            ));
        }
        let ids: Vec<u32> = ids.into_iter().map(|v| v as u32).collect();
        Ok(Tensor::from_vec(ids, (b, t), self.device())?)
    }

    /// `[1, H, T, T]` f32 relative position bias for a length-`t` sequence
    /// from the `[buckets, H]` table `table`.
    fn position_bias(&self, table: &Tensor, t: usize) -> Result<Tensor> {
        let cfg = &self.config;
        let mut buckets = Vec::with_capacity(t * t);
        for q in 0..t as i64 {
            for k in 0..t as i64 {
                buckets.push(relative_position_bucket(
                    k - q,
                    cfg.relative_attention_num_buckets,
                    cfg.relative_attention_max_distance,
                ) as u32);
            }
        }
        let buckets = Tensor::from_vec(buckets, t * t, self.device())?;
        // [T*T, H] -> [H, T, T] -> [1, H, T, T]
        let bias = table.index_select(&buckets, 0)?;
        Ok(bias
            .t()?
            .reshape((cfg.num_heads, t, t))?
            .unsqueeze(0)?
            .contiguous()?)
    }

    fn attention(&self, blk: &Block, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, dk) = (self.config.num_heads, self.config.d_kv);
        let heads = |y: Tensor| -> Result<Tensor> {
            Ok(y.reshape((b, t, h, dk))?.transpose(1, 2)?.contiguous()?)
        };
        let q = heads(blk.q.forward_f32(x)?)?;
        let k = heads(blk.k.forward_f32(x)?)?;
        let v = heads(blk.v.forward_f32(x)?)?;
        // No 1/sqrt(d_kv) scaling in T5.
        let scores = q.matmul(&k.t()?.contiguous()?)?.broadcast_add(bias)?;
        let probs = crate::kernels::softmax_last_dim(&scores)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, h * dk))?;
        blk.o.forward_f32(&ctx)
    }

    fn feed_forward(&self, blk: &Block, x: &Tensor) -> Result<Tensor> {
        let mut hdn = self.act.apply(&blk.wi.forward_f32(x)?)?;
        if let Some(g) = &blk.wi_gate {
            hdn = (hdn * g.forward_f32(x)?)?;
        }
        blk.wo.forward_f32(&hdn)
    }

    /// `[B, T]` token ids (u32 or i64) -> `[B, T, d_model]` f32 hidden states
    /// (`last_hidden_state`), without attention mask.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.forward_masked(input_ids, None)
    }

    /// [`Self::forward`] with an attention mask `[B, T]` (1 for a real
    /// token, 0 for padding): padded keys get the most negative f32 added
    /// to their scores, as transformers does (Wan runs UMT5 this way).
    pub fn forward_masked(&self, input_ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let ids = self.checked_ids(input_ids)?;
        let (b, t) = ids.dims2()?;
        let eps = self.config.layer_norm_epsilon;
        let mut x = self
            .embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.config.d_model))?
            .to_dtype(DType::F32)?;
        let key_mask = match mask {
            None => None,
            Some(m) => {
                if m.dims() != [b, t] {
                    return Err(GpuError::invalid(
                        "attention_mask",
                        format!("shape {:?}, expected [{b}, {t}]", m.dims()),
                    ));
                }
                let m = m.to_dtype(DType::F32)?;
                // (1 - m) * f32::MIN, as [B, 1, 1, T].
                let add = m.affine(-(f32::MIN as f64), f32::MIN as f64)?;
                Some(add.reshape((b, 1, 1, t))?)
            }
        };
        let mut bias = Tensor::zeros((1, 1, 1, 1), DType::F32, self.device())?;
        for (i, blk) in self.blocks.iter().enumerate() {
            // T5: layer 0's table for every layer; UMT5: each its own.
            if i == 0 || self.config.per_layer_bias() {
                bias = self.position_bias(&self.rel_bias[i], t)?;
                if let Some(k) = &key_mask {
                    bias = bias.broadcast_add(k)?;
                }
            }
            let hn = rms_norm(&x, Some(&blk.ln0), eps)?;
            x = (&x + self.attention(blk, &hn, &bias)?)?;
            let hn = rms_norm(&x, Some(&blk.ln1), eps)?;
            x = (&x + self.feed_forward(blk, &hn)?)?;
        }
        rms_norm(&x, Some(&self.final_ln), eps)
    }
}

/// Wan's prompt embeddings from UMT5's output `[B, T, D]`: every row at or
/// past a sequence's token count (the sum of its `mask` row) set to 0, as
/// WanPipeline trims each sequence to its length and zero-pads it back.
/// The transformer attends to those zero rows: they are not masked there.
pub fn zero_past_length(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, t, _) = hidden.dims3()?;
    let counts: Vec<f32> = mask.to_dtype(DType::F32)?.sum(1)?.to_vec1()?;
    let mut keep = Vec::with_capacity(b * t);
    for n in &counts {
        keep.extend((0..t).map(|j| if (j as f32) < *n { 1.0f32 } else { 0.0 }));
    }
    let keep = Tensor::from_vec(keep, (b, t, 1), hidden.device())?;
    Ok(hidden.broadcast_mul(&keep)?)
}

#[cfg(test)]
mod tests;
