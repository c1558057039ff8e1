//! `LTXVideoDecoder3d`: conv_in, mid block, up blocks (depth-to-space
//! upsamplers), RMSNorm (+ timestep modulation in 0.9.1), SiLU, conv_out,
//! un-patchify.

use candle_core::{DType, Tensor};

use super::blocks::{final_shift_scale, MidBlock, UpBlock, UpBlockSpec};
use super::config::{at_rev, VaeConfig};
use super::ops::{rms_norm_channels, swap_cf, unpatchify, Conv3d, NoiseRng, Params};
use crate::error::{GpuError, Result};
use crate::nn::TimestepEmbedder;

struct TimeCond {
    embedder: TimestepEmbedder,
    /// `[2, C]` (shift, scale).
    scale_shift_table: Tensor,
    /// Scalar `timestep_scale_multiplier` (1000 in the public checkpoints).
    multiplier: Tensor,
}

pub(crate) struct Decoder {
    conv_in: Conv3d,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_out: Conv3d,
    time: Option<TimeCond>,
    patch: usize,
    latent_channels: usize,
}

impl Decoder {
    /// `p`: the `decoder.` view.
    pub(crate) fn load(p: &Params, cfg: &VaeConfig) -> Result<Self> {
        let causal = cfg.decoder_causal;
        let eps = cfg.resnet_norm_eps;
        let cond = cfg.timestep_conditioning;
        let blocks = &cfg.decoder_block_out_channels;
        let mut ch = at_rev(blocks, 0, "decoder_block_out_channels")?;
        let conv_in = Conv3d::load(
            &p.pp("conv_in"),
            "conv",
            cfg.latent_channels,
            ch,
            3,
            (1, 1),
            causal,
        )?;
        let layers = &cfg.decoder_layers_per_block;
        let noise = &cfg.decoder_inject_noise;
        let mid_block = MidBlock::load(
            &p.pp("mid_block"),
            ch,
            at_rev(layers, 0, "decoder_layers_per_block")?,
            eps,
            causal,
            at_rev(noise, 0, "decoder_inject_noise")?,
            cond,
        )?;
        let mut up_blocks = Vec::with_capacity(blocks.len());
        for i in 0..blocks.len() {
            let factor = at_rev(&cfg.upsample_factor, i, "upsample_factor")?;
            let in_c = ch / factor;
            ch = at_rev(blocks, i, "decoder_block_out_channels")? / factor;
            if in_c == 0 || ch == 0 {
                return Err(GpuError::config(
                    "VAE config",
                    format!("`upsample_factor` {factor} leaves up block {i} with no channels"),
                ));
            }
            let spec = UpBlockSpec {
                in_c,
                out_c: ch,
                layers: at_rev(layers, i + 1, "decoder_layers_per_block")?,
                eps,
                scale: at_rev(
                    &cfg.decoder_spatio_temporal_scaling,
                    i,
                    "decoder_spatio_temporal_scaling",
                )?,
                causal,
                inject_noise: at_rev(noise, i + 1, "decoder_inject_noise")?,
                cond,
                residual: at_rev(&cfg.upsample_residual, i, "upsample_residual")?,
                upscale_factor: factor,
            };
            up_blocks.push(UpBlock::load(&p.pp(format!("up_blocks.{i}")), &spec)?);
        }
        let conv_out = Conv3d::load(
            &p.pp("conv_out"),
            "conv",
            ch,
            cfg.out_channels * cfg.patch_size * cfg.patch_size,
            3,
            (1, 1),
            causal,
        )?;
        let time = if cond {
            Some(TimeCond {
                multiplier: p.get("timestep_scale_multiplier", &[])?,
                embedder: p.pp("time_embedder").time_embedder(2 * ch)?,
                scale_shift_table: p.get("scale_shift_table", &[2, ch])?,
            })
        } else {
            None
        };
        Ok(Decoder {
            conv_in,
            mid_block,
            up_blocks,
            conv_out,
            time,
            patch: cfg.patch_size,
            latent_channels: cfg.latent_channels,
        })
    }

    pub(crate) fn dtype(&self) -> DType {
        self.conv_in.dtype()
    }

    /// `z` `[B, C, F, H, W]` -> video `[B, out, (F-1)*8+1, H*32, W*32]`
    /// (for the standard layout). `timestep` is in the pipeline's units
    /// (e.g. 0.05); the stored multiplier is applied here.
    pub(crate) fn forward(
        &self,
        z: &Tensor,
        timestep: Option<f64>,
        rng: &mut NoiseRng,
    ) -> Result<Tensor> {
        let dims = z.dims();
        if dims.len() != 5 || dims[1] != self.latent_channels {
            return Err(GpuError::invalid(
                "latents",
                format!(
                    "expected [B, {}, F, H, W], got shape {dims:?}",
                    self.latent_channels
                ),
            ));
        }
        let dtype = self.conv_in.dtype();
        let b = dims[0];
        let t = match (&self.time, timestep) {
            (Some(tc), Some(ts)) => {
                if !ts.is_finite() {
                    return Err(GpuError::invalid(
                        "timestep",
                        format!("must be finite, got {ts}"),
                    ));
                }
                let m = tc.multiplier.to_dtype(DType::F32)?.to_scalar::<f32>()?;
                let v = ts as f32 * m;
                Some(Tensor::from_vec(vec![v; b], b, z.device())?)
            }
            (Some(_), None) => {
                return Err(GpuError::invalid(
                    "timestep",
                    "this VAE decoder is timestep-conditioned and needs a decode timestep",
                ))
            }
            (None, _) => None,
        };
        let mut h = self.conv_in.forward(&swap_cf(&z.to_dtype(dtype)?)?)?;
        h = self.mid_block.forward(&h, t.as_ref(), rng)?;
        for u in &self.up_blocks {
            h = u.forward(&h, t.as_ref(), rng)?;
        }
        h = rms_norm_channels(&h, 1e-8)?;
        if let (Some(tc), Some(t)) = (&self.time, &t) {
            let e = tc.embedder.forward(t)?;
            let (shift, scale) = final_shift_scale(&e, &tc.scale_shift_table)?;
            h = h.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(&shift)?;
        }
        let h = self.conv_out.forward(&crate::kernels::silu(&h)?)?;
        unpatchify(&h, self.patch)
    }
}
