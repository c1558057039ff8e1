//! SiLU, tanh-GELU and softmax over the last dim for f32 tensors on the
//! CPU, vectorised.
//!
//! Why our own: candle's CPU `gelu` calls libm's scalar `tanhf` once per
//! element (which itself goes through `expm1f`), `silu` and candle-nn's
//! softmax scalar `expf`. On the demo model the GELU alone was 37% of a
//! whole generation (perf on the 2-core VM; the transformer's feed-forward)
//! and, with GELU done here, the attention softmax's `expf` 12%: most of
//! the gap to PyTorch, whose versions are SIMD.
//!
//! Both are x·σ(z): SiLU with z = x; tanh-GELU with z = 2u, u = √(2/π)(x +
//! 0.044715x³), because (1 + tanh u)/2 = σ(2u). So each needs one exp,
//! written here as plain arithmetic (Cody-Waite reduction to
//! r ∈ [-ln2/2, ln2/2], a degree-7 polynomial, 2ⁿ placed in the exponent
//! bits, rounding by the 1.5·2²³ trick) that the compiler turns into SIMD;
//! compiled once more with AVX2 + FMA, chosen at run time. Error against
//! f64: a few ulp (`tests` below). Other devices and dtypes run candle's ops.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// x·σ(x).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    if !fast_path(x) {
        return Ok(x.silu()?);
    }
    Ok(x.contiguous()?.apply_op1_no_bwd(&CpuOp(Kernel::Silu))?)
}

/// GELU, tanh approximation (PyTorch's `approximate="tanh"`, diffusers'
/// `gelu-approximate`, T5's `gelu_new`): the same function as candle's
/// `Tensor::gelu`.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if !fast_path(x) {
        return Ok(x.gelu()?);
    }
    Ok(x.contiguous()?.apply_op1_no_bwd(&CpuOp(Kernel::GeluTanh))?)
}

/// Softmax over the last dimension (candle-nn's `softmax_last_dim`):
/// each row less its maximum, exponentiated, over its sum.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !fast_path(x) || x.rank() == 0 {
        return Ok(candle_nn::ops::softmax_last_dim(x)?);
    }
    let n = x.dims()[x.rank() - 1].max(1);
    Ok(x.contiguous()?
        .apply_op1_no_bwd(&CpuOp(Kernel::Softmax(n)))?)
}

fn fast_path(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 && !candle_ops_forced()
}

/// `VIDFLOW_CANDLE_ACTIVATIONS=1` runs candle's ops instead, everywhere in
/// the process: `benches/run_demo.sh` times both in one run, and a parity
/// question can rule these functions in or out without a rebuild.
fn candle_ops_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| std::env::var("VIDFLOW_CANDLE_ACTIVATIONS").is_ok_and(|v| v == "1"))
}

#[derive(Clone, Copy)]
enum Kernel {
    Silu,
    GeluTanh,
    /// Over rows of this many elements.
    Softmax(usize),
}

struct CpuOp(Kernel);

/// Elements per parallel task (as candle's own ops split their work over
/// rayon's pool): big enough that the hand-off is noise.
const CHUNK: usize = 1 << 14;

impl CustomOp1 for CpuOp {
    fn name(&self) -> &'static str {
        match self.0 {
            Kernel::Silu => "vidflow-silu",
            Kernel::GeluTanh => "vidflow-gelu-tanh",
            Kernel::Softmax(_) => "vidflow-softmax-last-dim",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("{}: f32 only", self.name())
        };
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("{}: contiguous input only", self.name())
        };
        let src = &v[a..b];
        let mut out = vec![0f32; src.len()];
        // A softmax task takes whole rows.
        let chunk = match self.0 {
            Kernel::Softmax(n) => (CHUNK / n).max(1) * n,
            _ => CHUNK,
        };
        let k = self.0;
        out.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(o, i)| run(k, i, o));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

fn run(k: Kernel, src: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: both features were just detected on this CPU.
        unsafe { run_avx2(k, src, out) };
        return;
    }
    run_plain(k, src, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2(k: Kernel, src: &[f32], out: &mut [f32]) {
    run_plain(k, src, out)
}

#[inline(always)]
fn run_plain(k: Kernel, src: &[f32], out: &mut [f32]) {
    match k {
        Kernel::Silu => {
            for (o, &x) in out.iter_mut().zip(src) {
                *o = x / (1.0 + exp(-x));
            }
        }
        Kernel::GeluTanh => {
            const K: f32 = 0.797_884_6; // √(2/π)
            for (o, &x) in out.iter_mut().zip(src) {
                let u = K * x * (1.0 + 0.044_715 * x * x);
                *o = x / (1.0 + exp(-2.0 * u));
            }
        }
        Kernel::Softmax(n) => {
            for (i, o) in src.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
                let max = lanes(i, f32::NEG_INFINITY, |a, b| if b > a { b } else { a });
                for (o, &x) in o.iter_mut().zip(i) {
                    *o = exp(x - max);
                }
                let inv = 1.0 / lanes(o, 0.0, |a, b| a + b);
                for o in o.iter_mut() {
                    *o *= inv;
                }
            }
        }
    }
}

