//! Tensor building blocks of the LTX video VAE.
//!
//! Activations inside the VAE use a frame-major layout `[B, F, C, H, W]`:
//! folding `B*F` into the batch dimension is then a free reshape, so a 3D
//! convolution becomes one `conv2d` over frames whose channels are the `k`
//! time taps stacked (`[B*F, k*C, H, W]`), with no permutes on the hot path.
//! Conversion to and from the public `[B, C, F, H, W]` layout happens once at
//! the encoder/decoder boundaries (fused with (un)patchify where possible).

use std::cell::RefCell;
use std::rc::Rc;

use candle_core::{DType, Device, Storage, Tensor};

use crate::error::{GpuError, Result};
use crate::nn::{Linear, TimestepEmbedder};
use crate::weights::Weights;

/// Where parameters come from: a weight store, or a recorder that only
/// notes every (name, shape) that loading asks for (for
/// `expected_tensor_shapes`). Names are relative to the VAE root.
/// Names and shapes requested while recording.
pub(crate) type ShapeLog = Rc<RefCell<Vec<(String, Vec<usize>)>>>;

#[derive(Clone)]
pub(crate) struct Params {
    src: Src,
    prefix: String,
}

#[derive(Clone)]
enum Src {
    Load(Weights),
    Record(ShapeLog),
}

impl Params {
    pub(crate) fn load(w: &Weights) -> Self {
        Params {
            src: Src::Load(w.clone()),
            prefix: String::new(),
        }
    }

    pub(crate) fn recorder() -> (Self, ShapeLog) {
        let log = Rc::new(RefCell::new(Vec::new()));
        let p = Params {
            src: Src::Record(log.clone()),
            prefix: String::new(),
        };
        (p, log)
    }

    pub(crate) fn pp(&self, name: impl AsRef<str>) -> Self {
        Params {
            src: self.src.clone(),
            prefix: format!("{}{}.", self.prefix, name.as_ref()),
        }
    }

    /// True when only recording names: returned tensors are empty
    /// placeholders and must not be transformed.
    pub(crate) fn recording(&self) -> bool {
        matches!(self.src, Src::Record(_))
    }

    /// Shape-checked load of `{prefix}{name}`.
    pub(crate) fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = format!("{}{}", self.prefix, name);
        match &self.src {
            Src::Load(w) => w.get(&full, shape),
            Src::Record(log) => {
                log.borrow_mut().push((full, shape.to_vec()));
                Ok(Tensor::zeros(0, DType::F32, &Device::Cpu)?)
            }
        }
    }

    pub(crate) fn linear(&self, name: &str, in_dim: usize, out_dim: usize) -> Result<Linear> {
        Ok(Linear {
            weight: self.get(&format!("{name}.weight"), &[out_dim, in_dim])?,
            bias: Some(self.get(&format!("{name}.bias"), &[out_dim])?),
            name: name.into(),
        })
    }

    /// diffusers' `PixArtAlphaCombinedTimestepSizeEmbeddings(dim, 0)`: only
    /// its timestep part (`timestep_embedder.linear_1/linear_2`).
    pub(crate) fn time_embedder(&self, dim: usize) -> Result<TimestepEmbedder> {
        let p = self.pp("timestep_embedder");
        Ok(TimestepEmbedder {
            linear_1: p.linear("linear_1", TimestepEmbedder::FREQ_DIM, dim)?,
            linear_2: p.linear("linear_2", dim, dim)?,
        })
    }
}

fn dims5(x: &Tensor, what: &str) -> Result<(usize, usize, usize, usize, usize)> {
    x.dims5().map_err(|_| {
        GpuError::invalid(
            what,
            format!("expected a 5-D tensor, got shape {:?}", x.dims()),
        )
    })
}

/// A 3D convolution as LTX's `LTXVideoCausalConv3d`: cubic kernel `k`,
/// spatial zero padding `k/2`, temporal padding by replicating edge frames
/// (causal: `k-1` copies of the first frame in front; otherwise `(k-1)/2`
/// copies of the first in front and of the last at the back).
pub(crate) struct Conv3d {
    /// `[O, k*I, k, k]`: the time taps stacked on the input channel axis.
    weight: Tensor,
    bias: Tensor,
    k: usize,
    stride_t: usize,
    stride_s: usize,
    causal: bool,
    in_c: usize,
    name: String,
}

impl Conv3d {
    /// Loads `{name}.weight` `[O, I, k, k, k]` and `{name}.bias` `[O]`.
    pub(crate) fn load(
        p: &Params,
        name: &str,
        in_c: usize,
        out_c: usize,
        k: usize,
        stride: (usize, usize),
        causal: bool,
    ) -> Result<Self> {
        let w = p.get(&format!("{name}.weight"), &[out_c, in_c, k, k, k])?;
        let bias = p.get(&format!("{name}.bias"), &[out_c])?;
        let weight = if p.recording() {
            w
        } else {
            w.permute((0, 2, 1, 3, 4))?
                .contiguous()?
                .reshape((out_c, k * in_c, k, k))?
        };
        let bias = if p.recording() {
            bias
        } else {
            bias.reshape((1, out_c, 1, 1))?
        };
        Ok(Conv3d {
            weight,
            bias,
            k,
            stride_t: stride.0,
            stride_s: stride.1,
            causal,
            in_c,
            name: format!("{}{name}", p.prefix),
        })
    }

