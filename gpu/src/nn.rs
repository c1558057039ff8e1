//! Small building blocks shared by the T5, transformer and VAE code.

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::weights::Weights;

/// A PyTorch-layout linear layer: weight `[out, in]`, optional bias `[out]`.
#[derive(Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// The weight's name without `.weight` (from the component's root):
    /// what a LoRA adapter names the layer by (`crate::lora`).
    pub name: std::sync::Arc<str>,
}

impl Linear {
    /// Loads `{name}.weight` (and `{name}.bias` when `bias`), shape-checked.
    pub fn load(
        w: &Weights,
        name: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = w.get(&format!("{name}.weight"), &[out_dim, in_dim])?;
        let bias = if bias {
            Some(w.get(&format!("{name}.bias"), &[out_dim])?)
        } else {
            None
        };
        let full = w.full_name(name);
        w.record_linear(&full, out_dim, in_dim);
        Ok(Linear {
            weight,
            bias,
            name: full.into(),
        })
    }

    /// [`Self::forward`] on an f32 activation in the weight's dtype (bf16
    /// weights: a bf16 GEMM), returned as f32: what models whose norms and
    /// residuals stay in f32 call.
    pub fn forward_f32(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.forward(&x.to_dtype(self.weight.dtype())?)?;
        Ok(y.to_dtype(DType::F32)?)
    }

    pub fn out_dim(&self) -> usize {
        self.weight.dim(0).unwrap_or(0)
    }

    /// Applies to the last dimension of `x`, any leading shape.
    ///
    /// On the CPU a 3-D input `[B,S,in]` runs one GEMM per batch item: a
    /// single `(B*S, in)` GEMM would pick its blocking from B*S, so a job's
    /// bits would depend on which other jobs share its batch. Per-item GEMMs
    /// keep step-level batching bit-identical to running alone there. On a
    /// GPU the batch is one GEMM: per-item GEMMs would cost a concatenation
    /// pass per layer (~12% of an LTX-2B step), and cuBLAS does not promise
    /// shape-independent bits anyway.
    ///
    /// A LoRA adapter in scope for this layer (`crate::lora::scoped`) adds
    /// its side product to the rows of the jobs that apply it.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.base(x)?;
        let Some(deltas) = crate::lora::deltas(&self.name, x)? else {
            return Ok(y);
        };
        let rows = deltas
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let yi = y.narrow(0, i, 1)?;
                Ok(match d {
                    Some(d) => (yi + d.to_dtype(y.dtype())?)?,
                    None => yi,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&rows, 0)?)
    }

    /// `x W^T + b` alone.
    fn base(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() == 3 && x.dim(0)? > 1 && x.device().is_cpu() {
            let items = (0..x.dim(0)?)
                .map(|i| self.base(&x.narrow(0, i, 1)?))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Tensor::cat(&items, 0)?);
        }
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((rows, in_dim))?;
        let mut y = x2.matmul(&self.weight.t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = self.out_dim();
        Ok(y.reshape(out_dims)?)
    }
}

// The reference norms live beside their fused CUDA kernels.
pub use crate::kernels::{layer_norm_plain, rms_norm};

/// Sinusoidal timestep features as diffusers' `get_timestep_embedding`.
/// `t` is 1-D `[N]`; output `[N, dim]`.
pub fn timestep_embedding(
    t: &Tensor,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> Result<Tensor> {
    let half = dim / 2;
    // f32 throughout, in the reference's order: at t ~ 1000 the argument's
    // last bit matters for sin/cos.
    let neg_log = -(10000f64.ln() as f32);
    let denom = (half as f64 - freq_shift) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (neg_log * i as f32 / denom).exp())
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = t
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?;
    let (sin, cos) = (args.sin()?, args.cos()?);
    let emb = if flip_sin_to_cos {
        Tensor::cat(&[cos, sin], 1)?
    } else {
        Tensor::cat(&[sin, cos], 1)?
    };
    if dim % 2 == 1 {
        let n = emb.dim(0)?;
        let z = Tensor::zeros((n, 1), DType::F32, t.device())?;
        return Ok(Tensor::cat(&[emb, z], 1)?);
    }
    Ok(emb)
}

