//! `transformer/config.json` (diffusers `LTXVideoTransformer3DModel`).

use serde::Deserialize;

use crate::error::{GpuError, Result};

fn d_128() -> usize {
    128
}
fn d_1() -> usize {
    1
}
fn d_32() -> usize {
    32
}
fn d_64() -> usize {
    64
}
fn d_2048() -> usize {
    2048
}
fn d_28() -> usize {
    28
}
fn d_4096() -> usize {
    4096
}
fn d_eps() -> f64 {
    1e-6
}
fn d_true() -> bool {
    true
}
fn d_gelu() -> String {
    "gelu-approximate".into()
}
fn d_qk() -> String {
    "rms_norm_across_heads".into()
}

/// `transformer/config.json`, diffusers key names and defaults.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct TransformerConfig {
    #[serde(default = "d_128")]
    pub in_channels: usize,
    #[serde(default = "d_128")]
    pub out_channels: usize,
    #[serde(default = "d_1")]
    pub patch_size: usize,
    #[serde(default = "d_1")]
    pub patch_size_t: usize,
    #[serde(default = "d_32")]
    pub num_attention_heads: usize,
    #[serde(default = "d_64")]
    pub attention_head_dim: usize,
    #[serde(default = "d_2048")]
    pub cross_attention_dim: usize,
    #[serde(default = "d_28")]
    pub num_layers: usize,
    #[serde(default = "d_gelu")]
    pub activation_fn: String,
    #[serde(default = "d_qk")]
    pub qk_norm: String,
    #[serde(default)]
    pub norm_elementwise_affine: bool,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    #[serde(default = "d_4096")]
    pub caption_channels: usize,
    #[serde(default = "d_true")]
    pub attention_bias: bool,
    #[serde(default = "d_true")]
    pub attention_out_bias: bool,
}

impl TransformerConfig {
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    pub(super) fn validate(&self) -> Result<()> {
        let bad = |k: &str, m: String| {
            Err(GpuError::config(
                "transformer config",
                format!("`{k}`: {m}"),
            ))
        };
        if self.patch_size != 1 || self.patch_size_t != 1 {
            return bad(
                "patch_size",
                "only patch size 1 (all LTX-Video releases) is supported".into(),
            );
        }
        if self.activation_fn != "gelu-approximate" {
            return bad(
                "activation_fn",
                format!(
                    "`{}` unsupported (gelu-approximate only)",
                    self.activation_fn
                ),
            );
        }
        if self.qk_norm != "rms_norm_across_heads" {
            return bad(
                "qk_norm",
                format!(
                    "`{}` unsupported (rms_norm_across_heads only)",
                    self.qk_norm
                ),
            );
        }
        if self.norm_elementwise_affine {
            return bad(
                "norm_elementwise_affine",
                "true is not supported by LTX-Video".into(),
            );
        }
        if self.inner_dim() == 0 || self.in_channels == 0 || self.out_channels == 0 {
            return bad("num_attention_heads", "model width must be positive".into());
        }
        Ok(())
    }

    /// Every tensor `LtxTransformer::load` reads, with its shape.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let d = self.inner_dim();
        let (c, x) = (self.caption_channels, self.cross_attention_dim);
        let mut v: Vec<(String, Vec<usize>)> = Vec::new();
        let lin = |v: &mut Vec<(String, Vec<usize>)>, n: &str, i: usize, o: usize, b: bool| {
            v.push((format!("{n}.weight"), vec![o, i]));
            if b {
                v.push((format!("{n}.bias"), vec![o]));
            }
        };
        lin(&mut v, "proj_in", self.in_channels, d, true);
        lin(&mut v, "proj_out", d, self.out_channels, true);
        v.push(("scale_shift_table".into(), vec![2, d]));
        lin(
            &mut v,
            "time_embed.emb.timestep_embedder.linear_1",
            256,
            d,
            true,
        );
        lin(
            &mut v,
            "time_embed.emb.timestep_embedder.linear_2",
            d,
            d,
            true,
        );
        lin(&mut v, "time_embed.linear", d, 6 * d, true);
        lin(&mut v, "caption_projection.linear_1", c, d, true);
        lin(&mut v, "caption_projection.linear_2", d, d, true);
        for i in 0..self.num_layers {
            let p = format!("transformer_blocks.{i}");
            for (a, kv_in) in [("attn1", d), ("attn2", x)] {
                lin(&mut v, &format!("{p}.{a}.to_q"), d, d, self.attention_bias);
                lin(
                    &mut v,
                    &format!("{p}.{a}.to_k"),
                    kv_in,
                    d,
                    self.attention_bias,
                );
                lin(
                    &mut v,
                    &format!("{p}.{a}.to_v"),
                    kv_in,
                    d,
                    self.attention_bias,
                );
                lin(
                    &mut v,
                    &format!("{p}.{a}.to_out.0"),
                    d,
                    d,
                    self.attention_out_bias,
                );
                v.push((format!("{p}.{a}.norm_q.weight"), vec![d]));
                v.push((format!("{p}.{a}.norm_k.weight"), vec![d]));
            }
            lin(&mut v, &format!("{p}.ff.net.0.proj"), d, 4 * d, true);
            lin(&mut v, &format!("{p}.ff.net.2"), 4 * d, d, true);
            v.push((format!("{p}.scale_shift_table"), vec![6, d]));
        }
        v
    }
}
