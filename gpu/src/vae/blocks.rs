//! Resnet, down/up-sampling and block modules of the LTX video VAE, on the
//! frame-major `[B, F, C, H, W]` layout (see `ops`).

use candle_core::Tensor;

use super::ops::{
    depth_to_space, rms_norm_channels, space_to_depth, ChannelLayerNorm, Conv3d, NoiseRng, Params,
};
use crate::error::{GpuError, Result};
use crate::nn::TimestepEmbedder;

/// RMSNorm epsilon inside resnets and before the output convolutions.
const RMS_EPS: f64 = 1e-8;

/// Per-batch-item `[B, C]` vector as a `[B, 1, C, 1, 1]` broadcastable.
fn per_channel(v: &Tensor) -> Result<Tensor> {
    let (b, c) = v.dims2()?;
    Ok(v.reshape((b, 1, c, 1, 1))?)
}

/// `LTXVideoResnetBlock3d`.
pub(crate) struct ResnetBlock {
    conv1: Conv3d,
    conv2: Conv3d,
    shortcut: Option<(ChannelLayerNorm, Conv3d)>,
    /// `[C, 1, 1]` each, when noise is injected.
    noise_scales: Option<(Tensor, Tensor)>,
    /// `[4, C]` (shift1, scale1, shift2, scale2) added to the time embedding.
    scale_shift_table: Option<Tensor>,
    in_c: usize,
}

impl ResnetBlock {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn load(
        p: &Params,
        in_c: usize,
        out_c: usize,
        eps: f64,
        causal: bool,
        inject_noise: bool,
        timestep_conditioning: bool,
    ) -> Result<Self> {
        let conv1 = Conv3d::load(&p.pp("conv1"), "conv", in_c, out_c, 3, (1, 1), causal)?;
        let conv2 = Conv3d::load(&p.pp("conv2"), "conv", out_c, out_c, 3, (1, 1), causal)?;
        let shortcut = if in_c != out_c {
            Some((
                ChannelLayerNorm::load(p, "norm3", in_c, eps)?,
                Conv3d::load(
                    &p.pp("conv_shortcut"),
                    "conv",
                    in_c,
                    out_c,
                    1,
                    (1, 1),
                    causal,
                )?,
            ))
        } else {
            None
        };
        let noise_scales = if inject_noise {
            Some((
                p.get("per_channel_scale1", &[in_c, 1, 1])?,
                p.get("per_channel_scale2", &[in_c, 1, 1])?,
            ))
        } else {
            None
        };
        let scale_shift_table = if timestep_conditioning {
            Some(p.get("scale_shift_table", &[4, in_c])?)
        } else {
            None
        };
        Ok(ResnetBlock {
            conv1,
            conv2,
            shortcut,
            noise_scales,
            scale_shift_table,
            in_c,
        })
    }

    fn add_noise(h: &Tensor, scale: &Tensor, rng: &mut NoiseRng) -> Result<Tensor> {
        let (_, _, c, hh, ww) = h.dims5()?;
        let noise =
            Tensor::from_vec(rng.normal(hh * ww), (1, hh, ww), h.device())?.to_dtype(h.dtype())?;
        let scaled = noise.broadcast_mul(scale)?.reshape((1, 1, c, hh, ww))?;
        Ok(h.broadcast_add(&scaled)?)
    }

    /// `temb`: the block's embedded timestep `[B, 4*C]` when conditioned.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        temb: Option<&Tensor>,
        rng: &mut NoiseRng,
    ) -> Result<Tensor> {
        let mods = match (&self.scale_shift_table, temb) {
            (Some(table), Some(t)) => {
                let b = t.dim(0)?;
                let m = t
                    .reshape((b, 4, self.in_c))?
                    .broadcast_add(&table.unsqueeze(0)?)?;
                let parts: Vec<Tensor> = (0..4)
                    .map(|i| per_channel(&m.narrow(1, i, 1)?.squeeze(1)?))
                    .collect::<Result<_>>()?;
                Some(parts)
            }
            (Some(_), None) => {
                return Err(GpuError::invalid(
                    "timestep",
                    "this VAE decoder is timestep-conditioned and needs a decode timestep",
                ))
            }
            _ => None,
        };
        let mut h = rms_norm_channels(x, RMS_EPS)?;
        if let Some(m) = &mods {
            h = h.broadcast_mul(&(&m[1] + 1.0)?)?.broadcast_add(&m[0])?;
        }
        h = self.conv1.forward(&crate::kernels::silu(&h)?)?;
        if let Some((s1, _)) = &self.noise_scales {
            h = Self::add_noise(&h, s1, rng)?;
        }
        h = rms_norm_channels(&h, RMS_EPS)?;
        if let Some(m) = &mods {
            h = h.broadcast_mul(&(&m[3] + 1.0)?)?.broadcast_add(&m[2])?;
        }
        h = self.conv2.forward(&crate::kernels::silu(&h)?)?;
        if let Some((_, s2)) = &self.noise_scales {
            h = Self::add_noise(&h, s2, rng)?;
        }
        let skip = match &self.shortcut {
            Some((norm, conv)) => conv.forward(&norm.forward(x)?)?,
            None => x.clone(),
        };
        Ok((h + skip)?)
    }
}

