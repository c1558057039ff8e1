//! Our own fused kernels (sources in `gpu/kernels/*.cu`, compiled at run time
//! with NVRTC under the `cuda` feature) and the dispatch that picks them or
//! the composed candle ops.
//!
//! Every entry point here computes the same function on every backend: on a
//! CUDA tensor it launches the fused kernel, anywhere else (and for shapes a
//! kernel does not cover) it runs the composed reference ops the golden
//! cases were proven with. Callers never branch on the device.

use candle_core::{DType, Tensor, D};

use crate::error::Result;

mod act;
#[cfg(feature = "cuda")]
pub mod cuda;

pub use act::{gelu_tanh, silu, softmax_last_dim};

/// The CUDA C sources, prelude first: what NVRTC compiles at run time and
/// what `scripts/check-kernels.py` compiles in CI.
pub const PRELUDE: &str = include_str!("../../kernels/common.cuh");
pub const ATTENTION_SRC: &str = include_str!("../../kernels/attention.cu");
pub const NORM_SRC: &str = include_str!("../../kernels/norm.cu");

/// Which attention implementation ran (for benchmarks and checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionImpl {
    /// Composed candle ops, score matrix chunked (CPU, odd shapes).
    Composed,
    /// Our SIMT flash kernel (f32, or bf16 with unusual strides).
    Simt,
    /// Our tensor-core flash kernel (bf16, head dims 64/128).
    TensorCore,
}

/// The tensor-core attention kernel for `variant` 1 (plain shared loads), 2
/// (ldmatrix) or 3 (ldmatrix + cp.async double buffer) and `warps` 4 or 8.
/// Variant 3 exists for head dim 64 only (two stages at 128 pass the 48 KiB
/// of static shared memory), so 128 runs variant 2 instead; values outside
/// those sets fall back to (1, 4) so a name always exists in attention.cu.
pub fn tc_kernel_name(variant: usize, warps: usize, head_dim: usize) -> String {
    let variant = match variant {
        3 if head_dim != 64 => 2,
        1..=3 => variant,
        _ => 1,
    };
    let warps = if warps == 8 { 8 } else { 4 };
    format!("attn_mma{variant}_bf16_d{head_dim}_w{warps}")
}

/// The SIMT attention kernel for a dtype and head dim, `None` where there
/// is none (the composed ops run).
pub fn simt_kernel_name(dtype: DType, head_dim: usize) -> Option<String> {
    let ty = match dtype {
        DType::BF16 => "bf16",
        DType::F32 => "f32",
        _ => return None,
    };
    matches!(head_dim, 32 | 64 | 128).then(|| format!("attn_simt_{ty}_d{head_dim}"))
}

/// Softmax attention over per-head views `[B,H,S,dh]` (any strides with a
/// contiguous head dim: `x.reshape((b,s,h,dh)).transpose(1,2)` needs no
/// copy). `bias`: additive `[B,1,1,Sk]` or `[B,Sk]`. Returns `[B,Sq,H*dh]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    Ok(attention_with(q, k, v, bias, None)?.0)
}

/// [`attention`] with an optional forced implementation (benchmarks).
pub fn attention_with(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    force: Option<AttentionImpl>,
) -> Result<(Tensor, AttentionImpl)> {
    #[cfg(feature = "cuda")]
    if q.device().is_cuda() && force != Some(AttentionImpl::Composed) {
        if let Some(r) = cuda::attention(q, k, v, bias, force)? {
            return Ok(r);
        }
    }
    let _ = force;
    Ok((composed_attention(q, k, v, bias)?, AttentionImpl::Composed))
}

/// Bounds the `[1,H,S_q,S_k]` score matrix by processing query rows in
/// chunks; the result is identical to one pass.
const MAX_SCORE_ELEMS: usize = 1 << 26;

