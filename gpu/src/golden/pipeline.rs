//! The `ltx_pipeline_t2v` golden case: the sampling loop from given prompt
//! embeddings and initial noise, written out step by step like the reference.

use candle_core::Tensor;

use super::Case;
use crate::error::Result;
use crate::pipeline::{postprocess, unpack_latents, PromptEmbeds};
use crate::scheduler::{euler_step, SchedulerConfig};
use crate::transformer::{LatentGrid, LtxTransformer, TransformerConfig};
use crate::vae::{LtxVae, VaeConfig};
use crate::weights::parse_config;

/// A pipeline case's `config` (`transformer`, `vae`).
#[derive(serde::Deserialize)]
pub(super) struct PipelineCfg {
    pub transformer: TransformerConfig,
    pub vae: VaeConfig,
}

/// The case's configs and its transformer (both pipeline kinds load them
/// alike; each loads the VAE halves it uses).
pub(super) fn config_and_transformer(case: &Case) -> Result<(PipelineCfg, LtxTransformer)> {
    let cfg: PipelineCfg = parse_config(case.config.clone(), &case.case_desc())?;
    let transformer = LtxTransformer::load(&case.weights()?.pp("transformer"), &cfg.transformer)?;
    Ok((cfg, transformer))
}

/// Golden runner for `ltx_pipeline_t2v` cases: from given prompt embeddings
/// and packed initial noise through guided Euler steps, decode and
/// post-processing.
pub fn ltx_pipeline_t2v(case: &Case) -> Result<Vec<(String, Tensor)>> {
    let (cfg, transformer) = config_and_transformer(case)?;
    let w = case.weights()?;
    let vae = LtxVae::load(&w.pp("vae"), &cfg.vae)?;
    let (width, height) = (case.scalar_usize("width")?, case.scalar_usize("height")?);
    let frames = case.scalar_usize("num_frames")?;
    let steps = case.scalar_usize("num_inference_steps")?;
    let guidance = case.scalar_f64("guidance_scale")?;
    let fps = case.scalar_f64("frame_rate")?;
    let (s, t) = (
        cfg.vae.spatial_compression(),
        cfg.vae.temporal_compression(),
    );
    let grid = LatentGrid {
        frames: (frames - 1) / t + 1,
        height: height / s,
        width: width / s,
        rope_scale: [t as f64 / fps, s as f64, s as f64],
    };
    let sched = SchedulerConfig::default().schedule(grid.tokens(), steps)?;
    let pos = PromptEmbeds {
        embeds: case.input("prompt_embeds")?,
        mask: case.input("prompt_attention_mask")?,
    };
    let neg = PromptEmbeds {
        embeds: case.input("negative_prompt_embeds")?,
        mask: case.input("negative_prompt_attention_mask")?,
    };
    let text = if guidance > 1.0 {
        transformer.prepare_text(
            &Tensor::cat(&[&neg.embeds, &pos.embeds], 0)?,
            &Tensor::cat(&[&neg.mask, &pos.mask], 0)?,
        )?
    } else {
        transformer.prepare_text(&pos.embeds, &pos.mask)?
    };
    let mut x = case.input("latents")?;
    for i in 0..sched.steps() {
        let t = sched.timesteps[i];
        let (xin, b) = if guidance > 1.0 {
            (Tensor::cat(&[&x, &x], 0)?, 2)
        } else {
            (x.clone(), 1)
        };
        let ts = Tensor::from_vec(vec![t; b], b, x.device())?;
        let v = transformer.forward(&xin, &text, &ts, &grid)?;
        let v = if guidance > 1.0 {
            let vu = v.narrow(0, 0, 1)?;
            (&vu + ((v.narrow(0, 1, 1)? - &vu)? * guidance)?)?
        } else {
            v
        };
        x = euler_step(&x, &v, sched.sigmas[i], sched.sigmas[i + 1])?;
    }
    let z = vae.denormalize_latents(&unpack_latents(&x, grid.frames, grid.height, grid.width)?)?;
    let ts = case.scalars.get("decode_timestep").and_then(|v| v.as_f64());
    let video = vae.decode(
        &z,
        if cfg.vae.timestep_conditioning {
            ts.or(Some(0.05))
        } else {
            None
        },
    )?;
    Ok(vec![("video".into(), postprocess(&video)?)])
}
