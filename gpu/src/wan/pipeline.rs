//! Wan 2.1 sampling as diffusers' `WanPipeline` / `WanImageToVideoPipeline`
//! run it: classifier-free guidance as two batch-1 passes (conditioned
//! first), `v = v_u + g·(v_c − v_u)`, and the UniPC sampler. Image-to-video
//! adds a condition the transformer sees next to the latents every step:
//! a mask marking latent frame 0 and the VAE's mean encoding of the first
//! frame followed by black frames, plus the CLIP image tokens in its
//! cross-attention.

use candle_core::{DType, Tensor};

use super::{WanTransformer, WanVae};
use crate::clip::ClipVisionEncoder;
use crate::error::{GpuError, Result};
use crate::unipc::{FlowSchedule, UniPc, UniPcConfig};

/// What a denoising run is given besides the models.
pub struct WanDenoise<'a> {
    /// Initial noise `[1, z, F, h, w]`.
    pub latents: Tensor,
    /// UMT5 prompt embeddings (zero-padded rows included).
    pub text: &'a Tensor,
    /// The negative prompt's, when guidance is on.
    pub negative: Option<&'a Tensor>,
    pub guidance: f64,
    pub steps: usize,
    /// The sampler's shift (the scheduler config's `flow_shift` if `None`).
    pub shift: Option<f64>,
    /// Image-to-video: the channels concatenated to the latents each step.
    pub condition: Option<&'a Tensor>,
    /// Image-to-video: CLIP's penultimate tokens.
    pub image: Option<&'a Tensor>,
}

/// What the run leaves: the final latents, its schedule, and the first
/// step's transformer input (for checks).
pub struct WanDenoised {
    pub latents: Tensor,
    pub schedule: FlowSchedule,
    pub step0_input: Tensor,
}

/// Runs the whole schedule.
pub fn denoise(
    model: &WanTransformer,
    sampler: &UniPcConfig,
    job: WanDenoise<'_>,
) -> Result<WanDenoised> {
    let shift = job.shift.unwrap_or(sampler.flow_shift);
    let mut unipc = UniPc::new(sampler, job.steps, shift)?;
    let mut x = job.latents.to_dtype(DType::F32)?;
    let mut step0 = None;
    while let Some(t) = unipc.timestep() {
        let input = match job.condition {
            Some(c) => Tensor::cat(&[&x, c], 1)?,
            None => x.clone(),
        };
        step0.get_or_insert_with(|| input.clone());
        let ts = Tensor::full(t as f32, x.dim(0)?, x.device())?;
        let v_c = model.forward(&input, &ts, job.text, job.image)?;
        let v = match (job.negative, job.guidance > 1.0) {
            (Some(neg), true) => {
                let v_u = model.forward(&input, &ts, neg, job.image)?;
                (&v_u + ((v_c - &v_u)? * job.guidance)?)?
            }
            _ => v_c,
        };
        x = unipc.step(&v, &x)?;
    }
    Ok(WanDenoised {
        latents: x,
        schedule: unipc.schedule.clone(),
        step0_input: step0.ok_or_else(|| GpuError::invalid("steps", "must be at least 1"))?,
    })
}

/// The image-to-video condition for a first frame `image` `[3, H, W]` in
/// [0, 1] and a video of `frames` frames (4k+1): `[1, 4 + z, F, H/8, W/8]`.
pub fn image_condition(vae: &WanVae, image: &Tensor, frames: usize) -> Result<Tensor> {
    let (c, h, w) = image.dims3()?;
    if c != 3 || frames == 0 || (frames - 1) % 4 != 0 {
        return Err(GpuError::invalid(
            "image",
            format!(
                "shape {:?} for {frames} frames: needs [3, H, W] and 4k+1 frames",
                image.dims()
            ),
        ));
    }
    let first = image
        .to_dtype(DType::F32)?
        .affine(2.0, -1.0)?
        .reshape((1, 3, 1, h, w))?;
    let rest = Tensor::zeros((1, 3, frames - 1, h, w), DType::F32, image.device())?;
    let (mean, _) = vae.encode(&Tensor::cat(&[&first, &rest], 2)?)?;
    let (m, s) = vae.config.latent_stats(image.device())?;
    let latents = mean.broadcast_sub(&m)?.broadcast_div(&s)?;
    let (_, _, f, lh, lw) = latents.dims5()?;
    let ones = Tensor::ones((1, 4, 1, lh, lw), DType::F32, image.device())?;
    let mask = if f > 1 {
        Tensor::cat(
            &[
                &ones,
                &Tensor::zeros((1, 4, f - 1, lh, lw), DType::F32, image.device())?,
            ],
            2,
        )?
    } else {
        ones
    };
    Ok(Tensor::cat(&[&mask, &latents], 1)?)
}

/// CLIP's image tokens for a preprocessed `[1, 3, S, S]` picture.
pub fn image_tokens(clip: &ClipVisionEncoder, pixels: &Tensor) -> Result<Tensor> {
    Ok(clip.forward(pixels)?.penultimate)
}
