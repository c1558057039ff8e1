//! LTX-Video causal video VAE (diffusers `AutoencoderKLLTXVideo`): the 0.9.0
//! layout, 0.9.1 timestep conditioning / residual upsamplers / noise
//! injection, and 0.9.5 down blocks.
//!
//! Public tensors use `[B, C, F, H, W]`; internally activations are
//! frame-major (see `ops`).

mod blocks;
mod config;
mod conv_cpu;
mod decoder;
mod encoder;
mod ops;
#[cfg(test)]
mod tests;
mod tiling;

use candle_core::Tensor;

pub use config::VaeConfig;

pub use tiling::{decode_workspace_bytes, DecodeTiling, DEFAULT_DECODE_BUDGET_BYTES};

use crate::error::{GpuError, Result};
use crate::weights::Weights;
use decoder::Decoder;
use encoder::Encoder;
use ops::{NoiseRng, Params};

/// Which halves of the VAE to load. Serving text-to-video needs only the
/// decoder; conditioning (image, video, keyframes) needs the encoder too. A
/// checkpoint or case that ships one half (as the reference's single-half
/// cases do) loads with the matching variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VaeParts {
    #[default]
    Both,
    EncoderOnly,
    DecoderOnly,
}

impl VaeParts {
    fn encoder(self) -> bool {
        self != VaeParts::DecoderOnly
    }
    fn decoder(self) -> bool {
        self != VaeParts::EncoderOnly
    }
}

/// The VAE: encoder, decoder (either may be left out, see `VaeParts`) and the
/// latent statistics stored with them.
pub struct LtxVae {
    pub config: VaeConfig,
    /// Seed of the decoder's noise injection (0.9.1 layouts with
    /// `decoder_inject_noise`); unused otherwise.
    pub noise_seed: u64,
    encoder: Option<Encoder>,
    decoder: Option<Decoder>,
    latents_mean: Tensor,
    latents_std: Tensor,
}

type Loaded = (Option<Encoder>, Option<Decoder>, Tensor, Tensor);

fn load_with(p: &Params, cfg: &VaeConfig, parts: VaeParts) -> Result<Loaded> {
    cfg.validate()?;
    let c = cfg.latent_channels;
    let encoder = if parts.encoder() {
        Some(Encoder::load(&p.pp("encoder"), cfg)?)
    } else {
        None
    };
    let decoder = if parts.decoder() {
        Some(Decoder::load(&p.pp("decoder"), cfg)?)
    } else {
        None
    };
    let mean = p.get("latents_mean", &[c])?;
    let std = p.get("latents_std", &[c])?;
    Ok((encoder, decoder, mean, std))
}

/// Every tensor (name relative to the VAE root, shape) that `LtxVae::load`
/// reads for `cfg`, in load order. Fails on a config that `load` rejects.
pub fn try_expected_tensor_shapes(cfg: &VaeConfig) -> Result<Vec<(String, Vec<usize>)>> {
    let (p, log) = Params::recorder();
    load_with(&p, cfg, VaeParts::Both)?;
    let v = log.borrow().clone();
    Ok(v)
}

/// As `try_expected_tensor_shapes`; empty for a config `load` rejects.
pub fn expected_tensor_shapes(cfg: &VaeConfig) -> Vec<(String, Vec<usize>)> {
    try_expected_tensor_shapes(cfg).unwrap_or_default()
}

impl LtxVae {
    /// `w`: the VAE root (`encoder.*`, `decoder.*`, `latents_mean`,
    /// `latents_std`). Computation runs in `w`'s dtype on its device.
    pub fn load(w: &Weights, cfg: &VaeConfig) -> Result<Self> {
        Self::load_parts(w, cfg, VaeParts::Both)
    }

    /// As `load`, reading only the halves `parts` names.
    pub fn load_parts(w: &Weights, cfg: &VaeConfig, parts: VaeParts) -> Result<Self> {
        let (encoder, decoder, latents_mean, latents_std) =
            load_with(&Params::load(w), cfg, parts)?;
        Ok(LtxVae {
            config: cfg.clone(),
            noise_seed: 0,
            encoder,
            decoder,
            latents_mean,
            latents_std,
        })
    }

    /// The weights' dtype (the decode computes in it).
    pub fn dtype(&self) -> candle_core::DType {
        match (&self.decoder, &self.encoder) {
            (Some(d), _) => d.dtype(),
            (None, Some(e)) => e.conv_in_dtype(),
            (None, None) => self.latents_mean.dtype(),
        }
    }

    /// Whether `encode` can run (the encoder was loaded).
    pub fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }

    fn decoder(&self) -> Result<&Decoder> {
        self.decoder
            .as_ref()
            .ok_or_else(|| GpuError::invalid("vae", "this VAE was loaded without its decoder"))
    }

    fn encoder(&self) -> Result<&Encoder> {
        self.encoder
            .as_ref()
            .ok_or_else(|| GpuError::invalid("vae", "this VAE was loaded without its encoder"))
    }

    pub fn latent_channels(&self) -> usize {
        self.config.latent_channels
    }

    /// Decodes de-normalised latents `[B, C, F, H, W]` to video
    /// `[B, 3, (F-1)*8+1, H*32, W*32]`, about [-1, 1], not clamped.
    /// Timestep-conditioned decoders need `timestep` (e.g. 0.05); others
    /// ignore it.
    pub fn decode(&self, z: &Tensor, timestep: Option<f64>) -> Result<Tensor> {
        let mut rng = NoiseRng::new(self.noise_seed);
        self.decoder()?.forward(z, timestep, &mut rng)
    }

    /// Encodes video `[B, 3, F, H, W]` in [-1, 1] (H, W multiples of the
    /// spatial compression) to the latent distribution's (mean, std).
    pub fn encode(&self, video: &Tensor) -> Result<(Tensor, Tensor)> {
        self.encoder()?.forward(video)
    }

    fn stats(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let c = self.latent_channels();
        let dims = z.dims();
        if dims.len() != 5 || dims[1] != c {
            return Err(GpuError::invalid(
                "latents",
                format!("expected [B, {c}, F, H, W], got shape {dims:?}"),
            ));
        }
        let shape = (1, c, 1, 1, 1);
        let mean = self
            .latents_mean
            .to_dtype(z.dtype())?
            .to_device(z.device())?;
        let std = self
            .latents_std
            .to_dtype(z.dtype())?
            .to_device(z.device())?;
        Ok((mean.reshape(shape)?, std.reshape(shape)?))
    }

    /// `(z - mean) * scaling_factor / std`, per channel.
    pub fn normalize_latents(&self, z: &Tensor) -> Result<Tensor> {
        let (mean, std) = self.stats(z)?;
        Ok((z.broadcast_sub(&mean)? * self.config.scaling_factor)?.broadcast_div(&std)?)
    }

    /// `z * std / scaling_factor + mean`, per channel.
    pub fn denormalize_latents(&self, z: &Tensor) -> Result<Tensor> {
        let (mean, std) = self.stats(z)?;
        Ok((z.broadcast_mul(&std)? / self.config.scaling_factor)?.broadcast_add(&mean)?)
    }
}