    pub(crate) fn dtype(&self) -> DType {
        self.weight.dtype()
    }

    /// `x`: `[B, F, C, H, W]` -> `[B, F', O, H', W']`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, f, c, h, w) = dims5(x, &self.name)?;
        if c != self.in_c {
            return Err(GpuError::invalid(
                &self.name,
                format!(
                    "input has {c} channels, the convolution expects {}",
                    self.in_c
                ),
            ));
        }
        let k = self.k;
        let (front, back) = if self.causal {
            (k - 1, 0)
        } else {
            ((k - 1) / 2, (k - 1) / 2)
        };
        let padded = f + front + back;
        if f == 0 || padded < k {
            return Err(GpuError::invalid(
                &self.name,
                format!("{f} frames is too few for a temporal kernel of {k}"),
            ));
        }
        let fo = (padded - k) / self.stride_t + 1;
        let x = x.contiguous()?;
        if x.device().is_cpu() {
            // Our CPU conv is f32. candle's CPU backend has no bf16 matmul for
            // the conv2d fallback, so bf16 weights on the CPU (the golden bf16
            // checks) compute in f32 from the stored values and round the
            // result back, as a GPU's bf16 conv accumulates in f32 too.
            let dt = x.dtype();
            let x = x.to_dtype(DType::F32)?;
            let weight = self.weight.to_dtype(DType::F32)?;
            let bias = self.bias.to_dtype(DType::F32)?;
            let o = weight.dim(0)?;
            let g = super::conv_cpu::ConvGeom {
                b,
                f,
                c,
                h,
                w,
                o,
                k,
                stride_t: self.stride_t,
                stride_s: self.stride_s,
                front,
                fo,
            };
            let out = {
                let (xs, xl) = x.storage_and_layout();
                let (ws, wl) = weight.storage_and_layout();
                let (bs, bl) = bias.storage_and_layout();
                match (&*xs, &*ws, &*bs) {
                    (Storage::Cpu(xs), Storage::Cpu(ws), Storage::Cpu(bs)) => {
                        let xv = &xs.as_slice::<f32>()?[xl.start_offset()..];
                        let wv = &ws.as_slice::<f32>()?[wl.start_offset()..];
                        let bv = &bs.as_slice::<f32>()?[bl.start_offset()..];
                        Some(super::conv_cpu::conv3d(xv, wv, bv, &g))
                    }
                    _ => None,
                }
            };
            if let Some(out) = out {
                return Ok(
                    Tensor::from_vec(out, (b, fo, o, g.ho(), g.wo()), x.device())?.to_dtype(dt)?,
                );
            }
        }
        let stacked = if k == 1 && self.stride_t == 1 {
            x.reshape((b * f, c, h, w))?
        } else {
            // Output frame t reads padded frames t*s + j, j < k; replicate
            // padding is a clamp of the source frame index.
            let mut idx = Vec::with_capacity(fo * k);
            for t in 0..fo {
                for j in 0..k {
                    let src = (t * self.stride_t + j) as i64 - front as i64;
                    idx.push(src.clamp(0, f as i64 - 1) as u32);
                }
            }
            let idx = Tensor::from_vec(idx, fo * k, x.device())?;
            x.index_select(&idx, 1)?.reshape((b * fo, k * c, h, w))?
        };
        let y = stacked.conv2d(&self.weight, k / 2, self.stride_s, 1, 1)?;
        let y = y.broadcast_add(&self.bias)?;
        let (_, o, ho, wo) = y.dims4()?;
        Ok(y.reshape((b, fo, o, ho, wo))?)
    }
}

/// RMS normalisation over the channel axis (dim 2 of `[B, F, C, H, W]`),
/// no weight, statistics in f32.
pub(crate) fn rms_norm_channels(x: &Tensor, eps: f64) -> Result<Tensor> {
    let dt = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let ms = xf.sqr()?.mean_keepdim(2)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    Ok(xf.broadcast_mul(&inv)?.to_dtype(dt)?)
}

