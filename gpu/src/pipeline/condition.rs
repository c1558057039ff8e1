//! Conditioning on images and videos at chosen frames (keyframes, video
//! extension, video-to-video), computed as diffusers' `LTXConditionPipeline`
//! does it:
//!
//! - a condition at frame 0 is blended into the first latent frames in place
//!   (`lerp(noise, latents, strength)`), and those frames' tokens get the
//!   condition's strength as their mask value;
//! - a condition at a later frame becomes extra tokens in front of the video
//!   tokens (a multi-frame video there first blends its frames after the
//!   two-frame prefix in place), with their own RoPE coordinates;
//! - every step, tokens held with strength 1 are re-noised from their start
//!   (`image_cond_noise_scale * noise * t^2`), each token's timestep is
//!   `min(t, (1 - mask) * 1000)`, each moves by its own Euler step, and only
//!   tokens with `t/1000 < 1 - mask` take it.
//!
//! Every random draw goes through a [`NoiseSource`] in the reference's order,
//! so the golden cases replay the reference's tape and jobs use seeded
//! streams (one per draw, so a resumed job draws what it would have).

use candle_core::{DType, Device, Tensor};

use super::frames::pack_latents;
use crate::error::{GpuError, Result};
use crate::rng::NoiseRng;
use crate::transformer::TokenCoords;
use crate::vae::LtxVae;

/// Latent frames a multi-frame condition at a later frame keeps as extra
/// tokens (the reference's `num_prefix_latent_frames`).
const PREFIX_LATENT_FRAMES: usize = 2;

/// What a random draw is for. The reference draws them in this order: the
/// initial noise, then per condition its posterior sample (and keyframe token
/// noise for a later frame), then one per step, then the decode noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseDraw {
    Initial,
    Posterior(usize),
    KeyframeTokens(usize),
    Step(usize),
    Decode,
}

/// Where a conditioned generation's random numbers come from.
pub trait NoiseSource {
    /// Standard normal noise of `shape` (f32) for `what`.
    fn draw(&mut self, what: NoiseDraw, shape: &[usize], device: &Device) -> Result<Tensor>;
}

/// Seeded streams, one per draw: a job's numbers do not depend on which draws
/// came before (a resumed job, or a chain segment, draws the same values).
#[derive(Debug, Clone, Copy)]
pub struct SeededNoise(pub u64);

/// Stream ids of conditioned generation's draws (fixed forever, like
/// `rng::STREAM_*`); the initial noise and decode noise reuse those.
const STREAM_POSTERIOR: u64 = 0x100;
const STREAM_KEYFRAME: u64 = 0x200;
const STREAM_STEP: u64 = 0x1_0000;

impl NoiseSource for SeededNoise {
    fn draw(&mut self, what: NoiseDraw, shape: &[usize], device: &Device) -> Result<Tensor> {
        let purpose = match what {
            NoiseDraw::Initial => crate::rng::STREAM_LATENTS,
            NoiseDraw::Decode => crate::rng::STREAM_DECODE,
            NoiseDraw::Posterior(i) => STREAM_POSTERIOR + i as u64,
            NoiseDraw::KeyframeTokens(i) => STREAM_KEYFRAME + i as u64,
            NoiseDraw::Step(k) => STREAM_STEP + k as u64,
        };
        NoiseRng::stream(self.0, purpose).randn(shape, device)
    }
}

/// One condition: pixels at the video's size, where they go, how strongly.
#[derive(Debug, Clone)]
pub struct Condition {
    /// `[1, 3, N, H, W]` in [-1, 1]; an image is `N = 1`.
    pub pixels: Tensor,
    /// The output frame the first pixel frame lands on.
    pub frame_index: usize,
    /// 1 holds the condition; less lets the model change it (video-to-video).
    pub strength: f64,
}

/// The generation's shape as the conditioning needs it.
#[derive(Debug, Clone, Copy)]
pub struct CondGeometry {
    /// Output frames (8k+1), and latent frames/rows/columns.
    pub num_frames: usize,
    pub latent_frames: usize,
    pub latent_height: usize,
    pub latent_width: usize,
    pub fps: f64,
    pub spatial: usize,
    pub temporal: usize,
}