/// A reduction over eight interleaved accumulators: the compiler keeps a
/// single one in order (floating-point addition is not associative) and
/// so does not vectorise it.
#[inline(always)]
fn lanes(v: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 8];
    let mut it = v.chunks_exact(8);
    for c in &mut it {
        for k in 0..8 {
            acc[k] = f(acc[k], c[k]);
        }
    }
    let mut r = acc.into_iter().fold(init, &f);
    for &x in it.remainder() {
        r = f(r, x);
    }
    r
}

/// eˣ for f32, branch-free: 0 below -87 (where eˣ would be subnormal:
/// masked attention scores sit there, and subnormal probabilities make the
/// matmul after the softmax several times slower), inputs above 88 taken
/// as 88 (σ only needs it to saturate there).
#[inline(always)]
fn exp(x: f32) -> f32 {
    let live = if x < -87.0 { 0.0 } else { 1.0 };
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| < 2⁹.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and taking away 1.5·2²³ rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    // n as an integer, read from t's low mantissa bits (an `as i32` cast
    // would be a saturating conversion that stays scalar).
    let ni = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor to r⁷/7!: |r| ≤ 0.347 leaves an error under 6e-9.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    live * p * f32::from_bits(((ni + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silu64(x: f64) -> f64 {
        x / (1.0 + (-x).exp())
    }

    fn gelu64(x: f64) -> f64 {
        // x·σ(2u), the same as ½x(1 + tanh u), without the cancellation
        // that form has in the negative tail.
        x / (1.0 + (-gelu_z(x)).exp())
    }

    /// z in x·σ(z) for GELU: 2u.
    fn gelu_z(x: f64) -> f64 {
        2.0 * (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)
    }

    /// Points from -100 to 100, dense near zero where the activations bend.
    fn points() -> Vec<f32> {
        let mut v: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 1e-3).collect();
        v.extend((-1000..=1000).map(|i| i as f32 * 0.1));
        v.extend([
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            f32::MIN_POSITIVE,
            87.5,
            -87.5,
            89.0,
            -89.0,
        ]);
        v
    }

    #[test]
    fn exp_is_within_a_few_ulp_of_f64() {
        for i in -86_990..=87_990 {
            let x = i as f32 * 1e-3;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn both_activations_match_f64_on_both_code_paths() {
        let xs = points();
        type F = fn(f64) -> f64;
        let cases: [(Kernel, F, F); 2] = [
            (Kernel::Silu, silu64, |x| x),
            (Kernel::GeluTanh, gelu64, gelu_z),
        ];
        for (act, f, z) in cases {
            let mut fast = vec![0f32; xs.len()];
            let mut plain = vec![0f32; xs.len()];
            run(act, &xs, &mut fast);
            run_plain(act, &xs, &mut plain);
            for ((&x, &a), &b) in xs.iter().zip(&fast).zip(&plain) {
                let want = f(x as f64);
                // Where σ(z) is in its tail its relative error is |z| times
                // z's, and z is computed in f32 (as candle's f32 op does).
                let tol = 3e-7 * want.abs() * (1.0 + z(x as f64).abs()) + 1e-30;
                assert!((a as f64 - want).abs() <= tol, "{x}: {a} vs {want}");
                assert!((b as f64 - want).abs() <= tol, "{x}: {b} vs {want}");
            }
        }
    }

    #[test]
    fn the_tensor_ops_agree_with_candles_and_keep_shape_and_strides_apart() -> Result<()> {
        // Transposed, to test the copy to contiguous.
        let x = Tensor::randn(0f32, 3.0, (96, 700), &Device::Cpu)?.t()?;
        for (ours, theirs) in [(silu(&x)?, x.silu()?), (gelu_tanh(&x)?, x.gelu()?)] {
            assert_eq!(ours.dims(), &[700, 96]);
            let d = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-5, "max difference {d}");
        }
        let s = Tensor::randn(0f32, 4.0, (3, 5, 77), &Device::Cpu)?;
        let masked = s.narrow(2, 0, 9)?.affine(1.0, -1e9)?;
        let s = Tensor::cat(&[masked, s.narrow(2, 9, 68)?], 2)?;
        let d = (softmax_last_dim(&s)? - candle_nn::ops::softmax_last_dim(&s)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d < 1e-6, "softmax: max difference {d}");
        // Other dtypes run candle's ops.
        let h = x.to_dtype(DType::F64)?;
        assert_eq!(gelu_tanh(&h)?.dtype(), DType::F64);
        Ok(())
    }
}