/// Affine LayerNorm over the channel axis of `[B, F, C, H, W]`.
pub(crate) struct ChannelLayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl ChannelLayerNorm {
    pub(crate) fn load(p: &Params, name: &str, c: usize, eps: f64) -> Result<Self> {
        Ok(ChannelLayerNorm {
            weight: p.get(&format!("{name}.weight"), &[c])?,
            bias: p.get(&format!("{name}.bias"), &[c])?,
            eps,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dt = x.dtype();
        let c = self.weight.dim(0)?;
        let xf = x.to_dtype(DType::F32)?;
        let mean = xf.mean_keepdim(2)?;
        let xc = xf.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(2)?;
        let y = xc.broadcast_mul(&(var + self.eps)?.sqrt()?.recip()?)?;
        let wt = self.weight.to_dtype(DType::F32)?.reshape((1, 1, c, 1, 1))?;
        let bs = self.bias.to_dtype(DType::F32)?.reshape((1, 1, c, 1, 1))?;
        Ok(y.broadcast_mul(&wt)?.broadcast_add(&bs)?.to_dtype(dt)?)
    }
}

/// Depth-to-space: `[B, F, C*s0*s1*s2, H, W]` -> `[B, F*s0, C, H*s1, W*s2]`,
/// input channel `c*s0*s1*s2 + i*s1*s2 + j*s2 + l` going to frame `f*s0+i`,
/// row `h*s1+j`, column `w*s2+l`.
pub(crate) fn depth_to_space(x: &Tensor, s: (usize, usize, usize)) -> Result<Tensor> {
    let (b, f, c, h, w) = dims5(x, "depth_to_space input")?;
    let n = s.0 * s.1 * s.2;
    if c % n != 0 {
        return Err(GpuError::invalid(
            "depth_to_space input",
            format!("{c} channels do not split into groups of {n}"),
        ));
    }
    let co = c / n;
    Ok(x.reshape(vec![b, f, co, s.0, s.1, s.2, h, w])?
        .permute(vec![0, 1, 3, 2, 6, 4, 7, 5])?
        .contiguous()?
        .reshape((b, f * s.0, co, h * s.1, w * s.2))?)
}

/// Space-to-depth, the inverse of `depth_to_space`.
pub(crate) fn space_to_depth(x: &Tensor, s: (usize, usize, usize)) -> Result<Tensor> {
    let (b, f, c, h, w) = dims5(x, "space_to_depth input")?;
    if f % s.0 != 0 || h % s.1 != 0 || w % s.2 != 0 {
        return Err(GpuError::invalid(
            "space_to_depth input",
            format!(
                "frames/height/width {f}x{h}x{w} are not multiples of the stride {}x{}x{}",
                s.0, s.1, s.2
            ),
        ));
    }
    let (fo, ho, wo) = (f / s.0, h / s.1, w / s.2);
    Ok(x.reshape(vec![b, fo, s.0, c, ho, s.1, wo, s.2])?
        .permute(vec![0, 1, 3, 2, 5, 7, 4, 6])?
        .contiguous()?
        .reshape((b, fo, c * s.0 * s.1 * s.2, ho, wo))?)
}

/// `[B, C, F, H, W]` pixels -> `[B, F, C*p*p, H/p, W/p]`, patch channel
/// `c*p*p + w_sub*p + h_sub` (the reference's order).
pub(crate) fn patchify(x: &Tensor, p: usize) -> Result<Tensor> {
    let (b, c, f, h, w) = dims5(x, "video")?;
    if h % p != 0 || w % p != 0 {
        return Err(GpuError::invalid(
            "video",
            format!("height {h} and width {w} must be multiples of the patch size {p}"),
        ));
    }
    let (ho, wo) = (h / p, w / p);
    Ok(x.reshape(vec![b, c, f, ho, p, wo, p])?
        .permute(vec![0, 2, 1, 6, 4, 3, 5])?
        .contiguous()?
        .reshape((b, f, c * p * p, ho, wo))?)
}

/// Inverse of `patchify`: `[B, F, C*p*p, H, W]` -> `[B, C, F, H*p, W*p]`.
pub(crate) fn unpatchify(x: &Tensor, p: usize) -> Result<Tensor> {
    let (b, f, cp, h, w) = dims5(x, "decoder output")?;
    if cp % (p * p) != 0 {
        return Err(GpuError::invalid(
            "decoder output",
            format!("{cp} channels are not a multiple of patch area {}", p * p),
        ));
    }
    let c = cp / (p * p);
    Ok(x.reshape(vec![b, f, c, p, p, h, w])?
        .permute(vec![0, 2, 1, 5, 4, 6, 3])?
        .contiguous()?
        .reshape((b, c, f, h * p, w * p))?)
}

/// `[B, C, F, H, W]` <-> `[B, F, C, H, W]` (the swap is its own inverse).
pub(crate) fn swap_cf(x: &Tensor) -> Result<Tensor> {
    Ok(x.permute((0, 2, 1, 3, 4))?.contiguous()?)
}

/// Seeded noise for the decoder's noise injection: the crate-wide generator
/// on its own stream, so it never shifts the sampler's draws.
pub(crate) struct NoiseRng(crate::rng::NoiseRng);

impl NoiseRng {
    pub(crate) fn new(seed: u64) -> Self {
        NoiseRng(crate::rng::NoiseRng::stream(
            seed,
            crate::rng::STREAM_VAE_INJECT,
        ))
    }

    pub(crate) fn normal(&mut self, n: usize) -> Vec<f32> {
        self.0.normal_vec(n)
    }
}
