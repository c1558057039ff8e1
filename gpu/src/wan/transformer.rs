//! The Wan 2.1 transformer (diffusers' `WanTransformer3DModel`): patchified
//! latents with 3-axis RoPE per head, a timestep modulation shared by all
//! blocks (each adds its own table), cross-attention to UMT5 text and, for
//! image-to-video, to CLIP image tokens through a second key/value branch.
//!
//! The reference's traps, kept here: q/k RMSNorm over all heads together
//! before the split; RoPE angles from f64, used as f32; norms in f32; the
//! image/text split of the context at `len − 512` (the text part is always
//! 512 rows, zero-padded and not masked).

use candle_core::{DType, Tensor};
use serde::Deserialize;

use crate::error::{GpuError, Result};
use crate::kernels::{layer_norm_plain, rms_norm};
use crate::nn::{AffineNorm, Linear, TimestepEmbedder};
use crate::weights::Weights;

/// The text part of the context in image-to-video jobs (UMT5's padded
/// length, which the reference hard-codes).
pub const TEXT_LEN: usize = 512;

/// `transformer/config.json` of a diffusers Wan checkpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct WanConfig {
    #[serde(default = "patch")]
    pub patch_size: [usize; 3],
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub text_dim: usize,
    #[serde(default = "freq")]
    pub freq_dim: usize,
    pub ffn_dim: usize,
    pub num_layers: usize,
    #[serde(default = "yes")]
    pub cross_attn_norm: bool,
    #[serde(default)]
    pub qk_norm: Option<String>,
    #[serde(default = "eps")]
    pub eps: f64,
    #[serde(default)]
    pub image_dim: Option<usize>,
    #[serde(default)]
    pub added_kv_proj_dim: Option<usize>,
    #[serde(default = "max_seq")]
    pub rope_max_seq_len: usize,
    #[serde(default)]
    pub pos_embed_seq_len: Option<usize>,
}

fn patch() -> [usize; 3] {
    [1, 2, 2]
}
fn freq() -> usize {
    256
}
fn yes() -> bool {
    true
}
fn eps() -> f64 {
    1e-6
}
fn max_seq() -> usize {
    1024
}

