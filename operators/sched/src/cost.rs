//! Predicted accelerator time of a job from its shape.
//!
//! A denoising step's cost is close to linear in its floating-point work
//! (the transformer is GEMM- and attention-bound), so the model counts the
//! FLOPs of one step of an LTX-style transformer exactly from the
//! architecture and the latent grid, and turns FLOPs into seconds with a
//! per-accelerator rate (`peak × efficiency`) plus a fixed per-step
//! overhead. The rate is *calibrated*: [`Calibration::fit`] takes measured
//! (FLOPs, seconds) pairs and fits `seconds = overhead + flops / rate` by
//! least squares. The VAE decode is priced per output voxel, the text
//! encoder per prompt token, from the same kind of measurement.
//!
//! Videos longer than one pass (`max_frames_per_pass`) are generated as
//! overlapping segments; each segment costs like a clip of that length.

use serde::{Deserialize, Serialize};

/// The parts of a transformer architecture that decide a step's FLOPs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Arch {
    pub layers: usize,
    /// Hidden width (heads × head dim).
    pub dim: usize,
    /// Width of the text tokens the cross-attention reads.
    pub cross_dim: usize,
    /// Latent channels in and out (the patch embedding and the output head).
    pub in_channels: usize,
    /// Feed-forward width as a multiple of `dim`.
    pub ffn_mult: usize,
    /// Text tokens per prompt (the encoder pads to this length).
    pub text_tokens: usize,
    /// VAE compression: pixels per latent cell across, frames per latent frame.
    pub vae_spatial: usize,
    pub vae_temporal: usize,
    /// The longest clip one pass generates; longer videos go in segments.
    pub max_frames_per_pass: usize,
    /// Frames two segments share (the condition of the next one).
    pub segment_overlap: usize,
}

impl Arch {
    /// LTX-Video 2B (0.9.x): 28 blocks of width 2048 (32 heads × 64), T5-XXL
    /// text (4096 wide, projected to 2048), a 32×32×8 VAE, 257 frames per
    /// pass at most.
    pub fn ltx_2b() -> Arch {
        Arch {
            layers: 28,
            dim: 2048,
            cross_dim: 2048,
            in_channels: 128,
            ffn_mult: 4,
            text_tokens: 128,
            vae_spatial: 32,
            vae_temporal: 8,
            max_frames_per_pass: 257,
            segment_overlap: 17,
        }
    }

    /// Latent tokens of one pass over `frames` frames of `width`×`height`.
    pub fn tokens(&self, width: u32, height: u32, frames: u32) -> u64 {
        let f = (frames.max(1) as u64 - 1) / self.vae_temporal as u64 + 1;
        let h = (height as u64).div_ceil(self.vae_spatial as u64);
        let w = (width as u64).div_ceil(self.vae_spatial as u64);
        f * h * w
    }

    /// FLOPs of one transformer forward over `tokens` latent tokens (one
    /// batch item; CFG runs two). Multiply-adds count 2.
    pub fn forward_flops(&self, tokens: u64) -> f64 {
        let t = tokens as f64;
        let d = self.dim as f64;
        let l = self.text_tokens as f64;
        let c = self.cross_dim as f64;
        let per_layer_macs = 4.0 * d * d * t          // self-attention Q, K, V, out
            + 2.0 * t * t * d                          // scores and weighted sum
            + 2.0 * d * d * t                          // cross-attention Q, out
            + 2.0 * c * d * l                          // cross-attention K, V of the text
            + 2.0 * t * l * d                          // cross scores and sum
            + 2.0 * self.ffn_mult as f64 * d * d * t; // feed-forward
        let io_macs = 2.0 * self.in_channels as f64 * d * t;
        2.0 * (self.layers as f64 * per_layer_macs + io_macs)
    }

    /// Passes (segments) a video of `frames` frames needs, and the frames
    /// of each pass.
    pub fn segments(&self, frames: u32) -> (u32, u32) {
        let max = self.max_frames_per_pass as u32;
        if frames <= max {
            return (1, frames);
        }
        let step = max - self.segment_overlap as u32;
        (1 + (frames - max).div_ceil(step), max)
    }
}

/// What decides one job's cost.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobShape {
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub steps: u32,
    /// Classifier-free guidance: two forwards per step instead of one.
    pub cfg: bool,
}

/// A rate at which an accelerator turns FLOPs into seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accelerator {
    pub name: String,
    /// Dense peak FLOP/s at the precision the model runs in.
    pub peak_flops: f64,
    /// Fraction of the peak a denoising step sustains.
    pub efficiency: f64,
    /// Fixed seconds per step (launches, scheduler, sync).
    pub step_overhead_s: f64,
    /// VAE decode FLOPs per output voxel (frame × pixel) at that rate.
    pub decode_flops_per_voxel: f64,
    /// Where `efficiency` comes from: "measured …" or "assumed …".
    pub source: String,
}

impl Accelerator {
    /// Sustained FLOP/s.
    pub fn rate(&self) -> f64 {
        self.peak_flops * self.efficiency
    }

