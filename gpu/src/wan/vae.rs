//! The Wan 2.1 VAE (diffusers' `AutoencoderKLWan`): causal 3D convolutions
//! run chunk by chunk in time with the reference's feature cache. The
//! decoder takes one latent frame at a time; the encoder takes frame 0, then
//! four frames at a time. Every cached convolution keeps the last two frames
//! of its own input for the next chunk; temporal upsampling does nothing to
//! the first chunk and doubles later ones, temporal downsampling keeps the
//! first chunk's frame and runs its stride-2 convolution over the previous
//! chunk's last frame and the new ones. That chunked computation, not a
//! convolution over the whole sequence, is what the reference computes, so
//! it is what this file computes.
//!
//! Layout is the reference's `[B, C, T, H, W]`. candle has no 3D
//! convolution: each output frame's `k` input frames are stacked as
//! channels and convolved in 2D with the kernel laid out to match.

use candle_core::{DType, Tensor};
use serde::Deserialize;

use crate::error::{GpuError, Result};
use crate::weights::Weights;

/// `vae/config.json` of a diffusers Wan checkpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct WanVaeConfig {
    #[serde(default = "base")]
    pub base_dim: usize,
    #[serde(default)]
    pub decoder_base_dim: Option<usize>,
    #[serde(default = "z")]
    pub z_dim: usize,
    #[serde(default = "mult")]
    pub dim_mult: Vec<usize>,
    #[serde(default = "two")]
    pub num_res_blocks: usize,
    #[serde(default)]
    pub attn_scales: Vec<f64>,
    #[serde(default = "down")]
    pub temperal_downsample: Vec<bool>,
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    #[serde(default)]
    pub is_residual: bool,
    #[serde(default)]
    pub patch_size: Option<usize>,
    /// Per-channel statistics latents are normalised with (config lists).
    #[serde(default)]
    pub latents_mean: Vec<f64>,
    #[serde(default)]
    pub latents_std: Vec<f64>,
}

fn base() -> usize {
    96
}
fn z() -> usize {
    16
}
fn mult() -> Vec<usize> {
    vec![1, 2, 4, 4]
}
fn two() -> usize {
    2
}
fn three() -> usize {
    3
}
fn down() -> Vec<bool> {
    vec![false, true, true]
}

impl WanVaeConfig {
    /// The per-channel statistics latents are normalised with, as
    /// `[1, z, 1, 1, 1]` tensors `(mean, std)`.
    pub fn latent_stats(&self, dev: &candle_core::Device) -> Result<(Tensor, Tensor)> {
        let z = self.z_dim;
        if self.latents_mean.len() != z || self.latents_std.len() != z {
            return Err(GpuError::config(
                "wan vae config",
                format!("latents_mean / latents_std need {z} values each"),
            ));
        }
        let stat = |v: &[f64]| -> Result<Tensor> {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Ok(Tensor::from_vec(v, (1, z, 1, 1, 1), dev)?)
        };
        Ok((stat(&self.latents_mean)?, stat(&self.latents_std)?))
    }

    fn check(&self) -> Result<()> {
        let bad = |m: String| Err(GpuError::config("wan vae config", m));
        if self.is_residual || self.patch_size.is_some() {
            return bad("is_residual / patch_size (the Wan 2.2 VAE) are not supported".into());
        }
        if !self.attn_scales.is_empty() {
            return bad("attn_scales must be empty (as in Wan 2.1)".into());
        }
        if self.dim_mult.is_empty() || self.temperal_downsample.len() + 1 != self.dim_mult.len() {
            return bad(format!(
                "dim_mult {:?} needs one temperal_downsample flag fewer ({:?})",
                self.dim_mult, self.temperal_downsample
            ));
        }
        Ok(())
    }
}

/// A convolution over `[B, C, T, H, W]` with causal time padding (zeros,
/// or the cached frames of the previous chunk) and symmetric spatial
/// padding.
struct CausalConv {
    /// `[O, kt·C, kh, kw]`: the kernel with its time taps as channel groups.
    weight: Tensor,
    bias: Tensor,
    kt: usize,
    stride_t: usize,
    /// Frames of zeros in front when there is no cache.
    front: usize,
    pad_s: usize,
}