impl WanConfig {
    pub fn dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    fn check(&self) -> Result<()> {
        let bad = |m: String| Err(GpuError::config("wan transformer config", m));
        if self.freq_dim != TimestepEmbedder::FREQ_DIM {
            return bad(format!("freq_dim {} (only 256)", self.freq_dim));
        }
        if self
            .qk_norm
            .as_deref()
            .is_some_and(|q| q != "rms_norm_across_heads")
        {
            return bad(format!(
                "qk_norm {:?} (only rms_norm_across_heads)",
                self.qk_norm
            ));
        }
        if self.pos_embed_seq_len.is_some() {
            return bad("pos_embed_seq_len (first-last-frame models) is not supported".into());
        }
        if self.image_dim.is_some() != self.added_kv_proj_dim.is_some() {
            return bad("image_dim and added_kv_proj_dim come together".into());
        }
        if self.attention_head_dim % 2 != 0 || self.patch_size.contains(&0) {
            return bad("attention_head_dim must be even, patch sizes positive".into());
        }
        Ok(())
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    norm_q: Tensor,
    norm_k: Tensor,
    /// Image-to-video: the image tokens' key/value and key norm.
    added: Option<(Linear, Linear, Tensor)>,
}

impl Attention {
    fn load(w: &Weights, d: usize, added: Option<usize>) -> Result<Self> {
        Ok(Attention {
            q: Linear::load(w, "to_q", d, d, true)?,
            k: Linear::load(w, "to_k", d, d, true)?,
            v: Linear::load(w, "to_v", d, d, true)?,
            o: Linear::load(w, "to_out.0", d, d, true)?,
            norm_q: w.get("norm_q.weight", &[d])?,
            norm_k: w.get("norm_k.weight", &[d])?,
            added: match added {
                None => None,
                Some(a) => Some((
                    Linear::load(w, "add_k_proj", a, d, true)?,
                    Linear::load(w, "add_v_proj", a, d, true)?,
                    w.get("norm_added_k.weight", &[d])?,
                )),
            },
        })
    }
}

struct Block {
    attn1: Attention,
    attn2: Attention,
    norm2: Option<AffineNorm>,
    ff_in: Linear,
    ff_out: Linear,
    /// `[1, 6, D]`: shift, scale, gate (self-attention), then shift, scale,
    /// gate (feed-forward).
    table: Tensor,
}

pub struct WanTransformer {
    pub config: WanConfig,
    patch: Tensor,
    patch_bias: Tensor,
    time: TimestepEmbedder,
    time_proj: Linear,
    text_1: Linear,
    text_2: Linear,
    /// Image-to-video: LayerNorm, Linear, GELU, Linear, LayerNorm.
    image: Option<(AffineNorm, Linear, Linear, AffineNorm)>,
    blocks: Vec<Block>,
    proj_out: Linear,
    table: Tensor,
    /// `[max_seq_len, head_dim]` cos and sin of every axis' angles, per
    /// channel pair (t, h, w channel ranges side by side).
    rope: (Tensor, Tensor),
}

/// cos/sin `[max_len, dim]` of one axis, each pair's angle repeated over
/// its two channels, computed in f64 and rounded to f32.
fn axis_angles(dim: usize, max_len: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let (mut c, mut s) = (
        Vec::with_capacity(max_len * dim),
        Vec::with_capacity(max_len * dim),
    );
    for p in 0..max_len {
        for i in 0..dim / 2 {
            let f = 1.0 / theta.powf((2 * i) as f64 / dim as f64);
            let a = p as f64 * f;
            for _ in 0..2 {
                c.push(a.cos() as f32);
                s.push(a.sin() as f32);
            }
        }
    }
    (c, s)
}

impl WanTransformer {
    /// Loads from diffusers' names (the `transformer/` folder's view).
    pub fn load(w: &Weights, cfg: &WanConfig) -> Result<Self> {
        cfg.check()?;
        let d = cfg.dim();
        let [pt, ph, pw] = cfg.patch_size;
        let ce = w.pp("condition_embedder");
        let image = match cfg.image_dim {
            None => None,
            Some(i) => {
                let e = ce.pp("image_embedder");
                Some((
                    AffineNorm::load(&e, "norm1", i)?,
                    Linear::load(&e, "ff.net.0.proj", i, i, true)?,
                    Linear::load(&e, "ff.net.2", i, d, true)?,
                    AffineNorm::load(&e, "norm2", d)?,
                ))
            }
        };
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let b = w.pp(format!("blocks.{i}"));
            blocks.push(Block {
                attn1: Attention::load(&b.pp("attn1"), d, None)?,
                attn2: Attention::load(&b.pp("attn2"), d, cfg.added_kv_proj_dim)?,
                norm2: if cfg.cross_attn_norm {
                    Some(AffineNorm::load(&b, "norm2", d)?)
                } else {
                    None
                },
                ff_in: Linear::load(&b, "ffn.net.0.proj", d, cfg.ffn_dim, true)?,
                ff_out: Linear::load(&b, "ffn.net.2", cfg.ffn_dim, d, true)?,
                table: b
                    .get("scale_shift_table", &[1, 6, d])?
                    .to_dtype(DType::F32)?,
            });
        }
        let hd = cfg.attention_head_dim;
        let h_dim = 2 * (hd / 6);
        let t_dim = hd - 2 * h_dim;
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        let axes: Vec<(Vec<f32>, Vec<f32>, usize)> = [t_dim, h_dim, h_dim]
            .iter()
            .map(|&a| {
                let (c, s) = axis_angles(a, cfg.rope_max_seq_len, 10000.0);
                (c, s, a)
            })
            .collect();
        for p in 0..cfg.rope_max_seq_len {
            for (c, s, a) in &axes {
                cos.extend_from_slice(&c[p * a..(p + 1) * a]);
                sin.extend_from_slice(&s[p * a..(p + 1) * a]);
            }
        }
        let dev = w.device();
        let rope = (
            Tensor::from_vec(cos, (cfg.rope_max_seq_len, hd), dev)?,
            Tensor::from_vec(sin, (cfg.rope_max_seq_len, hd), dev)?,
        );
        Ok(WanTransformer {
            patch: w.get("patch_embedding.weight", &[d, cfg.in_channels, pt, ph, pw])?,
            patch_bias: w.get("patch_embedding.bias", &[d])?,
            time: TimestepEmbedder::load(&ce.pp("time_embedder"), d)?,
            time_proj: Linear::load(&ce, "time_proj", d, 6 * d, true)?,
            text_1: Linear::load(&ce.pp("text_embedder"), "linear_1", cfg.text_dim, d, true)?,
            text_2: Linear::load(&ce.pp("text_embedder"), "linear_2", d, d, true)?,
            image,
            blocks,
            proj_out: Linear::load(w, "proj_out", d, cfg.out_channels * pt * ph * pw, true)?,
            table: w
                .get("scale_shift_table", &[1, 2, d])?
                .to_dtype(DType::F32)?,
            rope,
            config: cfg.clone(),
        })
    }

