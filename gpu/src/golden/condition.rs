//! The `ltx_condition_pipeline` golden cases: one call of the reference's
//! `LTXConditionPipeline` (keyframes, video extension, video-to-video,
//! `denoise_strength`), replaying its random draws from the case's tape and
//! running the same conditioning code jobs use (`pipeline::condition`).

use candle_core::{Device, Tensor};

use super::Case;
use crate::error::{GpuError, Result};
use crate::pipeline::condition::{
    apply_conditions, per_token_dt, CondGeometry, Condition, NoiseDraw, NoiseSource,
};
use crate::pipeline::{postprocess, unpack_latents};
use crate::scheduler::Schedule;
use crate::transformer::Positions;
use crate::vae::{LtxVae, VaeParts};

/// Replays `rng_NN_*` inputs in tape order, checking each is the draw the
/// code asks for (a mismatch means the draw order differs from the reference).
struct Tape<'a> {
    case: &'a Case,
    names: Vec<String>,
    next: usize,
}

impl NoiseSource for Tape<'_> {
    fn draw(&mut self, what: NoiseDraw, shape: &[usize], device: &Device) -> Result<Tensor> {
        let want = match what {
            NoiseDraw::Initial => "initial_noise".to_string(),
            NoiseDraw::Posterior(i) => format!("cond{i}_posterior_noise"),
            NoiseDraw::KeyframeTokens(_) => "keyframe_token_noise".to_string(),
            NoiseDraw::Step(k) => format!("step{k}_cond_noise"),
            NoiseDraw::Decode => "decode_noise".to_string(),
        };
        let name = self.names.get(self.next).cloned().ok_or_else(|| {
            GpuError::config(
                self.case.case_desc(),
                format!("rng tape ended before draw `{want}`"),
            )
        })?;
        if !name.ends_with(&want) {
            return Err(GpuError::config(
                self.case.case_desc(),
                format!(
                    "draw {} is `{name}` on the tape, the code asked for `{want}`",
                    self.next
                ),
            ));
        }
        self.next += 1;
        let t = self.case.input(&name)?.to_device(device)?;
        if t.dims() != shape {
            return Err(GpuError::ShapeMismatch {
                name,
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            });
        }
        Ok(t)
    }
}

fn scalar_list(case: &Case, key: &str) -> Option<Vec<serde_json::Value>> {
    case.scalars.get(key).and_then(|v| v.as_array()).cloned()
}

/// The case's conditions as pixels in [-1, 1], `[1, 3, N, H, W]`.
fn conditions(case: &Case) -> Result<Vec<Condition>> {
    let mut out = Vec::new();
    for c in scalar_list(case, "conditions").unwrap_or_default() {
        let bad = |m: &str| GpuError::config(case.case_desc(), format!("condition {c}: {m}"));
        let input = c
            .get("input")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("no `input`"))?;
        let t = case.input(input)?;
        let t = match t.rank() {
            3 => t.unsqueeze(1)?,          // [3,H,W] -> [3,1,H,W]
            4 => t.permute((1, 0, 2, 3))?, // [N,3,H,W] -> [3,N,H,W]
            _ => return Err(bad("pixels must be [3,H,W] or [N,3,H,W]")),
        };
        out.push(Condition {
            pixels: t.unsqueeze(0)?.affine(2.0, -1.0)?.contiguous()?,
            frame_index: c
                .get("frame_index")
                .and_then(|v| v.as_u64())
                .ok_or_else(|| bad("no `frame_index`"))? as usize,
            strength: c
                .get("strength")
                .and_then(|v| v.as_f64())
                .ok_or_else(|| bad("no `strength`"))?,
        });
    }
    Ok(out)
}

