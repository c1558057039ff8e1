//! The runners of the component kinds: each loads its model from the
//! case's config and weights, feeds the case's inputs and returns named
//! outputs. The models know nothing of golden cases; this module calls them.

use candle_core::Tensor;

use super::Case;
use crate::error::{GpuError, Result};
use crate::scheduler::SchedulerConfig;
use crate::t5::{T5Config, T5Encoder};
use crate::transformer::{LatentGrid, LtxTransformer, TransformerConfig};
use crate::vae::{LtxVae, VaeConfig, VaeParts};
use crate::weights::parse_config;

/// Golden runner for `ltx_transformer` cases.
pub fn transformer(case: &Case) -> Result<Vec<(String, Tensor)>> {
    let cfg: TransformerConfig = parse_config(case.config.clone(), &case.case_desc())?;
    let model = LtxTransformer::load(case.weights()?, &cfg)?;
    let rs = case
        .scalars
        .get("rope_interpolation_scale")
        .and_then(|v| v.as_array())
        .filter(|a| a.len() == 3)
        .ok_or_else(|| {
            GpuError::config(
                case.case_desc(),
                "missing scalar `rope_interpolation_scale` [3]",
            )
        })?;
    let rope_scale = [
        rs[0].as_f64().unwrap_or(f64::NAN),
        rs[1].as_f64().unwrap_or(f64::NAN),
        rs[2].as_f64().unwrap_or(f64::NAN),
    ];
    let grid = LatentGrid {
        frames: case.scalar_usize("num_frames")?,
        height: case.scalar_usize("height")?,
        width: case.scalar_usize("width")?,
        rope_scale,
    };
    let text = model.prepare_text(
        &case.input("encoder_hidden_states")?,
        &case.input("encoder_attention_mask")?,
    )?;
    let out = model.forward(
        &case.input("hidden_states")?,
        &text,
        &case.input("timestep")?,
        &grid,
    )?;
    Ok(vec![("output".into(), out)])
}

/// The case's VAE, only the half it exercises: the reference's single-half
/// cases ship only that half's weights.
fn golden_vae(case: &Case, parts: VaeParts) -> Result<LtxVae> {
    let cfg: VaeConfig = parse_config(case.config.clone(), &case.case_desc())?;
    LtxVae::load_parts(case.weights()?, &cfg, parts)
}

pub fn vae_decoder(case: &Case) -> Result<Vec<(String, Tensor)>> {
    let vae = golden_vae(case, VaeParts::DecoderOnly)?;
    let t = match case.scalars.get("decode_timestep") {
        Some(_) => Some(case.scalar_f64("decode_timestep")?),
        None => None,
    };
    let video = vae.decode(&case.input("latents")?, t)?;
    Ok(vec![("video".to_string(), video)])
}

pub fn vae_encoder(case: &Case) -> Result<Vec<(String, Tensor)>> {
    let vae = golden_vae(case, VaeParts::EncoderOnly)?;
    let (mean, std) = vae.encode(&case.input("video")?)?;
    Ok(vec![
        ("latent_mean".to_string(), mean),
        ("latent_std".to_string(), std),
    ])
}

/// Golden runner for `t5_encoder` cases.
pub fn t5_encoder(case: &Case) -> Result<Vec<(String, Tensor)>> {
    let cfg: T5Config = parse_config(case.config.clone(), &case.case_desc())?;
    let model = T5Encoder::load(case.weights()?, &cfg)?;
    let ids = case.input("input_ids")?;
    let out = model.forward(&ids)?;
    Ok(vec![("last_hidden_state".to_string(), out)])
}

/// Golden runner for `flow_match_schedule` cases.
pub fn flow_match_schedule(case: &Case) -> Result<Vec<(String, Tensor)>> {
    let cfg: SchedulerConfig = parse_config(case.config.clone(), &case.case_desc())?;
    let pairs = case
        .scalars
        .get("pairs")
        .and_then(|p| p.as_array())
        .ok_or_else(|| GpuError::config(case.case_desc(), "missing scalar `pairs`"))?;
    let mut out = Vec::new();
    for p in pairs {
        let (s, n) = match p.as_array().map(|a| a.as_slice()) {
            Some([s, n]) => (s.as_u64(), n.as_u64()),
            _ => (None, None),
        };
        let (Some(s), Some(n)) = (s, n) else {
            return Err(GpuError::config(case.case_desc(), format!("bad pair {p}")));
        };
        let sch = cfg.schedule(s as usize, n as usize)?;
        let dev = &candle_core::Device::Cpu;
        out.push((
            format!("timesteps_{s}_{n}"),
            Tensor::new(sch.timesteps.as_slice(), dev)?,
        ));
        out.push((
            format!("sigmas_{s}_{n}"),
            Tensor::new(sch.sigmas.as_slice(), dev)?,
        ));
    }
    Ok(out)
}