    /// cos/sin `[1, S, 1, head_dim]` for a `f × h × w` token grid.
    fn rope_for(&self, f: usize, h: usize, w: usize) -> Result<(Tensor, Tensor)> {
        let hd = self.config.attention_head_dim;
        let hh = 2 * (hd / 6);
        let td = hd - 2 * hh;
        if f.max(h).max(w) > self.config.rope_max_seq_len {
            return Err(GpuError::invalid(
                "latents",
                format!(
                    "a {f}x{h}x{w} token grid is longer than rope_max_seq_len {} on one axis",
                    self.config.rope_max_seq_len
                ),
            ));
        }
        let grid = |t: &Tensor| -> Result<Tensor> {
            let tf = t
                .narrow(0, 0, f)?
                .narrow(1, 0, td)?
                .reshape((f, 1, 1, td))?;
            let th = t
                .narrow(0, 0, h)?
                .narrow(1, td, hh)?
                .reshape((1, h, 1, hh))?;
            let tw = t
                .narrow(0, 0, w)?
                .narrow(1, td + hh, hh)?
                .reshape((1, 1, w, hh))?;
            let all = Tensor::cat(
                &[
                    tf.broadcast_as((f, h, w, td))?,
                    th.broadcast_as((f, h, w, hh))?,
                    tw.broadcast_as((f, h, w, hh))?,
                ],
                3,
            )?;
            Ok(all.reshape((1, f * h * w, 1, hd))?)
        };
        Ok((grid(&self.rope.0)?, grid(&self.rope.1)?))
    }