pub fn ltx_condition_pipeline(case: &Case) -> Result<Vec<(String, Tensor)>> {
    let (cfg, transformer) = super::pipeline::config_and_transformer(case)?;
    let w = case.weights()?;
    let conds = conditions(case)?;
    let decode = case.expected.names().iter().any(|n| n == "video");
    // Only the halves the call uses: the cases ship only those weights.
    let parts = match (conds.is_empty(), decode) {
        (false, true) => Some(VaeParts::Both),
        (false, false) => Some(VaeParts::EncoderOnly),
        (true, true) => Some(VaeParts::DecoderOnly),
        (true, false) => None,
    };
    let vae = parts
        .map(|p| LtxVae::load_parts(&w.pp("vae"), &cfg.vae, p))
        .transpose()?;
    let dev = Device::Cpu;
    let names: Vec<String> = scalar_list(case, "rng_tape")
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.get("name").and_then(|n| n.as_str()).map(String::from))
        .collect();
    let mut tape = Tape {
        case,
        names,
        next: 0,
    };

    let (width, height) = (case.scalar_usize("width")?, case.scalar_usize("height")?);
    let num_frames = case.scalar_usize("num_frames")?;
    let steps = case.scalar_usize("num_inference_steps")?;
    let guidance = case.scalar_f64("guidance_scale")? as f32;
    let (s, t) = (
        cfg.vae.spatial_compression(),
        cfg.vae.temporal_compression(),
    );
    let g = CondGeometry {
        num_frames,
        latent_frames: (num_frames - 1) / t + 1,
        latent_height: height / s,
        latent_width: width / s,
        fps: case.scalar_f64("frame_rate")?,
        spatial: s,
        temporal: t,
    };
    let full = match scalar_list(case, "timesteps") {
        Some(ts) => Schedule::from_timesteps(
            ts.iter()
                .map(|v| v.as_f64().unwrap_or(f64::NAN) as f32)
                .collect(),
            1000,
        )?,
        None => Schedule::linear_quadratic(steps, 1000)?,
    };
    let strength = case
        .scalars
        .get("denoise_strength")
        .and_then(|v| v.as_f64())
        .unwrap_or(1.0);
    let (run, sigma0) = full.truncated(strength)?;

    let c = cfg.transformer.in_channels;
    let shape = [1, c, g.latent_frames, g.latent_height, g.latent_width];
    let noise = tape.draw(NoiseDraw::Initial, &shape, &dev)?;
    let start = if strength < 1.0 {
        let clean = case.input("latents")?;
        ((&noise * sigma0 as f64)? + (clean * (1.0f32 - sigma0) as f64)?)?
    } else {
        noise
    };
    let noise_scale = case.scalar_f64("image_cond_noise_scale")?;
    let (mut x, cond) = apply_conditions(vae.as_ref(), &start, &conds, &g, &mut tape, noise_scale)?;

    let text = transformer.prepare_text(
        &Tensor::cat(
            &[
                &case.input("negative_prompt_embeds")?,
                &case.input("prompt_embeds")?,
            ],
            0,
        )?,
        &Tensor::cat(
            &[
                &case.input("negative_prompt_attention_mask")?,
                &case.input("prompt_attention_mask")?,
            ],
            0,
        )?,
    )?;
    let n_tok = x.dim(1)?;
    let mut out = Vec::new();
    let coords: Vec<f32> = cond.coords.as_slice().iter().flat_map(|c| *c).collect();
    let coords = Tensor::from_vec(coords, (n_tok, 3), &dev)?
        .t()?
        .unsqueeze(0)?;
    out.push((
        "video_coords".to_string(),
        Tensor::cat(&[&coords, &coords], 0)?,
    ));
    out.push((
        "timesteps".to_string(),
        Tensor::new(full.timesteps.as_slice(), &dev)?,
    ));
    out.push((
        "sigmas".to_string(),
        Tensor::new(full.sigmas.as_slice(), &dev)?,
    ));
    let conditioned = !conds.is_empty();
    for (k, &ts) in run.timesteps.iter().enumerate() {
        if conditioned && noise_scale > 0.0 {
            let eps = tape.draw(NoiseDraw::Step(k), x.dims(), &dev)?;
            x = cond.renoise(&x, ts, &eps)?;
        }
        let tt = if conditioned {
            Tensor::from_vec(cond.timesteps(ts), (1, n_tok), &dev)?
        } else {
            Tensor::new(&[[ts]], &dev)?
        };
        let x2 = Tensor::cat(&[&x, &x], 0)?;
        let tt2 = Tensor::cat(&[&tt, &tt], 0)?;
        if k == 0 {
            out.push(("step0_hidden_states".to_string(), x2.clone()));
            out.push(("step0_timestep".to_string(), tt2.clone()));
        }
        let v = transformer
            .forward_at(&x2, &text, &tt2, Positions::Coords(&cond.coords))?
            .to_dtype(candle_core::DType::F32)?;
        let vu = v.narrow(0, 0, 1)?;
        let v = (&vu + ((v.narrow(0, 1, 1)? - &vu)? * guidance as f64)?)?;
        x = if conditioned {
            cond.euler(&x, &v, ts, &full.sigmas)?
        } else {
            let dt = per_token_dt(&[ts], &full.sigmas, |_| true)[0];
            (&x + (v.neg()? * dt as f64)?)?
        };
    }
    let video_tokens = x.narrow(1, cond.extra, n_tok - cond.extra)?;
    let lat = unpack_latents(
        &video_tokens,
        g.latent_frames,
        g.latent_height,
        g.latent_width,
    )?;
    out.push(("latents".to_string(), lat.clone()));
    if let (true, Some(vae)) = (decode, &vae) {
        let dn = case.scalar_f64("decode_noise_scale")? as f32;
        let z = vae.denormalize_latents(&lat)?;
        let eps = tape.draw(NoiseDraw::Decode, z.dims(), &dev)?;
        let z = ((z * (1.0f32 - dn) as f64)? + (eps * dn as f64)?)?;
        let video = vae.decode(&z, Some(case.scalar_f64("decode_timestep")?))?;
        out.push(("video".to_string(), postprocess(&video)?));
    }
    Ok(out)
}
