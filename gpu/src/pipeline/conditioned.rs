//! Conditioned jobs in the sampling loop: keyframes, video extension and
//! video-to-video take the reference `LTXConditionPipeline`'s path
//! (`condition.rs`) — its linear-quadratic schedule, RoPE from per-token
//! coordinates, per-token timesteps and Euler steps — while plain text- and
//! image-to-video keep `LTXPipeline` / `LTXImageToVideoPipeline`'s.

use candle_core::{DType, Tensor};

use super::condition::{
    apply_conditions, CondGeometry, Condition, NoiseDraw, NoiseSource, SeededNoise,
};
use super::{DenoiseState, GenerateRequest, LtxPipeline};
use crate::error::{GpuError, Result};
use crate::rng::{NoiseRng, STREAM_LATENTS};
use crate::scheduler::Schedule;

/// RGB8 frames at one size, row-major, frame after frame (an image is one
/// frame).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RgbFrames {
    pub width: usize,
    pub height: usize,
    pub frames: usize,
    pub data: Vec<u8>,
}

impl RgbFrames {
    /// `[1, 3, N, H, W]` in [-1, 1], checked against the video's size.
    pub(super) fn to_pixels(
        &self,
        field: &str,
        width: usize,
        height: usize,
        dev: &candle_core::Device,
    ) -> Result<Tensor> {
        if (self.width, self.height) != (width, height) {
            return Err(GpuError::invalid(
                field,
                format!(
                    "is {}x{}, the video is {width}x{height}: convert it to the video's size",
                    self.width, self.height
                ),
            ));
        }
        let n = self.frames;
        if n == 0 || self.data.len() != n * width * height * 3 {
            return Err(GpuError::invalid(
                field,
                format!(
                    "has {} bytes for {n} frames of {width}x{height}",
                    self.data.len()
                ),
            ));
        }
        Ok(
            Tensor::from_vec(self.data.clone(), (n, height, width, 3), dev)?
                .to_dtype(DType::F32)?
                .affine(2.0 / 255.0, -1.0)?
                .permute((3, 0, 1, 2))?
                .unsqueeze(0)?
                .contiguous()?,
        )
    }

    /// The last `n` frames.
    pub fn tail(&self, n: usize) -> RgbFrames {
        let n = n.min(self.frames);
        let per = self.width * self.height * 3;
        RgbFrames {
            width: self.width,
            height: self.height,
            frames: n,
            data: self.data[(self.frames - n) * per..].to_vec(),
        }
    }
}

/// An image or video at a frame of the output, with a strength (1 holds it).
#[derive(Debug, Clone)]
pub struct ConditionInput {
    pub frames: RgbFrames,
    pub frame_index: usize,
    pub strength: f64,
}

/// Video-to-video through `denoise_strength`: the source is encoded and
/// noised to the schedule's point `strength` from the end, then denoised.
#[derive(Debug, Clone)]
pub struct VideoToVideo {
    pub frames: RgbFrames,
    pub strength: f64,
}

/// Hard-conditioned tokens are re-noised by this times `noise * t^2` each
/// step (the reference's `image_cond_noise_scale` default).
pub const IMAGE_COND_NOISE_SCALE: f64 = 0.15;

impl GenerateRequest {
    /// Whether the request takes the conditioning pipeline's path.
    pub fn is_conditioned(&self) -> bool {
        !self.conditions.is_empty() || self.video_to_video.is_some()
    }
}

