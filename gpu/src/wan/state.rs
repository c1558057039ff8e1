//! What a Wan job carries between denoising steps besides its latents, and
//! how a checkpoint holds it. Kept apart from `serve` (which uses the
//! pipeline's types) so the pipeline's `DenoiseState` can hold it without
//! the two modules importing each other.

use candle_core::Tensor;

use crate::error::{GpuError, Result};
use crate::unipc::UniPc;

/// The sampler's history, and for image-to-video the condition channels
/// and CLIP tokens the transformer sees every step.
#[derive(Clone)]
pub struct WanState {
    pub sampler: UniPc,
    /// `[1, 4 + z, F, h, w]`: the first-frame mask and its VAE latents.
    pub condition: Option<Tensor>,
    /// `[1, N, image_dim]`: CLIP's penultimate tokens of the image.
    pub image_tokens: Option<Tensor>,
}

/// Slots of a Wan checkpoint after the latents: two x0 predictions (the
/// most UniPC keeps, at order 2) and the last predictor's start (zeros where
/// the history is shorter).
const HISTORY_SLOTS: usize = 3;

/// A checkpoint's tensor for a Wan job: the latents `[1, z, F, h, w]` and
/// the sampler's history stacked on dim 0 (`[1 + HISTORY_SLOTS, ...]`).
pub fn snapshot(latents: &Tensor, w: &WanState) -> Result<Tensor> {
    let (x0s, last) = w.sampler.history();
    let zero = latents.zeros_like()?;
    let mut parts = vec![latents.clone()];
    for i in 0..2 {
        parts.push(x0s.get(i).cloned().unwrap_or_else(|| zero.clone()));
    }
    parts.push(last.cloned().unwrap_or(zero));
    Ok(Tensor::cat(&parts, 0)?)
}

/// The dims [`snapshot`] gives for latents of `latent_dims`.
pub fn snapshot_dims(latent_dims: &[usize]) -> Vec<usize> {
    let mut d = latent_dims.to_vec();
    if let Some(b) = d.first_mut() {
        *b *= 1 + HISTORY_SLOTS;
    }
    d
}

/// Puts a [`snapshot`] taken after `step` steps back into a freshly
/// prepared job's sampler; returns the latents.
pub fn restore(w: &mut WanState, step: usize, t: &Tensor) -> Result<Tensor> {
    if t.dim(0)? != 1 + HISTORY_SLOTS {
        return Err(GpuError::invalid(
            "checkpoint",
            format!("holds {:?}, not a Wan state", t.dims()),
        ));
    }
    let kept = w.sampler.kept_at(step);
    let x0s = (0..kept)
        .map(|i| t.narrow(0, 1 + i, 1))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let last = if step > 0 {
        Some(t.narrow(0, 3, 1)?)
    } else {
        None
    };
    w.sampler.resume_at(step, x0s, last)?;
    Ok(t.narrow(0, 0, 1)?)
}