/// `linear_1 -> SiLU -> linear_2` over 256-channel sinusoids (flip to cos/sin,
/// shift 0): diffusers' `TimestepEmbedding` behind `Timesteps(256, True, 0)`.
#[derive(Clone)]
pub struct TimestepEmbedder {
    pub linear_1: Linear,
    pub linear_2: Linear,
}

impl TimestepEmbedder {
    pub const FREQ_DIM: usize = 256;

    pub fn load(w: &Weights, dim: usize) -> Result<Self> {
        Ok(TimestepEmbedder {
            linear_1: Linear::load(w, "linear_1", Self::FREQ_DIM, dim, true)?,
            linear_2: Linear::load(w, "linear_2", dim, dim, true)?,
        })
    }

    /// `t`: `[N]` in the model's timestep units. Output `[N, dim]` in the
    /// weights' dtype. The rows go through the linears as `[N, 1, dim]`,
    /// one GEMM per row on the CPU (see [`Linear::forward`]): a GEMM of N
    /// rows picks another kernel than one row, and a job's bits must not
    /// depend on how many jobs share its step.
    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
        let f = timestep_embedding(t, Self::FREQ_DIM, true, 0.0)?
            .to_dtype(self.linear_1.weight.dtype())?
            .unsqueeze(1)?;
        let h = crate::kernels::silu(&self.linear_1.forward(&f)?)?;
        Ok(self.linear_2.forward(&h)?.squeeze(1)?)
    }
}

/// `out[x] = src[x + shift]`, zero where that falls outside `src`: one
/// im2col row segment of a stride-1 convolution (`vae/conv_cpu.rs`,
/// `onnx/cpu.rs`) as a single contiguous copy.
pub(crate) fn copy_shifted(src: &[f32], out: &mut [f32], shift: isize) {
    let lo = (-shift).clamp(0, out.len() as isize) as usize;
    let hi = (src.len() as isize - shift).clamp(lo as isize, out.len() as isize) as usize;
    out[..lo].fill(0.0);
    out[lo..hi]
        .copy_from_slice(&src[(lo as isize + shift) as usize..(hi as isize + shift) as usize]);
    out[hi..].fill(0.0);
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]` on dense row-major f32 slices:
/// the one GEMM call of our CPU convolutions (`vae/conv_cpu.rs`,
/// `onnx/cpu.rs`). `accumulate` adds to what `dst` holds (a bias written
/// first) instead of overwriting it.
///
/// Panics (a bug in the caller) when a slice is shorter than its shape.
pub(crate) fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    rhs: &[f32],
    par: gemm::Parallelism,
) {
    assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
    // SAFETY: the three buffers are dense row-major with the strides given
    // and at least the sizes asserted above; `dst` is a unique borrow, so
    // it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Layer normalisation over the last dimension with a weight and a bias
/// (`{name}.weight`, `{name}.bias`): BERT's and CLIP's.
pub struct AffineNorm {
    w: Tensor,
    b: Tensor,
}

impl AffineNorm {
    pub fn load(w: &Weights, name: &str, d: usize) -> Result<AffineNorm> {
        Ok(AffineNorm {
            w: w.get(&format!("{name}.weight"), &[d])?,
            b: w.get(&format!("{name}.bias"), &[d])?,
        })
    }

    pub fn forward(&self, x: &Tensor, eps: f64) -> Result<Tensor> {
        let dt = x.dtype();
        Ok(layer_norm_plain(x, eps)?
            .broadcast_mul(&self.w.to_dtype(dt)?)?
            .broadcast_add(&self.b.to_dtype(dt)?)?)
    }
}