impl LtxPipeline {
    /// Initial state of a conditioned job (see the module doc).
    pub(super) fn prepare_conditioned(
        &self,
        req: &GenerateRequest,
        grid: crate::transformer::LatentGrid,
    ) -> Result<DenoiseState> {
        if !(req.image_cond_noise_scale.is_finite() && req.image_cond_noise_scale >= 0.0) {
            return Err(GpuError::invalid(
                "image_cond_noise_scale",
                format!(
                    "{} must be a finite number >= 0",
                    req.image_cond_noise_scale
                ),
            ));
        }
        if req.image.is_some() {
            return Err(GpuError::invalid(
                "image",
                "give the first frame as a condition at frame 0 when the job has conditions or a source video",
            ));
        }
        let full = Schedule::linear_quadratic(req.steps, self.scheduler.num_train_timesteps)?;
        let g = CondGeometry {
            num_frames: req.num_frames,
            latent_frames: grid.frames,
            latent_height: grid.height,
            latent_width: grid.width,
            fps: req.fps,
            spatial: self.spatial_compression(),
            temporal: self.temporal_compression(),
        };
        let c = self.transformer.config.in_channels;
        let shape = [1, c, grid.frames, grid.height, grid.width];
        let noise = NoiseRng::stream(req.seed, STREAM_LATENTS).randn(&shape, &self.device)?;
        let (schedule, start) = match &req.video_to_video {
            None => (full, noise),
            Some(v2v) => {
                let field = "video_to_video";
                if v2v.frames.frames != req.num_frames {
                    return Err(GpuError::invalid(
                        field,
                        format!(
                            "has {} frames, the job makes {}",
                            v2v.frames.frames, req.num_frames
                        ),
                    ));
                }
                let px = v2v
                    .frames
                    .to_pixels(field, req.width, req.height, &self.device)?;
                let (mean, _) = self.vae.encode(&px.to_dtype(self.vae.dtype())?)?;
                let clean = self.vae.normalize_latents(&mean.to_dtype(DType::F32)?)?;
                let (tail, sigma) = full.truncated(v2v.strength).map_err(|e| match e {
                    GpuError::InvalidInput { msg, .. } => {
                        GpuError::invalid("video_to_video.strength", msg)
                    }
                    other => other,
                })?;
                let start = ((&noise * sigma as f64)? + (clean * (1.0f32 - sigma) as f64)?)?;
                (tail, start)
            }
        };
        let conds = req
            .conditions
            .iter()
            .enumerate()
            .map(|(i, ci)| {
                Ok(Condition {
                    pixels: ci.frames.to_pixels(
                        &format!("conditions[{i}]"),
                        req.width,
                        req.height,
                        &self.device,
                    )?,
                    frame_index: ci.frame_index,
                    strength: ci.strength,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut noise_src = SeededNoise(req.seed);
        let (latents, cond) = apply_conditions(
            Some(&self.vae),
            &start,
            &conds,
            &g,
            &mut noise_src,
            req.image_cond_noise_scale,
        )?;
        Ok(DenoiseState {
            latents,
            grid,
            schedule,
            step: 0,
            frozen_tokens: 0,
            guidance_scale: req.guidance_scale,
            cond: Some(Box::new(cond)),
            seed: req.seed,
            wan: None,
            lora: req.lora.clone(),
        })
    }
}

impl DenoiseState {
    /// The latents the transformer sees at this step: hard-conditioned
    /// tokens re-noised for the step (the same values however often it is
    /// computed: they depend only on the start latents and the step).
    pub(super) fn step_input(&self) -> Result<Tensor> {
        let Some(cond) = &self.cond else {
            return Ok(self.latents.clone());
        };
        let t = self.current_timestep()?;
        if !cond.renoises() {
            return Ok(self.latents.clone());
        }
        let eps = SeededNoise(self.seed).draw(
            NoiseDraw::Step(self.step),
            self.latents.dims(),
            self.latents.device(),
        )?;
        cond.renoise(&self.latents, t, &eps)
    }

    pub(crate) fn current_timestep(&self) -> Result<f32> {
        self.schedule
            .timesteps
            .get(self.step)
            .copied()
            .ok_or_else(|| {
                GpuError::invalid(
                    "step",
                    format!(
                        "{} is past the schedule's {} steps",
                        self.step,
                        self.schedule.steps()
                    ),
                )
            })
    }

    /// Tokens of the video itself (a conditioned job's extra keyframe
    /// tokens dropped), packed `[1, F*h*w, C]`.
    pub fn video_latents(&self) -> Result<Tensor> {
        match &self.cond {
            Some(c) if c.extra > 0 => {
                let n = self.latents.dim(1)? - c.extra;
                Ok(self.latents.narrow(1, c.extra, n)?)
            }
            _ => Ok(self.latents.clone()),
        }
    }
}