/// The reference attention: batch items one at a time (so a job's bits do
/// not depend on its batch mates), scores chunked by query rows.
pub fn composed_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, h, sq, dh) = q.dims4()?;
    let sk = k.dim(2)?;
    let bias = match bias {
        Some(t) if t.rank() == 2 => Some(t.reshape((b, 1, 1, sk))?),
        Some(t) => Some(t.clone()),
        None => None,
    };
    let mut items = Vec::with_capacity(b);
    for i in 0..b {
        let qi = (q.narrow(0, i, 1)? * (1.0 / (dh as f64).sqrt()))?.contiguous()?;
        let ki = k.narrow(0, i, 1)?.contiguous()?;
        let vi = v.narrow(0, i, 1)?.contiguous()?;
        let bi = bias.as_ref().map(|t| t.narrow(0, i, 1)).transpose()?;
        let kt = ki.t()?;
        let rows = (MAX_SCORE_ELEMS / (h * sk).max(1)).max(1);
        let mut outs = Vec::new();
        let mut start = 0;
        while start < sq {
            let n = rows.min(sq - start);
            let qc = if n == sq {
                qi.clone()
            } else {
                qi.narrow(2, start, n)?
            };
            let mut s = qc.matmul(&kt)?;
            if let Some(bias) = &bi {
                s = s.broadcast_add(bias)?;
            }
            let p = softmax_last_dim(&s)?;
            outs.push(p.matmul(&vi)?);
            start += n;
        }
        let o = if outs.len() == 1 {
            outs.remove(0)
        } else {
            Tensor::cat(&outs, 2)?
        };
        items.push(o.transpose(1, 2)?.reshape((1, sq, h * dh))?);
    }
    Ok(Tensor::cat(&items, 0)?)
}

/// Which normalisation [`ada_norm`] applies before the modulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    Rms = 0,
    Layer = 1,
}

/// `norm(x) * (1 + scale) + shift` over the last dim of `x` `[B,S,D]`, with
/// `shift`/`scale` `[B,T,D]`, T = 1 or S (the adaLN pattern).
pub fn ada_norm(
    x: &Tensor,
    shift: &Tensor,
    scale: &Tensor,
    kind: NormKind,
    eps: f64,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() {
        if let Some(y) = cuda::ada_norm(x, shift, scale, kind, eps)? {
            return Ok(y);
        }
    }
    let n = match kind {
        NormKind::Rms => rms_norm(x, None, eps)?,
        NormKind::Layer => layer_norm_plain(x, eps)?,
    };
    Ok(n.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift)?)
}

/// RMSNorm with weight over the last dim of `x` `[B,S,D]`, then the rotary
/// embedding with f32 `cos`/`sin` `[S,D]` (the q/k path of self-attention).
pub fn qk_norm_rope(
    x: &Tensor,
    weight: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() {
        if let Some(y) = cuda::qk_norm_rope(x, weight, cos, sin, eps)? {
            return Ok(y);
        }
    }
    apply_rope(&rms_norm(x, Some(weight), eps)?, cos, sin)
}

/// RMS normalisation over the last dimension, computed in f32.
pub fn rms_norm(x: &Tensor, weight: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let mut y = xf.broadcast_div(&(ms + eps)?.sqrt()?)?;
    if let Some(w) = weight {
        y = y.broadcast_mul(&w.to_dtype(DType::F32)?)?;
    }
    Ok(y.to_dtype(dtype)?)
}

/// Layer normalisation over the last dimension without affine parameters.
pub fn layer_norm_plain(x: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let mean = xf.mean_keepdim(D::Minus1)?;
    let xc = xf.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(xc.broadcast_div(&(var + eps)?.sqrt()?)?.to_dtype(dtype)?)
}

/// Rotates adjacent channel pairs: (x0,x1) -> (x0 cos - x1 sin, x1 cos + x0 sin).
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, s, d) = x.dims3()?;
    let dt = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let pairs = xf.reshape((b, s, d / 2, 2))?;
    let x0 = pairs.narrow(D::Minus1, 0, 1)?;
    let x1 = pairs.narrow(D::Minus1, 1, 1)?;
    let rotated = Tensor::cat(&[x1.neg()?, x0], D::Minus1)?.reshape((b, s, d))?;
    let out = (xf.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?;
    Ok(out.to_dtype(dt)?)
}

/// Device memory in use (bytes, all processes) and the device's total; `None`
/// on the CPU. The driver's figure, so it includes the allocator's pool.
pub fn device_memory(dev: &candle_core::Device) -> Result<Option<(u64, u64)>> {
    #[cfg(feature = "cuda")]
    if dev.is_cuda() {
        let (free, total) = cuda::mem_info(dev)?;
        return Ok(Some((total - free, total)));
    }
    let _ = dev;
    Ok(None)
}