impl CausalConv {
    fn load(
        w: &Weights,
        name: &str,
        i: usize,
        o: usize,
        k: [usize; 3],
        stride_t: usize,
        pad: [usize; 3],
    ) -> Result<Self> {
        let weight = w.get(&format!("{name}.weight"), &[o, i, k[0], k[1], k[2]])?;
        let weight =
            weight
                .permute([0, 2, 1, 3, 4])?
                .contiguous()?
                .reshape((o, k[0] * i, k[1], k[2]))?;
        Ok(CausalConv {
            weight,
            bias: w.get(&format!("{name}.bias"), &[o])?,
            kt: k[0],
            stride_t,
            front: 2 * pad[0],
            pad_s: pad[1],
        })
    }

    /// The usual 3x3x3 (padding 1) or 1x1x1 convolution.
    fn cube(w: &Weights, name: &str, i: usize, o: usize, k: usize) -> Result<Self> {
        let p = k / 2;
        Self::load(w, name, i, o, [k; 3], 1, [p; 3])
    }

    fn forward(&self, x: &Tensor, cache: Option<&Tensor>) -> Result<Tensor> {
        let mut x = x.clone();
        let mut front = self.front;
        if let (Some(c), true) = (cache, front > 0) {
            x = Tensor::cat(&[c, &x], 2)?;
            front = front.saturating_sub(c.dim(2)?);
        }
        if front > 0 {
            x = x.pad_with_zeros(2, front, 0)?;
        }
        let (b, c, t, h, w) = x.dims5()?;
        if t < self.kt {
            return Err(GpuError::invalid(
                "wan vae",
                format!("{t} frames into a {}-frame kernel", self.kt),
            ));
        }
        let to = (t - self.kt) / self.stride_t + 1;
        let idx: Vec<u32> = (0..to)
            .flat_map(|o| (0..self.kt).map(move |j| (o * self.stride_t + j) as u32))
            .collect();
        let idx = Tensor::from_vec(idx, to * self.kt, x.device())?;
        let stacked = x
            .index_select(&idx, 2)?
            .reshape(vec![b, c, to, self.kt, h, w])?
            .permute([0, 2, 3, 1, 4, 5])?
            .contiguous()?
            .reshape((b * to, self.kt * c, h, w))?;
        // bf16 weights: a bf16 convolution on a GPU; everything around it
        // is f32.
        let wt = conv_weight(&self.weight)?;
        let y = stacked
            .to_dtype(wt.dtype())?
            .conv2d(&wt, self.pad_s, 1, 1, 1)?
            .to_dtype(DType::F32)?
            .broadcast_add(&self.bias.to_dtype(DType::F32)?.reshape((1, (), 1, 1))?)?;
        let (_, o, ho, wo) = y.dims4()?;
        Ok(y.reshape((b, to, o, ho, wo))?
            .permute([0, 2, 1, 3, 4])?
            .contiguous()?)
    }
}

/// A convolution kernel as it runs here: candle's CPU convolution has no
/// bf16, so there bf16 weights convolve in f32 (their rounding is kept).
pub(crate) fn conv_weight(w: &Tensor) -> Result<Tensor> {
    if w.device().is_cpu() && w.dtype() != DType::F32 {
        return Ok(w.to_dtype(DType::F32)?);
    }
    Ok(w.clone())
}

/// One cache slot: nothing yet, the upsampler's first-chunk mark, or the
/// frames kept from the previous chunk.
enum Slot {
    Empty,
    Rep,
    Frames(Tensor),
}

/// The feature cache of one encode or decode, walked in the same order
/// every chunk.
struct Cache {
    slots: Vec<Slot>,
    idx: usize,
}

impl Cache {
    fn new() -> Cache {
        Cache {
            slots: Vec::new(),
            idx: 0,
        }
    }

    fn next(&mut self) -> usize {
        if self.slots.len() <= self.idx {
            self.slots.push(Slot::Empty);
        }
        self.idx += 1;
        self.idx - 1
    }
}

/// The last `n` frames of `x`.
fn last(x: &Tensor, n: usize) -> Result<Tensor> {
    let t = x.dim(2)?;
    Ok(x.narrow(2, t - n.min(t), n.min(t))?)
}