/// Per-token conditioning of a job in progress (what each step needs).
#[derive(Debug, Clone)]
pub struct TokenConditioning {
    /// Conditioning strength per token, extra tokens first.
    pub mask: Vec<f32>,
    /// Extra (keyframe) tokens in front of the video tokens.
    pub extra: usize,
    /// Packed latents right after conditioning: hard conditions are
    /// re-noised from these every step.
    pub init: Tensor,
    /// RoPE coordinates of every token.
    pub coords: TokenCoords,
    /// `image_cond_noise_scale` (the reference's default is 0.15).
    pub noise_scale: f64,
}

/// torch's `lerp(a, b, w)` in f32, including its two-sided formula (the
/// result differs in the last bits from `a + w * (b - a)` for w >= 0.5).
pub fn lerp(a: &Tensor, b: &Tensor, w: f64) -> Result<Tensor> {
    let diff = (b - a)?;
    let w = w as f32;
    if w < 0.5 {
        Ok((a + (diff * w as f64)?)?)
    } else {
        Ok((b - (diff * (1.0f32 - w) as f64)?)?)
    }
}

/// How many frames of a video condition at `frame_index` the reference uses:
/// what fits before the end, rounded down to `temporal * k + 1`.
pub fn trimmed_frames(
    frames: usize,
    frame_index: usize,
    num_frames: usize,
    temporal: usize,
) -> usize {
    let n = frames.min(num_frames.saturating_sub(frame_index));
    if n == 0 {
        return 0;
    }
    (n - 1) / temporal * temporal + 1
}

/// RoPE coordinates (seconds, pixels, pixels) of `frames` latent frames of
/// `h` x `w` tokens whose first frame lands on output frame `frame_index`:
/// latent frame f sits at pixel frame `max(8f + 1 - 8, 0) + frame_index`.
fn coords(g: &CondGeometry, frames: usize, frame_index: usize, out: &mut Vec<[f32; 3]>) {
    let inv_fps = (1.0 / g.fps) as f32;
    let t_c = g.temporal as i64;
    for f in 0..frames {
        let t = ((f as i64 * t_c + 1 - t_c).max(0) + frame_index as i64) as f32 * inv_fps;
        for y in 0..g.latent_height {
            for x in 0..g.latent_width {
                out.push([t, (y * g.spatial) as f32, (x * g.spatial) as f32]);
            }
        }
    }
}

/// Encodes a condition's pixels with a posterior sample (`mean + std *
/// noise`, as `latent_dist.sample()`) and normalises it.
fn encode_sampled(
    vae: &LtxVae,
    pixels: &Tensor,
    noise: &mut dyn NoiseSource,
    index: usize,
) -> Result<Tensor> {
    let (mean, std) = vae.encode(pixels)?;
    let mean = mean.to_dtype(DType::F32)?;
    let std = std.to_dtype(DType::F32)?;
    let eps = noise.draw(NoiseDraw::Posterior(index), mean.dims(), mean.device())?;
    let z = (&mean + (std * eps)?)?;
    vae.normalize_latents(&z)
}

/// Checks one condition against the generation, naming the field.
fn validate(i: usize, c: &Condition, g: &CondGeometry) -> Result<usize> {
    let field = format!("conditions[{i}]");
    let (b, ch, n, h, w) = c.pixels.dims5().map_err(|_| {
        GpuError::invalid(
            &field,
            format!("pixels must be [1, 3, N, H, W], got {:?}", c.pixels.dims()),
        )
    })?;
    let (hh, ww) = (g.latent_height * g.spatial, g.latent_width * g.spatial);
    if b != 1 || ch != 3 || (h, w) != (hh, ww) {
        return Err(GpuError::invalid(
            &field,
            format!(
                "is {w}x{h} ({n} frames), the video is {ww}x{hh}: convert it to the job's size"
            ),
        ));
    }
    if c.frame_index >= g.num_frames {
        return Err(GpuError::invalid(
            format!("{field}.frame_index"),
            format!(
                "{} is past the video's last frame {}",
                c.frame_index,
                g.num_frames - 1
            ),
        ));
    }
    if !(c.strength.is_finite() && (0.0..=1.0).contains(&c.strength)) {
        return Err(GpuError::invalid(
            format!("{field}.strength"),
            format!("{} must be in [0, 1]", c.strength),
        ));
    }
    let used = trimmed_frames(n, c.frame_index, g.num_frames, g.temporal);
    if used == 0 || (used - 1) % g.temporal != 0 {
        return Err(GpuError::invalid(
            &field,
            format!(
                "{n} frames leave none of the form {}k+1 from frame {}",
                g.temporal, c.frame_index
            ),
        ));
    }
    Ok(used)
}

