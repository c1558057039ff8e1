//! A BERT encoder for sentence embeddings (all-MiniLM-L6-v2 and its kin, as
//! transformers' `BertModel` + sentence-transformers' mean pooling and L2
//! normalisation). Used by the prompt-safety scorer
//! (`vidflow_job::safety::prompt`): a prompt's embedding is compared with category exemplars.
//!
//! Post-norm blocks: self-attention (biased q/k/v, scaled by 1/sqrt(d)),
//! dense + residual + LayerNorm, GELU (erf) feed-forward + residual +
//! LayerNorm. One unpadded sequence at a time, so no attention mask.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::error::{GpuError, Result};
use crate::nn::{AffineNorm as Norm, Linear};
use crate::weights::{read_config, Weights};

#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
}

fn eps() -> f64 {
    1e-12
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    norm1: Norm,
    up: Linear,
    down: Linear,
    norm2: Norm,
}

pub struct BertEncoder {
    cfg: BertConfig,
    word: Tensor,
    pos: Tensor,
    typ: Tensor,
    emb_norm: Norm,
    layers: Vec<Layer>,
    tokenizer: tokenizers::Tokenizer,
    /// Longest input in tokens (longer prompts are truncated).
    pub max_tokens: usize,
}

impl BertEncoder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from a
    /// sentence-transformers model folder.
    pub fn from_dir(dir: &Path) -> Result<BertEncoder> {
        let cfg: BertConfig = read_config(&dir.join("config.json"))?;
        let w = Weights::from_files(&[dir.join("model.safetensors")])?;
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| GpuError::invalid("tokenizer", format!("{}: {e}", tok_path.display())))?;
        // The shipped tokenizer.json pads every input to 128 tokens. We run
        // one unmasked sequence at a time, so padding would be attended to
        // and averaged in (every sentence drifts towards the same vector)
        // and would cost 128 tokens of compute; truncation is ours below.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| GpuError::invalid("tokenizer", format!("{}: {e}", tok_path.display())))?;
        let h = cfg.hidden_size;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                Ok(Layer {
                    q: Linear::load(&w, &format!("{p}.attention.self.query"), h, h, true)?,
                    k: Linear::load(&w, &format!("{p}.attention.self.key"), h, h, true)?,
                    v: Linear::load(&w, &format!("{p}.attention.self.value"), h, h, true)?,
                    o: Linear::load(&w, &format!("{p}.attention.output.dense"), h, h, true)?,
                    norm1: Norm::load(&w, &format!("{p}.attention.output.LayerNorm"), h)?,
                    up: Linear::load(
                        &w,
                        &format!("{p}.intermediate.dense"),
                        h,
                        cfg.intermediate_size,
                        true,
                    )?,
                    down: Linear::load(
                        &w,
                        &format!("{p}.output.dense"),
                        cfg.intermediate_size,
                        h,
                        true,
                    )?,
                    norm2: Norm::load(&w, &format!("{p}.output.LayerNorm"), h)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BertEncoder {
            word: w.get("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?,
            pos: w.get(
                "embeddings.position_embeddings.weight",
                &[cfg.max_position_embeddings, h],
            )?,
            typ: w.get(
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab_size, h],
            )?,
            emb_norm: Norm::load(&w, "embeddings.LayerNorm", h)?,
            layers,
            tokenizer,
            max_tokens: 256.min(cfg.max_position_embeddings),
            cfg,
        })
    }

    /// Token ids of `text` with [CLS] ... [SEP], truncated to `max_tokens`.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| GpuError::invalid("prompt", e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        if ids.len() > self.max_tokens {
            let last = *ids.last().unwrap_or(&0);
            ids.truncate(self.max_tokens - 1);
            ids.push(last);
        }
        Ok(ids)
    }

    /// The unit-length sentence embedding of `text` (mean of the last
    /// hidden states, L2-normalised), `[hidden]` f32.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>> {
        let ids = self.tokenize(text)?;
        let n = ids.len();
        let dev = Device::Cpu;
        let idx = Tensor::from_vec(ids, n, &dev)?;
        let h = self.cfg.hidden_size;
        let mut x = self
            .word
            .index_select(&idx, 0)?
            .add(&self.pos.narrow(0, 0, n)?)?
            .broadcast_add(&self.typ.narrow(0, 0, 1)?)?;
        x = self.emb_norm.forward(&x, self.cfg.layer_norm_eps)?;
        let heads = self.cfg.num_attention_heads;
        let d = h / heads;
        let scale = 1.0 / (d as f64).sqrt();
        for l in &self.layers {
            let split = |t: Tensor| -> Result<Tensor> {
                Ok(t.reshape((n, heads, d))?.transpose(0, 1)?.contiguous()?)
            };
            let q = split(l.q.forward(&x)?)?;
            let k = split(l.k.forward(&x)?)?;
            let v = split(l.v.forward(&x)?)?;
            let att = (q.matmul(&k.t()?)? * scale)?;
            let att = crate::kernels::softmax_last_dim(&att)?;
            let ctx = att.matmul(&v)?.transpose(0, 1)?.reshape((n, h))?;
            x = l
                .norm1
                .forward(&(l.o.forward(&ctx)? + &x)?, self.cfg.layer_norm_eps)?;
            let up = l.up.forward(&x)?.gelu_erf()?;
            x = l
                .norm2
                .forward(&(l.down.forward(&up)? + &x)?, self.cfg.layer_norm_eps)?;
        }
        let mean = x.mean(0)?;
        let norm = mean
            .sqr()?
            .sum_all()?
            .sqrt()?
            .to_scalar::<f32>()?
            .max(1e-12);
        Ok((mean / norm as f64)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?)
    }
}

impl BertEncoder {
    /// Embeddings of several texts (policy exemplars at load time).
    pub fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        texts.iter().map(|t| self.embed(t)).collect()
    }
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