    /// `[B, S, H, hd]` rotated by adjacent channel pairs.
    fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let (b, s, h, hd) = x.dims4()?;
        let pairs = x.reshape((b, s, h, hd / 2, 2))?;
        let x1 = pairs.narrow(4, 0, 1)?;
        let x2 = pairs.narrow(4, 1, 1)?;
        let c = cos.reshape((1, s, 1, hd / 2, 2))?.narrow(4, 0, 1)?;
        let sn = sin.reshape((1, s, 1, hd / 2, 2))?.narrow(4, 1, 1)?;
        let even = (x1.broadcast_mul(&c)? - x2.broadcast_mul(&sn)?)?;
        let odd = (x1.broadcast_mul(&sn)? + x2.broadcast_mul(&c)?)?;
        Ok(Tensor::cat(&[even, odd], 4)?.reshape((b, s, h, hd))?)
    }

    fn heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (h, hd) = (
            self.config.num_attention_heads,
            self.config.attention_head_dim,
        );
        Ok(x.reshape((b, s, h, hd))?)
    }

    fn self_attention(&self, a: &Attention, x: &Tensor, rope: &(Tensor, Tensor)) -> Result<Tensor> {
        let eps = self.config.eps;
        let q = rms_norm(&a.q.forward_f32(x)?, Some(&a.norm_q), eps)?;
        let k = rms_norm(&a.k.forward_f32(x)?, Some(&a.norm_k), eps)?;
        let v = a.v.forward_f32(x)?;
        let q = Self::rotate(&self.heads(&q)?, &rope.0, &rope.1)?;
        let k = Self::rotate(&self.heads(&k)?, &rope.0, &rope.1)?;
        let v = self.heads(&v)?;
        let out = crate::kernels::attention(
            &q.transpose(1, 2)?,
            &k.transpose(1, 2)?,
            &v.transpose(1, 2)?,
            None,
        )?;
        a.o.forward_f32(&out)
    }

    fn cross_attention(&self, a: &Attention, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let eps = self.config.eps;
        let (img, text) = match &a.added {
            Some(_) => {
                let n = ctx.dim(1)?;
                if n < TEXT_LEN {
                    return Err(GpuError::invalid(
                        "encoder_hidden_states",
                        format!("{n} context rows; image-to-video needs {TEXT_LEN} text rows after the image tokens"),
                    ));
                }
                (
                    Some(ctx.narrow(1, 0, n - TEXT_LEN)?),
                    ctx.narrow(1, n - TEXT_LEN, TEXT_LEN)?,
                )
            }
            None => (None, ctx.clone()),
        };
        let q = self
            .heads(&rms_norm(&a.q.forward_f32(x)?, Some(&a.norm_q), eps)?)?
            .transpose(1, 2)?;
        let k = self.heads(&rms_norm(&a.k.forward_f32(&text)?, Some(&a.norm_k), eps)?)?;
        let v = self.heads(&a.v.forward_f32(&text)?)?;
        let mut out =
            crate::kernels::attention(&q, &k.transpose(1, 2)?, &v.transpose(1, 2)?, None)?;
        if let (Some(img), Some((ak, av, nk))) = (img, &a.added) {
            let k = self.heads(&rms_norm(&ak.forward_f32(&img)?, Some(nk), eps)?)?;
            let v = self.heads(&av.forward_f32(&img)?)?;
            let o = crate::kernels::attention(&q, &k.transpose(1, 2)?, &v.transpose(1, 2)?, None)?;
            // The reference adds the text result to the image one.
            out = (o + out)?;
        }
        a.o.forward_f32(&out)
    }

    /// One forward pass: `latents` `[B, C_in, F, H, W]`, `timestep` `[B]`
    /// (the sampler's integer timesteps as floats), `text` `[B, L, text_dim]`
    /// and, for image-to-video, `image` `[B, N, image_dim]` (CLIP's
    /// penultimate tokens). Returns the flow velocity `[B, C_out, F, H, W]`.
    pub fn forward(
        &self,
        latents: &Tensor,
        timestep: &Tensor,
        text: &Tensor,
        image: Option<&Tensor>,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (b, c, f, h, w) = latents.dims5()?;
        let [pt, ph, pw] = cfg.patch_size;
        if c != cfg.in_channels || f % pt != 0 || h % ph != 0 || w % pw != 0 {
            return Err(GpuError::invalid(
                "latents",
                format!(
                    "shape {:?}: {} channels and frames/height/width divisible by {:?}",
                    latents.dims(),
                    cfg.in_channels,
                    cfg.patch_size
                ),
            ));
        }
        let (fp, hp, wp) = (f / pt, h / ph, w / pw);
        let d = cfg.dim();
        let eps = cfg.eps;
        let rope = self.rope_for(fp, hp, wp)?;
        // The stride-p patch convolution as one linear map over each
        // patch's (channel, t, y, x) values, in the weight's order.
        let k = c * pt * ph * pw;
        let patches = latents
            .reshape(vec![b, c, fp, pt, hp, ph, wp, pw])?
            .permute([0, 2, 4, 6, 1, 3, 5, 7])?
            .contiguous()?
            .reshape((b, fp * hp * wp, k))?;
        let embed = Linear {
            weight: self.patch.reshape((d, k))?,
            bias: Some(self.patch_bias.clone()),
            // A convolution run as a linear map: no adapter targets it.
            name: "".into(),
        };
        let x = embed
            .forward(&patches.to_dtype(self.patch.dtype())?)?
            .to_dtype(DType::F32)?;
        let temb = self.time.forward(timestep)?.to_dtype(DType::F32)?;
        // Per row, as the timestep embedder runs (a job's bits must not
        // depend on its batch).
        let proj = self
            .time_proj
            .forward_f32(&crate::kernels::silu(&temb)?.unsqueeze(1)?)?
            .to_dtype(DType::F32)?
            .reshape((b, 6, d))?;
        let mut ctx = self
            .text_2
            .forward_f32(&self.text_1.forward_f32(text)?.gelu()?)?;
        if let Some((n1, l1, l2, n2)) = &self.image {
            let Some(img) = image else {
                return Err(GpuError::invalid(
                    "image",
                    "an image-to-video model needs image tokens",
                ));
            };
            let e = n1.forward(&img.to_dtype(DType::F32)?, 1e-5)?;
            let e = n2.forward(&l2.forward_f32(&l1.forward_f32(&e)?.gelu_erf()?)?, 1e-5)?;
            ctx = Tensor::cat(&[&e, &ctx], 1)?;
        }
        let mut x = x;
        for blk in &self.blocks {
            let m = blk.table.broadcast_add(&proj)?;
            let part = |i: usize| m.narrow(1, i, 1);
            let (shift, scale, gate) = (part(0)?, part(1)?, part(2)?);
            let (c_shift, c_scale, c_gate) = (part(3)?, part(4)?, part(5)?);
            let n = layer_norm_plain(&x, eps)?
                .broadcast_mul(&(scale + 1.0)?)?
                .broadcast_add(&shift)?;
            let a = self.self_attention(&blk.attn1, &n, &rope)?;
            x = (x + a.broadcast_mul(&gate)?)?;
            let n = match &blk.norm2 {
                Some(norm) => norm.forward(&x, eps)?,
                None => x.clone(),
            };
            x = (&x + self.cross_attention(&blk.attn2, &n, &ctx)?)?;
            let n = layer_norm_plain(&x, eps)?
                .broadcast_mul(&(c_scale + 1.0)?)?
                .broadcast_add(&c_shift)?;
            let ff = blk
                .ff_out
                .forward_f32(&blk.ff_in.forward_f32(&n)?.gelu()?)?;
            x = (x + ff.broadcast_mul(&c_gate)?)?;
        }
        let m = self.table.broadcast_add(&temb.unsqueeze(1)?)?;
        let (shift, scale) = (m.narrow(1, 0, 1)?, m.narrow(1, 1, 1)?);
        let x = layer_norm_plain(&x, eps)?
            .broadcast_mul(&(scale + 1.0)?)?
            .broadcast_add(&shift)?;
        let out = self.proj_out.forward_f32(&x)?;
        let co = cfg.out_channels;
        // [B, F', H', W', pt, ph, pw, C] -> [B, C, F', pt, H', ph, W', pw].
        let out = out
            .reshape(vec![b, fp, hp, wp, pt, ph, pw, co])?
            .permute([0, 7, 1, 4, 2, 5, 3, 6])?
            .contiguous()?
            .reshape((b, co, f, h, w))?;
        Ok(out)
    }
}
