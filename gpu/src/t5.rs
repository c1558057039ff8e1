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
        if i == 0 {
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
    /// `[num_buckets, num_heads]`, f32.
    rel_bias: Tensor,
    blocks: Vec<Block>,
    final_ln: Tensor,
    act: Act,
}

/// Runs a linear layer on an f32 activation in the weight's dtype and returns
/// f32.
fn lin(l: &Linear, x: &Tensor) -> Result<Tensor> {
    let wd = l.weight.dtype();
    let y = l.forward(&x.to_dtype(wd)?)?;
    Ok(y.to_dtype(DType::F32)?)
}

/// transformers keeps the feed-forward `wo` in f32 (`_keep_in_fp32_modules`)
/// because T5's activations overflow f16 there; we do the same for f16
/// weights (bf16 has f32's range and stays as is).
fn keep_f32_if_f16(l: Linear) -> Result<Linear> {
    if l.weight.dtype() == DType::F16 {
        return Ok(Linear {
            weight: l.weight.to_dtype(DType::F32)?,
            bias: None,
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
        let mut rel_bias = None;
        for i in 0..cfg.num_layers {
            let b = enc.pp(format!("block.{i}.layer"));
            let a = b.pp("0.SelfAttention");
            if i == 0 {
                rel_bias = Some(
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
        let rel_bias = match rel_bias {
            Some(r) => r,
            // A zero-layer stack never reads the bias.
            None => Tensor::zeros(
                (cfg.relative_attention_num_buckets, cfg.num_heads),
                DType::F32,
                w.device(),
            )?,
        };
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

    /// `[1, H, T, T]` f32 relative position bias for a length-`t` sequence.
    fn position_bias(&self, t: usize) -> Result<Tensor> {
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
        let bias = self.rel_bias.index_select(&buckets, 0)?;
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
        let q = heads(lin(&blk.q, x)?)?;
        let k = heads(lin(&blk.k, x)?)?;
        let v = heads(lin(&blk.v, x)?)?;
        // No 1/sqrt(d_kv) scaling in T5.
        let scores = q.matmul(&k.t()?.contiguous()?)?.broadcast_add(bias)?;
        let probs = crate::kernels::softmax_last_dim(&scores)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, h * dk))?;
        lin(&blk.o, &ctx)
    }

    fn feed_forward(&self, blk: &Block, x: &Tensor) -> Result<Tensor> {
        let mut hdn = self.act.apply(&lin(&blk.wi, x)?)?;
        if let Some(g) = &blk.wi_gate {
            hdn = (hdn * lin(g, x)?)?;
        }
        lin(&blk.wo, &hdn)
    }

    /// `[B, T]` token ids (u32 or i64) -> `[B, T, d_model]` f32 hidden states
    /// (`last_hidden_state`), without attention mask.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let ids = self.checked_ids(input_ids)?;
        let (b, t) = ids.dims2()?;
        let eps = self.config.layer_norm_epsilon;
        let mut x = self
            .embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.config.d_model))?
            .to_dtype(DType::F32)?;
        let bias = self.position_bias(t)?;
        for blk in &self.blocks {
            let hn = rms_norm(&x, Some(&blk.ln0), eps)?;
            x = (&x + self.attention(blk, &hn, &bias)?)?;
            let hn = rms_norm(&x, Some(&blk.ln1), eps)?;
            x = (&x + self.feed_forward(blk, &hn)?)?;
        }
        rms_norm(&x, Some(&self.final_ln), eps)
    }
}

/// Golden runner: `case.config` is a transformers T5 config, `input_ids` the
/// input; returns `last_hidden_state`.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::parse_config;
    use std::collections::HashMap;

    fn tiny_cfg() -> T5Config {
        serde_json::from_value(serde_json::json!({
            "vocab_size": 16, "d_model": 8, "d_kv": 4, "d_ff": 12,
            "num_layers": 2, "num_heads": 2, "some_unknown_key": true
        }))
        .unwrap()
    }

    fn tiny_weights(cfg: &T5Config, skip: Option<&str>) -> Weights {
        let mut m = HashMap::new();
        for (i, (name, shape)) in expected_tensor_shapes(cfg).into_iter().enumerate() {
            if Some(name.as_str()) == skip {
                continue;
            }
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n)
                .map(|j| (((j * 7 + i * 13) % 17) as f32 - 8.0) / 20.0)
                .collect();
            m.insert(name, Tensor::from_vec(data, shape, &Device::Cpu).unwrap());
        }
        Weights::from_tensors(m, "tiny test weights")
    }

    #[test]
    fn config_defaults_and_missing_key() {
        let c = tiny_cfg();
        assert_eq!(c.relative_attention_num_buckets, 32);
        assert_eq!(c.relative_attention_max_distance, 128);
        assert_eq!(c.feed_forward_proj, "gated-gelu");
        let e = parse_config::<T5Config>(serde_json::json!({"vocab_size": 3}), "cfg.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("d_model"), "{e}");
    }

    #[test]
    fn unsupported_ff_proj_is_error() {
        let mut c = tiny_cfg();
        c.feed_forward_proj = "gated-foo".into();
        let w = tiny_weights(&tiny_cfg(), None);
        let e = T5Encoder::load(&w, &c).err().unwrap().to_string();
        assert!(e.contains("feed_forward_proj"), "{e}");
    }

    #[test]
    fn forward_shape_and_dtypes() {
        let c = tiny_cfg();
        let m = T5Encoder::load(&tiny_weights(&c, None), &c).unwrap();
        let ids = Tensor::new(&[[1u32, 2, 3], [4, 5, 15]], &Device::Cpu).unwrap();
        let y = m.forward(&ids).unwrap();
        assert_eq!(y.dims(), &[2, 3, 8]);
        assert_eq!(y.dtype(), DType::F32);
        let y64 = m.forward(&ids.to_dtype(DType::I64).unwrap()).unwrap();
        let d: f32 = (y - y64)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(d, 0.0);
    }

    #[test]
    fn half_weights_run() {
        let c = tiny_cfg();
        let w = tiny_weights(&c, None);
        let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
        let y32 = T5Encoder::load(&w, &c).unwrap().forward(&ids).unwrap();
        for dt in [DType::F16, DType::BF16] {
            let m = T5Encoder::load(&w.clone().with_dtype(dt), &c).unwrap();
            let y = m.forward(&ids).unwrap();
            assert_eq!(y.dtype(), DType::F32);
            let d: f32 = (y - &y32)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(d < 0.1, "{dt:?}: {d}");
        }
    }

    #[test]
    fn relu_variant_loads() {
        let mut c = tiny_cfg();
        c.feed_forward_proj = "relu".into();
        let w = tiny_weights(&c, None);
        assert!(w.contains("encoder.block.0.layer.1.DenseReluDense.wi.weight"));
        let m = T5Encoder::load(&w, &c).unwrap();
        let ids = Tensor::new(&[[1u32, 2]], &Device::Cpu).unwrap();
        assert_eq!(m.forward(&ids).unwrap().dims(), &[1, 2, 8]);
    }

    #[test]
    fn ids_out_of_vocab_error() {
        let c = tiny_cfg();
        let m = T5Encoder::load(&tiny_weights(&c, None), &c).unwrap();
        for ids in [
            Tensor::new(&[[1u32, 16]], &Device::Cpu).unwrap(),
            Tensor::new(&[[1i64, -1]], &Device::Cpu).unwrap(),
        ] {
            match m.forward(&ids) {
                Err(GpuError::InvalidInput { field, msg }) => {
                    assert_eq!(field, "input_ids");
                    assert!(msg.contains("[0, 1]"), "{msg}");
                }
                other => panic!(
                    "expected InvalidInput, got {:?}",
                    other.map(|t| t.dims().to_vec())
                ),
            }
        }
        let bad_rank = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
        assert!(matches!(
            m.forward(&bad_rank),
            Err(GpuError::InvalidInput { .. })
        ));
    }

    #[test]
    fn missing_tensor_named() {
        let c = tiny_cfg();
        let name = "encoder.block.1.layer.1.DenseReluDense.wi_1.weight";
        let e = T5Encoder::load(&tiny_weights(&c, Some(name)), &c)
            .err()
            .unwrap();
        assert!(
            matches!(&e, GpuError::MissingTensor { name: n, .. } if n == name),
            "{e}"
        );
        assert!(e.to_string().contains(name));
    }

    #[test]
    fn wrong_shape_named() {
        let c = tiny_cfg();
        let mut c2 = c.clone();
        c2.d_ff = 10;
        let e = T5Encoder::load(&tiny_weights(&c, None), &c2).err().unwrap();
        assert!(matches!(e, GpuError::ShapeMismatch { .. }), "{e}");
    }

    #[test]
    fn buckets_match_reference() {
        // Values from transformers' _relative_position_bucket(bidirectional,
        // 32 buckets, max_distance 128).
        let b = |r| relative_position_bucket(r, 32, 128);
        assert_eq!(b(0), 0);
        assert_eq!(b(-1), 1);
        assert_eq!(b(1), 17);
        assert_eq!(b(-7), 7);
        assert_eq!(b(-8), 8);
        assert_eq!(b(-16), 10);
        assert_eq!(b(16), 26);
        assert_eq!(b(-200), 15);
        assert_eq!(b(200), 31);
    }
}