/// Applies `conditions` to `latents` (unpacked `[1, C, F, h, w]`: noise, or
/// noise mixed with clean latents for `denoise_strength`), as the reference's
/// `prepare_latents`. Returns packed latents (extra tokens first) and the
/// per-token conditioning; with no conditions the mask is all zeros and the
/// coordinates are the plain video grid's. `vae` (with its encoder) is needed
/// only when there are conditions.
pub fn apply_conditions(
    vae: Option<&LtxVae>,
    latents: &Tensor,
    conditions: &[Condition],
    g: &CondGeometry,
    noise: &mut dyn NoiseSource,
    noise_scale: f64,
) -> Result<(Tensor, TokenConditioning)> {
    let mut x = latents.to_dtype(DType::F32)?;
    let hw = g.latent_height * g.latent_width;
    let mut frame_mask = vec![0f32; g.latent_frames];
    let mut extra_latents: Vec<Tensor> = Vec::new();
    let mut extra_mask: Vec<f32> = Vec::new();
    let mut extra_coords: Vec<[f32; 3]> = Vec::new();
    for (i, c) in conditions.iter().enumerate() {
        let used = validate(i, c, g)?;
        let vae = vae
            .ok_or_else(|| GpuError::invalid("conditions", "conditioning needs the VAE encoder"))?;
        let pixels = c.pixels.narrow(2, 0, used)?.to_dtype(vae.dtype())?;
        let mut z = encode_sampled(vae, &pixels, noise, i)?;
        let nf = z.dim(2)?;
        let s = c.strength as f32;
        if c.frame_index == 0 {
            let nf = nf.min(g.latent_frames);
            let blended = lerp(&x.narrow(2, 0, nf)?, &z.narrow(2, 0, nf)?, c.strength)?;
            x = x.slice_assign(
                &[
                    0..1,
                    0..x.dim(1)?,
                    0..nf,
                    0..g.latent_height,
                    0..g.latent_width,
                ],
                &blended,
            )?;
            frame_mask[..nf].fill(s);
            continue;
        }
        if used > 1 {
            if nf < PREFIX_LATENT_FRAMES {
                return Err(GpuError::invalid(
                    format!("conditions[{i}]"),
                    format!("a video at a later frame needs at least {PREFIX_LATENT_FRAMES} latent frames, got {nf}"),
                ));
            }
            if nf > PREFIX_LATENT_FRAMES {
                let start = c.frame_index / g.temporal + PREFIX_LATENT_FRAMES;
                let end = (start + nf - PREFIX_LATENT_FRAMES).min(g.latent_frames);
                if start < end {
                    let n = end - start;
                    let src = z.narrow(2, PREFIX_LATENT_FRAMES, n)?;
                    let blended = lerp(&x.narrow(2, start, n)?, &src, c.strength)?;
                    x = x.slice_assign(
                        &[
                            0..1,
                            0..x.dim(1)?,
                            start..end,
                            0..g.latent_height,
                            0..g.latent_width,
                        ],
                        &blended,
                    )?;
                    frame_mask[start..end].fill(s);
                }
                z = z.narrow(2, 0, PREFIX_LATENT_FRAMES)?;
            }
        }
        let eps = noise.draw(NoiseDraw::KeyframeTokens(i), z.dims(), z.device())?;
        let z = lerp(&eps, &z, c.strength)?;
        let nz = z.dim(2)?;
        extra_latents.push(pack_latents(&z)?);
        extra_mask.extend(std::iter::repeat_n(s, nz * hw));
        coords(g, nz, c.frame_index, &mut extra_coords);
    }
    let mut mask = extra_mask;
    let extra = mask.len();
    for m in &frame_mask {
        mask.extend(std::iter::repeat_n(*m, hw));
    }
    let mut all_coords = extra_coords;
    coords(g, g.latent_frames, 0, &mut all_coords);
    let mut parts = extra_latents;
    parts.push(pack_latents(&x)?);
    let packed = Tensor::cat(&parts, 1)?;
    Ok((
        packed.clone(),
        TokenConditioning {
            mask,
            extra,
            init: packed,
            coords: TokenCoords::new(all_coords),
            noise_scale,
        },
    ))
}

