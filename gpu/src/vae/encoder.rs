//! `LTXVideoEncoder3d`: patchify, conv_in, down blocks, mid block,
//! RMSNorm + SiLU, conv_out to `latent_channels + 1` (means plus one shared
//! log-variance channel).

use candle_core::Tensor;

use super::blocks::{DownBlock, DownBlockSpec, MidBlock};
use super::config::{at, VaeConfig};
use super::ops::{patchify, rms_norm_channels, swap_cf, Conv3d, NoiseRng, Params};
use crate::error::{GpuError, Result};

const V095: &str = "LTXVideo095DownBlock3D";
const V090: &str = "LTXVideoDownBlock3D";

pub(crate) struct Encoder {
    conv_in: Conv3d,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    conv_out: Conv3d,
    patch: usize,
    in_channels: usize,
    latent_channels: usize,
}

impl Encoder {
    /// `p`: the `encoder.` view.
    pub(crate) fn load(p: &Params, cfg: &VaeConfig) -> Result<Self> {
        let causal = cfg.encoder_causal;
        let eps = cfg.resnet_norm_eps;
        let blocks = &cfg.block_out_channels;
        let mut ch = at(blocks, 0, "block_out_channels")?;
        let conv_in = Conv3d::load(
            &p.pp("conv_in"),
            "conv",
            cfg.in_channels * cfg.patch_size * cfg.patch_size,
            ch,
            3,
            (1, 1),
            causal,
        )?;
        let is_095 = cfg.down_block_types.last().map(String::as_str) == Some(V095);
        let n = blocks.len() - usize::from(is_095);
        let mut down_blocks = Vec::with_capacity(n);
        for i in 0..n {
            let in_c = ch;
            ch = if is_095 || i + 1 < n {
                at(blocks, i + 1, "block_out_channels")?
            } else {
                blocks[i]
            };
            let kind = at(&cfg.down_block_types, i, "down_block_types")?;
            let downsample = if kind == V095 {
                Some(at(&cfg.downsample_type, i, "downsample_type")?)
            } else if kind == V090 {
                None
            } else {
                return Err(GpuError::config(
                    "VAE config",
                    format!("`down_block_types`: unknown block type `{kind}`"),
                ));
            };
            let spec = DownBlockSpec {
                in_c,
                out_c: ch,
                layers: at(&cfg.layers_per_block, i, "layers_per_block")?,
                eps,
                scale: at(&cfg.spatio_temporal_scaling, i, "spatio_temporal_scaling")?,
                causal,
                v095: downsample.as_deref(),
            };
            down_blocks.push(DownBlock::load(&p.pp(format!("down_blocks.{i}")), &spec)?);
        }
        let mid_layers = *cfg
            .layers_per_block
            .last()
            .ok_or_else(|| GpuError::config("VAE config", "`layers_per_block` is empty"))?;
        let mid_block = MidBlock::load(
            &p.pp("mid_block"),
            ch,
            mid_layers,
            eps,
            causal,
            false,
            false,
        )?;
        let conv_out = Conv3d::load(
            &p.pp("conv_out"),
            "conv",
            ch,
            cfg.latent_channels + 1,
            3,
            (1, 1),
            causal,
        )?;
        Ok(Encoder {
            conv_in,
            down_blocks,
            mid_block,
            conv_out,
            patch: cfg.patch_size,
            in_channels: cfg.in_channels,
            latent_channels: cfg.latent_channels,
        })
    }

    /// `video` `[B, C, F, H, W]` -> (mean, std), each `[B, latent, F', H', W']`.
    pub(crate) fn forward(&self, video: &Tensor) -> Result<(Tensor, Tensor)> {
        let dims = video.dims();
        if dims.len() != 5 || dims[1] != self.in_channels {
            return Err(GpuError::invalid(
                "video",
                format!(
                    "expected [B, {}, F, H, W], got shape {dims:?}",
                    self.in_channels
                ),
            ));
        }
        let video = video.to_dtype(self.conv_in_dtype())?;
        let mut rng = NoiseRng::new(0);
        let mut h = self.conv_in.forward(&patchify(&video, self.patch)?)?;
        for b in &self.down_blocks {
            h = b.forward(&h, &mut rng)?;
        }
        h = self.mid_block.forward(&h, None, &mut rng)?;
        h = crate::kernels::silu(&rms_norm_channels(&h, 1e-8)?)?;
        let h = self.conv_out.forward(&h)?;
        let c = self.latent_channels;
        let mean = swap_cf(&h.narrow(2, 0, c)?)?;
        let logvar = h.narrow(2, c, 1)?.clamp(-30f32, 20f32)?;
        let std = (logvar * 0.5)?.exp()?;
        let (b, f, _, hh, ww) = std.dims5()?;
        let std = swap_cf(&std.broadcast_as((b, f, c, hh, ww))?)?;
        Ok((mean, std))
    }

    pub(crate) fn conv_in_dtype(&self) -> candle_core::DType {
        self.conv_in.dtype()
    }
}