/// Samples [`device_memory`] every millisecond on a side thread until
/// dropped, keeping the peak: the measured side of the VRAM estimate.
pub struct PeakMemory {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakMemory {
    pub fn start(dev: &candle_core::Device) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let peak = std::sync::Arc::new(AtomicU64::new(0));
        let (s, p, d) = (stop.clone(), peak.clone(), dev.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(Some((used, _))) = device_memory(&d) {
                    p.fetch_max(used, Ordering::Relaxed);
                } else {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        PeakMemory {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the highest figure seen (0 on the CPU).
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut r = crate::rng::NoiseRng::new(seed);
        let n = shape.iter().product();
        Tensor::from_vec(r.normal_vec(n), shape, &Device::Cpu).unwrap()
    }

    /// The strided per-head view gives the same result as a contiguous
    /// split, and a fully masked row averages every key like the reference.
    #[test]
    fn composed_attention_takes_strided_views() {
        let (b, s, h, dh, l) = (2, 7, 3, 8, 5);
        let q = randn(&[b, s, h * dh], 1);
        let k = randn(&[b, h, l, dh], 2);
        let v = randn(&[b, h, l, dh], 3);
        let bias = Tensor::from_vec(
            vec![0f32, 0., -10000., 0., -10000., 0., 0., 0., 0., 0.],
            (b, l),
            &Device::Cpu,
        )
        .unwrap();
        let qv = q.reshape((b, s, h, dh)).unwrap().transpose(1, 2).unwrap();
        let got = attention(&qv, &k, &v, Some(&bias)).unwrap();
        let qc = qv.contiguous().unwrap();
        let want =
            composed_attention(&qc, &k, &v, Some(&bias.reshape((b, 1, 1, l)).unwrap())).unwrap();
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }

    /// Every kernel name the dispatch can form is instantiated in
    /// attention.cu, and a requested variant is the one named (variant 3 was
    /// once silently mapped to 1).
    #[test]
    fn kernel_names_exist_in_the_source() {
        for dh in [64, 128] {
            for warps in [4, 8] {
                for variant in 1..=3 {
                    let name = tc_kernel_name(variant, warps, dh);
                    let want = if variant == 3 && dh == 128 {
                        2
                    } else {
                        variant
                    };
                    assert_eq!(name, format!("attn_mma{want}_bf16_d{dh}_w{warps}"));
                    let inst = format!("MMA_KERNEL({dh}, {warps}, {want},");
                    assert!(
                        ATTENTION_SRC.contains(&inst),
                        "{name}: no {inst} in attention.cu"
                    );
                }
            }
            assert_eq!(tc_kernel_name(7, 5, dh), format!("attn_mma1_bf16_d{dh}_w4"));
        }
        for (dt, ty) in [(DType::F32, "float, f32"), (DType::BF16, "bf16_t, bf16")] {
            for dh in [32, 64, 128] {
                let name = simt_kernel_name(dt, dh).unwrap();
                assert!(name.ends_with(&format!("_d{dh}")));
                let inst = format!("SIMT_KERNEL({ty}, {dh})");
                assert!(
                    ATTENTION_SRC.contains(&inst),
                    "{name}: no {inst} in attention.cu"
                );
            }
            assert_eq!(simt_kernel_name(dt, 96), None);
        }
        assert_eq!(simt_kernel_name(DType::F16, 64), None);
    }

    #[test]
    fn ada_norm_matches_composed_per_token_modulation() {
        let x = randn(&[2, 4, 16], 4);
        let shift = randn(&[2, 4, 16], 5);
        let scale = randn(&[2, 4, 16], 6);
        for kind in [NormKind::Rms, NormKind::Layer] {
            let y = ada_norm(&x, &shift, &scale, kind, 1e-6).unwrap();
            assert_eq!(y.dims(), &[2, 4, 16]);
            // Row 1 of item 0 uses modulation row 1 of item 0.
            let n = match kind {
                NormKind::Rms => rms_norm(&x, None, 1e-6).unwrap(),
                NormKind::Layer => layer_norm_plain(&x, 1e-6).unwrap(),
            };
            let n01: Vec<f32> = n.get(0).unwrap().get(1).unwrap().to_vec1().unwrap();
            let s01: Vec<f32> = scale.get(0).unwrap().get(1).unwrap().to_vec1().unwrap();
            let h01: Vec<f32> = shift.get(0).unwrap().get(1).unwrap().to_vec1().unwrap();
            let y01: Vec<f32> = y.get(0).unwrap().get(1).unwrap().to_vec1().unwrap();
            for c in 0..16 {
                let want = n01[c] * (1.0 + s01[c]) + h01[c];
                assert!((y01[c] - want).abs() < 1e-6, "{kind:?} c={c}");
            }
        }
    }
}