impl TokenConditioning {
    /// Whether steps re-noise any token: some token is held with strength 1
    /// and the scale is above 0 (only then is a step's noise needed).
    pub fn renoises(&self) -> bool {
        self.noise_scale > 0.0 && self.mask.iter().any(|m| *m > 1.0 - 1e-6)
    }

    /// Step `t`'s re-noising of the hard-conditioned tokens (mask 1):
    /// `init + noise_scale * noise * (t/1000)^2`; other tokens keep `x`.
    /// `noise` is `[1, S, C]`, drawn every step whether used or not.
    pub fn renoise(&self, x: &Tensor, t: f32, noise: &Tensor) -> Result<Tensor> {
        if self.noise_scale <= 0.0 {
            return Ok(x.clone());
        }
        let hard: Vec<u8> = self
            .mask
            .iter()
            .map(|m| u8::from(*m > 1.0 - 1e-6))
            .collect();
        if !hard.iter().any(|h| *h == 1) {
            return Ok(x.clone());
        }
        let ts = t / 1000.0;
        let noised =
            (&self.init + ((noise * (self.noise_scale as f32) as f64)? * (ts * ts) as f64)?)?;
        let sel =
            Tensor::from_vec(hard, (1, self.mask.len(), 1), x.device())?.broadcast_as(x.shape())?;
        Ok(sel.where_cond(&noised, x)?)
    }

    /// Per-token timesteps `min(t, (1 - mask) * 1000)`.
    pub fn timesteps(&self, t: f32) -> Vec<f32> {
        self.mask
            .iter()
            .map(|m| t.min((1.0 - m) * 1000.0))
            .collect()
    }

    /// The per-token Euler step: each token moves from its own sigma to the
    /// largest schedule sigma below it, and only tokens with
    /// `t/1000 - 1e-6 < 1 - mask` move at all.
    pub fn euler(&self, x: &Tensor, v: &Tensor, t: f32, sigmas: &[f32]) -> Result<Tensor> {
        let dt = per_token_dt(&self.timesteps(t), sigmas, |i| {
            t / 1000.0 - 1e-6 < 1.0 - self.mask[i]
        });
        apply_dt(x, v, dt)
    }
}

/// Per-token `sigma - sigma_next` (0 where `moves` is false), the reference
/// scheduler's per-token step.
pub fn per_token_dt(tt: &[f32], sigmas: &[f32], moves: impl Fn(usize) -> bool) -> Vec<f32> {
    tt.iter()
        .enumerate()
        .map(|(i, t)| {
            if !moves(i) {
                return 0.0;
            }
            let sig = t / 1000.0;
            let next = sigmas
                .iter()
                .filter(|s| **s < sig - 1e-6)
                .fold(0f32, |a, s| a.max(*s));
            sig - next
        })
        .collect()
}

/// `x - dt * v` per token (`x + dt * (-v)`, the reference's order; exact for
/// dt = 0).
fn apply_dt(x: &Tensor, v: &Tensor, dt: Vec<f32>) -> Result<Tensor> {
    let n = dt.len();
    let dt = Tensor::from_vec(dt, (1, n, 1), x.device())?;
    let xf = x.to_dtype(DType::F32)?;
    let step = v.to_dtype(DType::F32)?.neg()?.broadcast_mul(&dt)?;
    Ok((xf + step)?)
}