    /// NVIDIA H100 SXM, bf16 dense peak 989 TFLOP/s. The 40% efficiency is
    /// an assumption (large-GEMM transformer steps on Hopper typically
    /// sustain 35-50%); no GPU was measured for it.
    pub fn h100_assumed() -> Accelerator {
        Accelerator {
            name: "h100-sxm".into(),
            peak_flops: 989e12,
            efficiency: 0.40,
            step_overhead_s: 0.005,
            // The LTX 0.9 VAE decoder's work per output voxel, as measured
            // on the CPU against the same FLOP count (BENCHMARKS.md).
            decode_flops_per_voxel: 7.5e5,
            source: "assumed: 40% of the bf16 dense peak; not measured (no GPU lent)".into(),
        }
    }
}

/// A job's predicted accelerator time on one accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub tokens: u64,
    pub segments: u32,
    pub step_flops: f64,
    /// One step of one segment.
    pub step_s: f64,
    pub denoise_s: f64,
    pub decode_s: f64,
    pub total_s: f64,
}

/// Shape → accelerator-seconds, for one architecture on one accelerator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostModel {
    pub arch: Arch,
    pub accel: Accelerator,
}

impl CostModel {
    pub fn predict(&self, s: &JobShape) -> Cost {
        let (segments, pass_frames) = self.arch.segments(s.frames);
        let tokens = self.arch.tokens(s.width, s.height, pass_frames);
        let step_flops = self.arch.forward_flops(tokens) * if s.cfg { 2.0 } else { 1.0 };
        let step_s = self.accel.step_overhead_s + step_flops / self.accel.rate();
        let denoise_s = step_s * s.steps as f64 * segments as f64;
        let voxels = s.frames as f64 * s.width as f64 * s.height as f64;
        let decode_s = voxels * self.accel.decode_flops_per_voxel / self.accel.rate();
        Cost {
            tokens,
            segments,
            step_flops,
            step_s,
            denoise_s,
            decode_s,
            total_s: denoise_s + decode_s,
        }
    }
}

/// A least-squares fit of measured step times against their FLOPs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Sustained FLOP/s (the inverse of the fitted slope).
    pub rate: f64,
    /// Fitted seconds at zero work.
    pub overhead_s: f64,
    /// Largest relative error of the fit on its own points.
    pub max_rel_error: f64,
}

impl Calibration {
    /// Fits `seconds = overhead + flops / rate` to `(flops, seconds)`
    /// points; `None` with fewer than two distinct FLOP counts or a
    /// non-positive slope.
    pub fn fit(points: &[(f64, f64)]) -> Option<Calibration> {
        let n = points.len() as f64;
        if points.len() < 2 {
            return None;
        }
        let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
        let my = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        if sxx <= 0.0 {
            return None;
        }
        let slope = sxy / sxx;
        if slope <= 0.0 {
            return None;
        }
        let overhead_s = (my - slope * mx).max(0.0);
        let max_rel_error = points
            .iter()
            .map(|&(x, y)| ((overhead_s + slope * x) - y).abs() / y)
            .fold(0.0, f64::max);
        Some(Calibration {
            rate: 1.0 / slope,
            overhead_s,
            max_rel_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ltx_tokens_follow_the_vae_compression() {
        let a = Arch::ltx_2b();
        // 768x512, 121 frames: 16 latent frames of 24x16.
        assert_eq!(a.tokens(768, 512, 121), 16 * 24 * 16);
        assert_eq!(a.segments(121), (1, 121));
        // 60 s at 24 fps: 1441 frames in passes of 257 sharing 17.
        let (n, f) = a.segments(1441);
        assert_eq!(f, 257);
        assert!(257 + (n - 1) * 240 >= 1441 && 257 + (n - 2) * 240 < 1441);
    }

    #[test]
    fn step_cost_grows_with_work_and_cfg_doubles_it() {
        let m = CostModel {
            arch: Arch::ltx_2b(),
            accel: Accelerator::h100_assumed(),
        };
        let s = JobShape {
            width: 768,
            height: 512,
            frames: 121,
            steps: 8,
            cfg: false,
        };
        let a = m.predict(&s);
        let b = m.predict(&JobShape { cfg: true, ..s });
        assert!((b.step_flops / a.step_flops - 2.0).abs() < 1e-12);
        let big = m.predict(&JobShape {
            width: 1920,
            height: 1088,
            ..s
        });
        assert!(big.step_s > a.step_s * 5.0);
        // ~29 TFLOP per forward at 6,144 tokens (hand count in SCHEDULING.md).
        assert!((a.step_flops / 1e12 - 29.0).abs() < 3.0, "{}", a.step_flops);
    }

    #[test]
    fn calibration_recovers_a_linear_rate() {
        let pts: Vec<(f64, f64)> = [1e9, 4e9, 9e9]
            .iter()
            .map(|&f| (f, 0.002 + f / 5e10))
            .collect();
        let c = Calibration::fit(&pts).unwrap();
        assert!((c.rate / 5e10 - 1.0).abs() < 1e-9);
        assert!((c.overhead_s - 0.002).abs() < 1e-12);
        assert!(c.max_rel_error < 1e-9);
        assert!(Calibration::fit(&pts[..1]).is_none());
    }
}