/// An encoder down-sampling layer.
pub(crate) enum Downsampler {
    /// A stride-2 convolution (`downsample_type` "conv").
    Conv(Conv3d),
    /// `LTXVideoDownsampler3d`: convolution then space-to-depth, plus a
    /// space-to-depth residual averaged over channel groups.
    SpaceToDepth {
        conv: Conv3d,
        stride: (usize, usize, usize),
        group_size: usize,
        out_c: usize,
    },
}

impl Downsampler {
    pub(crate) fn load(
        p: &Params,
        kind: &str,
        in_c: usize,
        out_c: usize,
        causal: bool,
    ) -> Result<Self> {
        let stride = match kind {
            "conv" => {
                return Ok(Downsampler::Conv(Conv3d::load(
                    p,
                    "conv",
                    in_c,
                    in_c,
                    3,
                    (2, 2),
                    causal,
                )?))
            }
            "spatial" => (1, 2, 2),
            "temporal" => (2, 1, 1),
            "spatiotemporal" => (2, 2, 2),
            other => {
                return Err(GpuError::config(
                    "VAE config",
                    format!("unknown downsample_type `{other}`"),
                ))
            }
        };
        let n = stride.0 * stride.1 * stride.2;
        if !out_c.is_multiple_of(n) || !(in_c * n).is_multiple_of(out_c) {
            return Err(GpuError::config(
                "VAE config",
                format!("down block {in_c}->{out_c} channels does not fit a {kind} downsampler"),
            ));
        }
        Ok(Downsampler::SpaceToDepth {
            conv: Conv3d::load(&p.pp("conv"), "conv", in_c, out_c / n, 3, (1, 1), causal)?,
            stride,
            group_size: in_c * n / out_c,
            out_c,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Downsampler::Conv(c) => c.forward(x),
            Downsampler::SpaceToDepth {
                conv,
                stride,
                group_size,
                out_c,
            } => {
                let x = if stride.0 > 1 {
                    Tensor::cat(&[&x.narrow(1, 0, stride.0 - 1)?, x], 1)?
                } else {
                    x.clone()
                };
                let r = space_to_depth(&x, *stride)?;
                let (b, f, _, h, w) = r.dims5()?;
                let r = r.reshape(vec![b, f, *out_c, *group_size, h, w])?.mean(3)?;
                let y = space_to_depth(&conv.forward(&x)?, *stride)?;
                Ok((y + r)?)
            }
        }
    }
}

/// `LTXVideoUpsampler3d` with stride (2, 2, 2): convolution, depth-to-space,
/// first frame dropped; optionally plus a depth-to-space residual of the
/// input tiled over channels.
pub(crate) struct Upsampler {
    conv: Conv3d,
    residual: bool,
    repeats: usize,
}

const UP_STRIDE: (usize, usize, usize) = (2, 2, 2);

impl Upsampler {
    pub(crate) fn load(
        p: &Params,
        in_c: usize,
        causal: bool,
        residual: bool,
        upscale_factor: usize,
    ) -> Result<Self> {
        let n = UP_STRIDE.0 * UP_STRIDE.1 * UP_STRIDE.2;
        if upscale_factor == 0
            || !n.is_multiple_of(upscale_factor)
            || !(in_c * n / upscale_factor).is_multiple_of(n)
        {
            return Err(GpuError::config(
                "VAE config",
                format!(
                    "upsampler with {in_c} channels cannot use upsample_factor {upscale_factor}"
                ),
            ));
        }
        if residual && !in_c.is_multiple_of(n) {
            return Err(GpuError::config(
                "VAE config",
                format!("residual upsampler needs channels divisible by {n}, got {in_c}"),
            ));
        }
        let out_c = in_c * n / upscale_factor;
        Ok(Upsampler {
            conv: Conv3d::load(&p.pp("conv"), "conv", in_c, out_c, 3, (1, 1), causal)?,
            residual,
            repeats: n / upscale_factor,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let drop = UP_STRIDE.0 - 1;
        let y = depth_to_space(&self.conv.forward(x)?, UP_STRIDE)?;
        let frames = y.dim(1)? - drop;
        let y = y.narrow(1, drop, frames)?;
        if !self.residual {
            return Ok(y.contiguous()?);
        }
        let r = depth_to_space(x, UP_STRIDE)?;
        let r = Tensor::cat(&vec![&r; self.repeats], 2)?;
        Ok((y + r.narrow(1, drop, frames)?)?)
    }
}

/// Time embedder of a conditioned block: raw timestep `[B]` -> `[B, dim]`.
pub(crate) fn embed(te: &Option<TimestepEmbedder>, t: Option<&Tensor>) -> Result<Option<Tensor>> {
    match (te, t) {
        (Some(te), Some(t)) => Ok(Some(te.forward(t)?)),
        (Some(_), None) => Err(GpuError::invalid(
            "timestep",
            "this VAE decoder is timestep-conditioned and needs a decode timestep",
        )),
        _ => Ok(None),
    }
}

/// Encoder down block (`LTXVideoDownBlock3D` or `LTXVideo095DownBlock3D`).
pub(crate) struct DownBlock {
    resnets: Vec<ResnetBlock>,
    downsampler: Option<Downsampler>,
    conv_out: Option<ResnetBlock>,
}

pub(crate) struct DownBlockSpec<'a> {
    pub in_c: usize,
    pub out_c: usize,
    pub layers: usize,
    pub eps: f64,
    pub scale: bool,
    pub causal: bool,
    /// `None` for the 0.9.0 block (stride-2 conv, resnet `conv_out` when the
    /// channels change); `Some(downsample_type)` for the 0.9.5 block.
    pub v095: Option<&'a str>,
}

impl DownBlock {
    pub(crate) fn load(p: &Params, s: &DownBlockSpec) -> Result<Self> {
        let resnets = (0..s.layers)
            .map(|i| {
                ResnetBlock::load(
                    &p.pp(format!("resnets.{i}")),
                    s.in_c,
                    s.in_c,
                    s.eps,
                    s.causal,
                    false,
                    false,
                )
            })
            .collect::<Result<_>>()?;
        let dp = p.pp("downsamplers.0");
        let (downsampler, conv_out) = match s.v095 {
            None => {
                let d = if s.scale {
                    Some(Downsampler::load(&dp, "conv", s.in_c, s.in_c, s.causal)?)
                } else {
                    None
                };
                let c = if s.in_c != s.out_c {
                    Some(ResnetBlock::load(
                        &p.pp("conv_out"),
                        s.in_c,
                        s.out_c,
                        s.eps,
                        s.causal,
                        false,
                        false,
                    )?)
                } else {
                    None
                };
                (d, c)
            }
            Some(kind) => {
                let d = if s.scale {
                    Some(Downsampler::load(&dp, kind, s.in_c, s.out_c, s.causal)?)
                } else {
                    None
                };
                (d, None)
            }
        };
        Ok(DownBlock {
            resnets,
            downsampler,
            conv_out,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, rng: &mut NoiseRng) -> Result<Tensor> {
        let mut h = x.clone();
        for r in &self.resnets {
            h = r.forward(&h, None, rng)?;
        }
        if let Some(d) = &self.downsampler {
            h = d.forward(&h)?;
        }
        if let Some(c) = &self.conv_out {
            h = c.forward(&h, None, rng)?;
        }
        Ok(h)
    }
}

/// `LTXVideoMidBlock3d`.
pub(crate) struct MidBlock {
    time_embedder: Option<TimestepEmbedder>,
    resnets: Vec<ResnetBlock>,
}

impl MidBlock {
    pub(crate) fn load(
        p: &Params,
        c: usize,
        layers: usize,
        eps: f64,
        causal: bool,
        inject_noise: bool,
        cond: bool,
    ) -> Result<Self> {
        let time_embedder = if cond {
            Some(p.pp("time_embedder").time_embedder(4 * c)?)
        } else {
            None
        };
        let resnets = (0..layers)
            .map(|i| {
                ResnetBlock::load(
                    &p.pp(format!("resnets.{i}")),
                    c,
                    c,
                    eps,
                    causal,
                    inject_noise,
                    cond,
                )
            })
            .collect::<Result<_>>()?;
        Ok(MidBlock {
            time_embedder,
            resnets,
        })
    }

    pub(crate) fn forward(
        &self,
        x: &Tensor,
        t: Option<&Tensor>,
        rng: &mut NoiseRng,
    ) -> Result<Tensor> {
        let temb = embed(&self.time_embedder, t)?;
        let mut h = x.clone();
        for r in &self.resnets {
            h = r.forward(&h, temb.as_ref(), rng)?;
        }
        Ok(h)
    }
}

/// `LTXVideoUpBlock3d`.
pub(crate) struct UpBlock {
    conv_in: Option<ResnetBlock>,
    time_embedder: Option<TimestepEmbedder>,
    upsampler: Option<Upsampler>,
    resnets: Vec<ResnetBlock>,
}

pub(crate) struct UpBlockSpec {
    pub in_c: usize,
    pub out_c: usize,
    pub layers: usize,
    pub eps: f64,
    pub scale: bool,
    pub causal: bool,
    pub inject_noise: bool,
    pub cond: bool,
    pub residual: bool,
    pub upscale_factor: usize,
}

impl UpBlock {
    pub(crate) fn load(p: &Params, s: &UpBlockSpec) -> Result<Self> {
        let conv_in = if s.in_c != s.out_c {
            if s.cond || s.inject_noise {
                // The reference feeds the raw timestep (and in-channel noise
                // scales) to this resnet, which cannot work; refuse clearly.
                return Err(GpuError::config(
                    "VAE config",
                    format!(
                        "up block {}->{} channels needs a channel-changing resnet, which the reference \
                         does not support with timestep_conditioning or decoder_inject_noise",
                        s.in_c, s.out_c
                    ),
                ));
            }
            Some(ResnetBlock::load(
                &p.pp("conv_in"),
                s.in_c,
                s.out_c,
                s.eps,
                s.causal,
                false,
                false,
            )?)
        } else {
            None
        };
        let time_embedder = if s.cond {
            Some(p.pp("time_embedder").time_embedder(4 * s.out_c)?)
        } else {
            None
        };
        let upsampler = if s.scale {
            Some(Upsampler::load(
                &p.pp("upsamplers.0"),
                s.out_c * s.upscale_factor,
                s.causal,
                s.residual,
                s.upscale_factor,
            )?)
        } else {
            None
        };
        let resnets = (0..s.layers)
            .map(|i| {
                ResnetBlock::load(
                    &p.pp(format!("resnets.{i}")),
                    s.out_c,
                    s.out_c,
                    s.eps,
                    s.causal,
                    s.inject_noise,
                    s.cond,
                )
            })
            .collect::<Result<_>>()?;
        Ok(UpBlock {
            conv_in,
            time_embedder,
            upsampler,
            resnets,
        })
    }

    pub(crate) fn forward(
        &self,
        x: &Tensor,
        t: Option<&Tensor>,
        rng: &mut NoiseRng,
    ) -> Result<Tensor> {
        let mut h = match &self.conv_in {
            Some(c) => c.forward(x, None, rng)?,
            None => x.clone(),
        };
        let temb = embed(&self.time_embedder, t)?;
        if let Some(u) = &self.upsampler {
            h = u.forward(&h)?;
        }
        for r in &self.resnets {
            h = r.forward(&h, temb.as_ref(), rng)?;
        }
        Ok(h)
    }
}

/// Splits `[B, 2*C]` into per-channel (shift, scale) after adding `table`
/// `[2, C]`: the decoder's final modulation.
pub(crate) fn final_shift_scale(temb: &Tensor, table: &Tensor) -> Result<(Tensor, Tensor)> {
    let (b, two_c) = temb.dims2()?;
    let c = two_c / 2;
    let m = temb
        .reshape((b, 2, c))?
        .broadcast_add(&table.unsqueeze(0)?)?;
    let shift = per_channel(&m.narrow(1, 0, 1)?.squeeze(1)?)?;
    let scale = per_channel(&m.narrow(1, 1, 1)?.squeeze(1)?)?;
    Ok((shift, scale))
}