/// Golden runner for `unipc_flow_schedule` cases: the schedules of the
/// case's (steps, shift) pairs, then its steps on the given sample and
/// model outputs.
pub fn unipc_flow_schedule(case: &Case) -> Result<Vec<(String, Tensor)>> {
    let cfg: crate::unipc::UniPcConfig = parse_config(case.config.clone(), &case.case_desc())?;
    let dev = &candle_core::Device::Cpu;
    let pairs = case
        .scalars
        .get("pairs")
        .and_then(|p| p.as_array())
        .ok_or_else(|| GpuError::config(case.case_desc(), "missing scalar `pairs`"))?;
    let mut out = Vec::new();
    for p in pairs {
        let (Some(n), Some(s)) = (
            p.get(0).and_then(|v| v.as_u64()),
            p.get(1).and_then(|v| v.as_f64()),
        ) else {
            return Err(GpuError::config(case.case_desc(), format!("bad pair {p}")));
        };
        let sch = cfg.schedule(n as usize, s)?;
        let name = if s.fract() == 0.0 {
            format!("{n}_{}", s as i64)
        } else {
            format!("{n}_{s}")
        };
        let ts: Vec<f32> = sch.timesteps.iter().map(|&t| t as f32).collect();
        out.push((
            format!("timesteps_{name}"),
            Tensor::new(ts.as_slice(), dev)?,
        ));
        out.push((
            format!("sigmas_{name}"),
            Tensor::new(sch.sigmas.as_slice(), dev)?,
        ));
    }
    let steps = case.scalar_f64("step_num_inference_steps")? as usize;
    let mut sampler = crate::unipc::UniPc::new(&cfg, steps, case.scalar_f64("step_flow_shift")?)?;
    let mut x = case.input("sample")?;
    let outputs = case.input("model_outputs")?;
    let (mut samples, mut ts) = (Vec::new(), Vec::new());
    for i in 0..steps {
        ts.push(sampler.timestep().unwrap_or_default() as f32);
        x = sampler.step(&outputs.get(i)?, &x)?;
        samples.push(x.clone());
    }
    out.push(("step_samples".into(), Tensor::stack(&samples, 0)?));
    out.push(("step_timesteps".into(), Tensor::new(ts.as_slice(), dev)?));
    Ok(out)
}

/// Golden runner for `umt5_encoder` cases (Wan's text encoder): UMT5 with
/// the attention mask, `last_hidden_state`, and `prompt_embeds` (rows at
/// and past each sequence's token count set to 0, as WanPipeline trims and
/// zero-pads).
pub fn umt5_encoder(case: &Case) -> Result<Vec<(String, Tensor)>> {
    let mut cfg: T5Config = parse_config(case.config.clone(), &case.case_desc())?;
    cfg.model_type.get_or_insert_with(|| "umt5".into());
    let model = T5Encoder::load(case.weights()?, &cfg)?;
    let ids = case.input("input_ids")?;
    let mask = case.input("attention_mask")?;
    let hidden = model.forward_masked(&ids, Some(&mask))?;
    let embeds = crate::t5::zero_past_length(&hidden, &mask)?;
    Ok(vec![
        ("last_hidden_state".into(), hidden),
        ("prompt_embeds".into(), embeds),
    ])
}

/// Golden runner for `clip_vision_encoder` cases (Wan's image encoder).
pub fn clip_vision_encoder(case: &Case) -> Result<Vec<(String, Tensor)>> {
    let cfg: crate::clip::ClipVisionConfig = parse_config(case.config.clone(), &case.case_desc())?;
    let model = crate::clip::ClipVisionEncoder::load(case.weights()?, &cfg)?;
    let out = model.forward(&case.input("pixel_values")?)?;
    let mut v = vec![
        ("penultimate_hidden_state".to_string(), out.penultimate),
        ("last_hidden_state".to_string(), out.last),
    ];
    if let Some(e) = out.image_embeds {
        v.push(("image_embeds".to_string(), e));
    }
    Ok(v)
}