/// A cached causal convolution: what the reference does around every
/// `WanCausalConv3d` that pads in time.
fn cached(conv: &CausalConv, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
    let i = cache.next();
    let mut keep = last(x, 2)?;
    if keep.dim(2)? < 2 {
        if let Slot::Frames(prev) = &cache.slots[i] {
            keep = Tensor::cat(&[&last(prev, 1)?, &keep], 2)?;
        }
    }
    let out = match &cache.slots[i] {
        Slot::Frames(prev) => conv.forward(x, Some(prev))?,
        _ => conv.forward(x, None)?,
    };
    cache.slots[i] = Slot::Frames(keep);
    Ok(out)
}

/// `F.normalize` over channels (dim 1) × √C × γ.
fn rms(x: &Tensor, gamma: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?
        .affine((c as f64).sqrt(), 0.0)?
        .broadcast_mul(&gamma.to_dtype(x.dtype())?)?)
}

struct ResBlock {
    norm1: Tensor,
    conv1: CausalConv,
    norm2: Tensor,
    conv2: CausalConv,
    shortcut: Option<CausalConv>,
}

impl ResBlock {
    fn load(w: &Weights, i: usize, o: usize) -> Result<Self> {
        Ok(ResBlock {
            norm1: w.get("norm1.gamma", &[i, 1, 1, 1])?,
            conv1: CausalConv::cube(w, "conv1", i, o, 3)?,
            norm2: w.get("norm2.gamma", &[o, 1, 1, 1])?,
            conv2: CausalConv::cube(w, "conv2", o, o, 3)?,
            shortcut: if i != o {
                Some(CausalConv::cube(w, "conv_shortcut", i, o, 1)?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let h = match &self.shortcut {
            Some(s) => s.forward(x, None)?,
            None => x.clone(),
        };
        let y = rms(x, &self.norm1)?.silu()?;
        let y = cached(&self.conv1, &y, cache)?;
        let y = rms(&y, &self.norm2)?.silu()?;
        let y = cached(&self.conv2, &y, cache)?;
        Ok((y + h)?)
    }
}

/// The mid block's single-head attention over each frame's pixels.
struct Attn {
    norm: Tensor,
    qkv_w: Tensor,
    qkv_b: Tensor,
    proj_w: Tensor,
    proj_b: Tensor,
}

impl Attn {
    fn load(w: &Weights, c: usize) -> Result<Self> {
        // One attention per frame in the mid block: kept in f32.
        let f = |name: &str, shape: &[usize]| -> Result<Tensor> {
            Ok(w.get(name, shape)?.to_dtype(DType::F32)?)
        };
        Ok(Attn {
            norm: f("norm.gamma", &[c, 1, 1])?,
            qkv_w: f("to_qkv.weight", &[3 * c, c, 1, 1])?.reshape((3 * c, c))?,
            qkv_b: f("to_qkv.bias", &[3 * c])?,
            proj_w: f("proj.weight", &[c, c, 1, 1])?.reshape((c, c))?,
            proj_b: f("proj.bias", &[c])?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t, h, w) = x.dims5()?;
        let frames = x
            .permute([0, 2, 1, 3, 4])?
            .contiguous()?
            .reshape((b * t, c, h, w))?;
        let n = rms(&frames, &self.norm)?;
        // [BT, C, HW] -> [BT, HW, C]
        let tokens = n
            .reshape((b * t, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let qkv = tokens
            .broadcast_matmul(&self.qkv_w.t()?)?
            .broadcast_add(&self.qkv_b)?;
        let q = qkv.narrow(2, 0, c)?.contiguous()?;
        let k = qkv.narrow(2, c, c)?.contiguous()?;
        let v = qkv.narrow(2, 2 * c, c)?.contiguous()?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (c as f64).sqrt()))?;
        let probs = crate::kernels::softmax_last_dim(&scores)?;
        let o = probs
            .matmul(&v)?
            .broadcast_matmul(&self.proj_w.t()?)?
            .broadcast_add(&self.proj_b)?;
        let o = o
            .transpose(1, 2)?
            .reshape((b, t, c, h, w))?
            .permute([0, 2, 1, 3, 4])?;
        Ok((o + x)?)
    }
}

struct Mid {
    res0: ResBlock,
    attn: Attn,
    res1: ResBlock,
}

impl Mid {
    fn load(w: &Weights, c: usize) -> Result<Self> {
        Ok(Mid {
            res0: ResBlock::load(&w.pp("resnets.0"), c, c)?,
            attn: Attn::load(&w.pp("attentions.0"), c)?,
            res1: ResBlock::load(&w.pp("resnets.1"), c, c)?,
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let x = self.res0.forward(x, cache)?;
        let x = self.attn.forward(&x)?;
        self.res1.forward(&x, cache)
    }
}

/// 2D convolution applied to every frame of `[B, C, T, H, W]`.
fn per_frame(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let (b, c, t, h, w) = x.dims5()?;
    let y = f(&x
        .permute([0, 2, 1, 3, 4])?
        .contiguous()?
        .reshape((b * t, c, h, w))?)?;
    let (_, o, ho, wo) = y.dims4()?;
    Ok(y.reshape((b, t, o, ho, wo))?
        .permute([0, 2, 1, 3, 4])?
        .contiguous()?)
}

struct Conv2 {
    weight: Tensor,
    bias: Tensor,
}

impl Conv2 {
    fn load(w: &Weights, name: &str, i: usize, o: usize) -> Result<Self> {
        Ok(Conv2 {
            weight: w.get(&format!("{name}.weight"), &[o, i, 3, 3])?,
            bias: w.get(&format!("{name}.bias"), &[o])?,
        })
    }

    fn forward(&self, x: &Tensor, pad: usize, stride: usize) -> Result<Tensor> {
        let wt = conv_weight(&self.weight)?;
        Ok(x.to_dtype(wt.dtype())?
            .conv2d(&wt, pad, stride, 1, 1)?
            .to_dtype(DType::F32)?
            .broadcast_add(&self.bias.to_dtype(DType::F32)?.reshape((1, (), 1, 1))?)?)
    }
}

enum Resample {
    Up {
        conv: Conv2,
        time: Option<CausalConv>,
    },
    Down {
        conv: Conv2,
        time: Option<CausalConv>,
    },
}

impl Resample {
    fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        match self {
            Resample::Up { conv, time } => {
                let mut x = x.clone();
                if let Some(tc) = time {
                    let i = cache.next();
                    if matches!(cache.slots[i], Slot::Empty) {
                        // The first chunk is not upsampled in time.
                        cache.slots[i] = Slot::Rep;
                    } else {
                        let mut keep = last(&x, 2)?;
                        if keep.dim(2)? < 2 {
                            let before = match &cache.slots[i] {
                                Slot::Frames(prev) => last(prev, 1)?,
                                _ => keep.zeros_like()?,
                            };
                            keep = Tensor::cat(&[&before, &keep], 2)?;
                        }
                        let y = match &cache.slots[i] {
                            Slot::Frames(prev) => tc.forward(&x, Some(prev))?,
                            _ => tc.forward(&x, None)?,
                        };
                        cache.slots[i] = Slot::Frames(keep);
                        let (b, c2, t, h, w) = y.dims5()?;
                        let c = c2 / 2;
                        x = y
                            .reshape(vec![b, 2, c, t, h, w])?
                            .permute([0, 2, 3, 1, 4, 5])?
                            .contiguous()?
                            .reshape((b, c, 2 * t, h, w))?;
                    }
                }
                per_frame(&x, |f| {
                    let (_, _, h, w) = f.dims4()?;
                    conv.forward(&f.upsample_nearest2d(2 * h, 2 * w)?, 1, 1)
                })
            }
            Resample::Down { conv, time } => {
                let x = per_frame(x, |f| {
                    let f = f.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
                    conv.forward(&f, 0, 2)
                })?;
                let Some(tc) = time else { return Ok(x) };
                let i = cache.next();
                match &cache.slots[i] {
                    Slot::Frames(prev) => {
                        let keep = last(&x, 1)?;
                        let y = tc.forward(&Tensor::cat(&[&last(prev, 1)?, &x], 2)?, None)?;
                        cache.slots[i] = Slot::Frames(keep);
                        Ok(y)
                    }
                    _ => {
                        // The first chunk keeps its frame.
                        cache.slots[i] = Slot::Frames(x.clone());
                        Ok(x)
                    }
                }
            }
        }
    }
}

enum Layer {
    Res(ResBlock),
    Resample(Resample),
}

impl Layer {
    fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        match self {
            Layer::Res(r) => r.forward(x, cache),
            Layer::Resample(r) => r.forward(x, cache),
        }
    }
}

/// Encoder or decoder: conv in, layers, norm, SiLU, conv out (with the
/// mid block after the layers in the encoder and before them in the
/// decoder).
struct Coder {
    conv_in: CausalConv,
    mid: Mid,
    layers: Vec<Layer>,
    mid_first: bool,
    norm_out: Tensor,
    conv_out: CausalConv,
}

impl Coder {
    fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        cache.idx = 0;
        let mut x = cached(&self.conv_in, x, cache)?;
        if self.mid_first {
            x = self.mid.forward(&x, cache)?;
        }
        for l in &self.layers {
            x = l.forward(&x, cache)?;
        }
        if !self.mid_first {
            x = self.mid.forward(&x, cache)?;
        }
        let x = rms(&x, &self.norm_out)?.silu()?;
        cached(&self.conv_out, &x, cache)
    }
}

pub struct WanVae {
    pub config: WanVaeConfig,
    encoder: Option<(Coder, CausalConv)>,
    decoder: Option<(CausalConv, Coder)>,
}

impl WanVae {
    /// Loads whichever halves the weights hold (`encoder.*` + `quant_conv`,
    /// `decoder.*` + `post_quant_conv`); at least one must be there.
    pub fn load(w: &Weights, cfg: &WanVaeConfig) -> Result<Self> {
        cfg.check()?;
        let z = cfg.z_dim;
        let encoder = if w.contains("encoder.conv_in.weight") {
            Some((
                Self::load_encoder(&w.pp("encoder"), cfg)?,
                CausalConv::cube(w, "quant_conv", 2 * z, 2 * z, 1)?,
            ))
        } else {
            None
        };
        let decoder = if w.contains("decoder.conv_in.weight") {
            Some((
                CausalConv::cube(w, "post_quant_conv", z, z, 1)?,
                Self::load_decoder(&w.pp("decoder"), cfg)?,
            ))
        } else {
            None
        };
        if encoder.is_none() && decoder.is_none() {
            return Err(GpuError::config(
                "wan vae",
                "neither encoder.* nor decoder.* weights",
            ));
        }
        Ok(WanVae {
            config: cfg.clone(),
            encoder,
            decoder,
        })
    }

    fn load_encoder(w: &Weights, cfg: &WanVaeConfig) -> Result<Coder> {
        let d = cfg.base_dim;
        let dims: Vec<usize> = std::iter::once(1)
            .chain(cfg.dim_mult.iter().copied())
            .map(|m| d * m)
            .collect();
        let mut layers = Vec::new();
        let last = cfg.dim_mult.len() - 1;
        for i in 0..=last {
            let (mut i_dim, o_dim) = (dims[i], dims[i + 1]);
            for _ in 0..cfg.num_res_blocks {
                layers.push(Layer::Res(ResBlock::load(
                    &w.pp(format!("down_blocks.{}", layers.len())),
                    i_dim,
                    o_dim,
                )?));
                i_dim = o_dim;
            }
            if i != last {
                let p = w.pp(format!("down_blocks.{}", layers.len()));
                let time = if cfg.temperal_downsample[i] {
                    Some(CausalConv::load(
                        &p,
                        "time_conv",
                        o_dim,
                        o_dim,
                        [3, 1, 1],
                        2,
                        [0, 0, 0],
                    )?)
                } else {
                    None
                };
                layers.push(Layer::Resample(Resample::Down {
                    conv: Conv2::load(&p, "resample.1", o_dim, o_dim)?,
                    time,
                }));
            }
        }
        let top = dims[dims.len() - 1];
        Ok(Coder {
            conv_in: CausalConv::cube(w, "conv_in", cfg.in_channels, d, 3)?,
            mid: Mid::load(&w.pp("mid_block"), top)?,
            layers,
            mid_first: false,
            norm_out: w.get("norm_out.gamma", &[top, 1, 1, 1])?,
            conv_out: CausalConv::cube(w, "conv_out", top, 2 * cfg.z_dim, 3)?,
        })
    }

    fn load_decoder(w: &Weights, cfg: &WanVaeConfig) -> Result<Coder> {
        let d = cfg.decoder_base_dim.unwrap_or(cfg.base_dim);
        let m = &cfg.dim_mult;
        let dims: Vec<usize> = std::iter::once(m[m.len() - 1])
            .chain(m.iter().rev().copied())
            .map(|x| d * x)
            .collect();
        let up: Vec<bool> = cfg.temperal_downsample.iter().rev().copied().collect();
        let last = m.len() - 1;
        let mut layers = Vec::new();
        for i in 0..=last {
            let p = w.pp(format!("up_blocks.{i}"));
            let mut in_dim = if i > 0 { dims[i] / 2 } else { dims[i] };
            let out_dim = dims[i + 1];
            for j in 0..=cfg.num_res_blocks {
                layers.push(Layer::Res(ResBlock::load(
                    &p.pp(format!("resnets.{j}")),
                    in_dim,
                    out_dim,
                )?));
                in_dim = out_dim;
            }
            if i != last {
                let u = p.pp("upsamplers.0");
                let time = if up[i] {
                    Some(CausalConv::load(
                        &u,
                        "time_conv",
                        out_dim,
                        2 * out_dim,
                        [3, 1, 1],
                        1,
                        [1, 0, 0],
                    )?)
                } else {
                    None
                };
                layers.push(Layer::Resample(Resample::Up {
                    conv: Conv2::load(&u, "resample.1", out_dim, out_dim / 2)?,
                    time,
                }));
            }
        }
        let out = dims[dims.len() - 1];
        Ok(Coder {
            conv_in: CausalConv::cube(w, "conv_in", cfg.z_dim, dims[0], 3)?,
            mid: Mid::load(&w.pp("mid_block"), dims[0])?,
            layers,
            mid_first: true,
            norm_out: w.get("norm_out.gamma", &[out, 1, 1, 1])?,
            conv_out: CausalConv::cube(w, "conv_out", out, cfg.out_channels, 3)?,
        })
    }

    /// De-normalised latents `[B, z, F, h, w]` -> video `[B, 3, 1 + 4(F−1),
    /// 8h, 8w]` in [-1, 1], decoded one latent frame at a time; also
    /// returned before the clamp.
    pub fn decode(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let Some((post, dec)) = &self.decoder else {
            return Err(GpuError::config("wan vae", "no decoder weights loaded"));
        };
        let z = post.forward(&z.to_dtype(DType::F32)?, None)?;
        let mut cache = Cache::new();
        let mut outs = Vec::new();
        for i in 0..z.dim(2)? {
            outs.push(dec.forward(&z.narrow(2, i, 1)?, &mut cache)?);
        }
        let raw = Tensor::cat(&outs, 2)?;
        Ok((raw.clamp(-1f32, 1f32)?, raw))
    }

    /// Video `[B, 3, N, H, W]` (N = 4k+1, values in [-1, 1]) -> the
    /// posterior's mean and standard deviation `[B, z, 1 + k, H/8, W/8]`,
    /// encoded in chunks of frames [0], [1..5], [5..9], ...
    pub fn encode(&self, video: &Tensor) -> Result<(Tensor, Tensor)> {
        let Some((enc, quant)) = &self.encoder else {
            return Err(GpuError::config("wan vae", "no encoder weights loaded"));
        };
        let n = video.dim(2)?;
        if n == 0 || (n - 1) % 4 != 0 {
            return Err(GpuError::invalid(
                "video",
                format!("{n} frames; Wan encodes 4k+1"),
            ));
        }
        let video = video.to_dtype(DType::F32)?;
        let mut cache = Cache::new();
        let mut outs = vec![enc.forward(&video.narrow(2, 0, 1)?, &mut cache)?];
        for i in 0..(n - 1) / 4 {
            outs.push(enc.forward(&video.narrow(2, 1 + 4 * i, 4)?, &mut cache)?);
        }
        let h = quant.forward(&Tensor::cat(&outs, 2)?, None)?;
        let z = self.config.z_dim;
        let mean = h.narrow(1, 0, z)?;
        let logvar = h.narrow(1, z, z)?.clamp(-30f32, 20f32)?;
        Ok((mean, (logvar * 0.5)?.exp()?))
    }
}