/// Golden runner for `wan_transformer` cases (text- and image-to-video).
pub fn wan_transformer(case: &Case) -> Result<Vec<(String, Tensor)>> {
    let cfg: crate::wan::WanConfig = parse_config(case.config.clone(), &case.case_desc())?;
    let model = crate::wan::WanTransformer::load(case.weights()?, &cfg)?;
    let image = if case.inputs.contains("encoder_hidden_states_image") {
        Some(case.input("encoder_hidden_states_image")?)
    } else {
        None
    };
    let out = model.forward(
        &case.input("hidden_states")?,
        &case.input("timestep")?,
        &case.input("encoder_hidden_states")?,
        image.as_ref(),
    )?;
    Ok(vec![("output".into(), out)])
}

/// Golden runner for `wan_vae_decoder` and `wan_vae_encoder` cases.
pub fn wan_vae(case: &Case) -> Result<Vec<(String, Tensor)>> {
    let cfg: crate::wan::WanVaeConfig = parse_config(case.config.clone(), &case.case_desc())?;
    let vae = crate::wan::WanVae::load(case.weights()?, &cfg)?;
    Ok(if case.kind == "wan_vae_decoder" {
        let (video, raw) = vae.decode(&case.input("latents")?)?;
        vec![("video".into(), video), ("video_unclamped".into(), raw)]
    } else {
        let (mean, std) = vae.encode(&case.input("video")?)?;
        vec![("latent_mean".into(), mean), ("latent_std".into(), std)]
    })
}

/// Golden runner for `wan_pipeline_t2v` and `wan_pipeline_i2v` cases.
pub fn wan_pipeline(case: &Case) -> Result<Vec<(String, Tensor)>> {
    use crate::wan::pipeline::{denoise, image_condition, image_tokens, WanDenoise};
    let w = case.weights()?;
    let tcfg: crate::wan::WanConfig =
        parse_config(case.config_part("transformer")?, &case.case_desc())?;
    let model = crate::wan::WanTransformer::load(&w.pp("transformer"), &tcfg)?;
    let sampler: crate::unipc::UniPcConfig =
        parse_config(case.config_part("scheduler")?, &case.case_desc())?;
    let mut out = Vec::new();
    let (condition, image) = if case.kind == "wan_pipeline_i2v" {
        let vcfg: crate::wan::WanVaeConfig =
            parse_config(case.config_part("vae")?, &case.case_desc())?;
        let vae = crate::wan::WanVae::load(&w.pp("vae"), &vcfg)?;
        let ccfg: crate::clip::ClipVisionConfig =
            parse_config(case.config_part("image_encoder")?, &case.case_desc())?;
        let clip = crate::clip::ClipVisionEncoder::load(&w.pp("image_encoder"), &ccfg)?;
        let frames = case.scalar_f64("num_frames")? as usize;
        let cond = image_condition(&vae, &case.input("image")?, frames)?;
        let tokens = image_tokens(&clip, &case.input("clip_pixel_values")?)?;
        out.push(("condition".to_string(), cond.clone()));
        out.push(("image_embeds".to_string(), tokens.clone()));
        (Some(cond), Some(tokens))
    } else {
        (None, None)
    };
    let (text, neg) = (
        case.input("prompt_embeds")?,
        case.input("negative_prompt_embeds")?,
    );
    let r = denoise(
        &model,
        &sampler,
        WanDenoise {
            latents: case.input("latents")?,
            text: &text,
            negative: Some(&neg),
            guidance: case.scalar_f64("guidance_scale")?,
            steps: case.scalar_f64("num_inference_steps")? as usize,
            shift: None,
            condition: condition.as_ref(),
            image: image.as_ref(),
        },
    )?;
    let dev = &candle_core::Device::Cpu;
    let ts: Vec<f32> = r.schedule.timesteps.iter().map(|&t| t as f32).collect();
    out.push(("latents".into(), r.latents));
    out.push(("timesteps".into(), Tensor::new(ts.as_slice(), dev)?));
    out.push((
        "sigmas".into(),
        Tensor::new(r.schedule.sigmas.as_slice(), dev)?,
    ));
    out.push(("step0_timestep".into(), Tensor::new(&ts[..1], dev)?));
    out.push(("step0_hidden_states".into(), r.step0_input));
    Ok(out)
}
