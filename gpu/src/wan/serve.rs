//! Wan 2.1 as the serving stages run a model: a prompt to UMT5 embeddings,
//! a request to a seeded [`DenoiseState`], one guided velocity for a batch
//! of jobs per transformer forward, one UniPC step per job, and the latents
//! to RGB8 frames. The same operations as [`crate::pipeline::LtxPipeline`]'s,
//! so the dataflow batches, checkpoints and decodes both families alike.
//!
//! The sampling follows diffusers' `WanPipeline` /
//! `WanImageToVideoPipeline` (see [`super::pipeline::denoise`], which the
//! golden cases check); here the guided pair of passes runs as two rows of
//! one batch, the way the dataflow batches every job.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::pipeline::image_condition;
pub use super::state::WanState;
use super::{WanTransformer, WanVae};
use crate::clip::ClipVisionEncoder;
use crate::error::{GpuError, Result};
use crate::pipeline::{DenoiseState, GenerateRequest, PromptEmbeds, RgbImage, TextEncoder, Video};
use crate::rng::{NoiseRng, STREAM_LATENTS};
use crate::scheduler::Schedule;
use crate::transformer::LatentGrid;
use crate::unipc::{UniPc, UniPcConfig};
use crate::weights::{read_config, Weights};

/// VAE compression: 8 pixels per latent cell across, 4 frames per latent
/// frame after the first.
pub const SPATIAL: usize = 8;
pub const TEMPORAL: usize = 4;

/// CLIP's image normalisation (OpenAI CLIP, which Wan's image encoder uses).
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// A loaded Wan 2.1 model (T2V, or I2V with its image encoder).
pub struct WanPipeline {
    pub transformer: WanTransformer,
    pub vae: WanVae,
    /// UMT5 and its tokenizer; prompts are padded to 512 tokens.
    pub text: TextEncoder,
    /// Image-to-video models: CLIP's vision tower (penultimate tokens).
    pub clip: Option<ClipVisionEncoder>,
    pub sampler: UniPcConfig,
    pub untrained: bool,
    pub name: String,
    pub device: Device,
    /// The transformer's linear layers, for fitting LoRA adapters.
    pub lora_targets: std::sync::Arc<crate::lora::Targets>,
}

/// A Wan job's text conditioning: `[negative, positive]` embeddings when
/// guidance applies, else `[positive]`, each `[1, 512, text_dim]`.
#[derive(Clone)]
pub struct WanText {
    pub rows: Tensor,
}

impl WanText {
    pub fn batch(&self) -> usize {
        self.rows.dim(0).unwrap_or(0)
    }
}

impl WanPipeline {
    /// Loads a diffusers-format Wan 2.1 checkpoint directory:
    /// `transformer/`, `vae/`, `text_encoder/` (UMT5), `tokenizer/`,
    /// `scheduler/`, and for image-to-video `image_encoder/` (CLIP vision).
    pub fn from_dir_on(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let sub = |n: &str| dir.join(n);
        let load = |n: &str| -> Result<Weights> {
            Ok(Weights::from_dir(&sub(n))?
                .with_dtype(dtype)
                .with_device(device.clone()))
        };
        let tcfg: super::WanConfig = read_config(&sub("transformer").join("config.json"))?;
        let tw = load("transformer")?;
        let transformer = WanTransformer::load(&tw, &tcfg)?;
        let vcfg: super::WanVaeConfig = read_config(&sub("vae").join("config.json"))?;
        let vae = WanVae::load(&load("vae")?, &vcfg)?;
        let ecfg: crate::t5::T5Config = read_config(&sub("text_encoder").join("config.json"))?;
        let encoder = crate::t5::T5Encoder::load(&load("text_encoder")?, &ecfg)?;
        let tokenizer = crate::tokenizer::PromptTokenizer::from_dir(&sub("tokenizer"))?;
        let sched = sub("scheduler").join("scheduler_config.json");
        let sampler: UniPcConfig = if sched.exists() {
            read_config(&sched)?
        } else {
            UniPcConfig::default()
        };
        sampler.check()?;
        let clip = if tcfg.image_dim.is_some() {
            let ccfg: crate::clip::ClipVisionConfig =
                read_config(&sub("image_encoder").join("config.json"))?;
            Some(ClipVisionEncoder::load(&load("image_encoder")?, &ccfg)?)
        } else {
            None
        };
        if ecfg.d_model != tcfg.text_dim {
            return Err(GpuError::config(
                dir.display().to_string(),
                format!(
                    "text encoder width {} but the transformer reads {}",
                    ecfg.d_model, tcfg.text_dim
                ),
            ));
        }
        Ok(WanPipeline {
            transformer,
            vae,
            text: TextEncoder {
                tokenizer,
                encoder,
                max_len: super::transformer::TEXT_LEN,
            },
            clip,
            sampler,
            // Exported copies of a built-in tiny Wan say so in their index.
            untrained: crate::pipeline::index_says_untrained(dir),
            name: dir.display().to_string(),
            device: device.clone(),
            lora_targets: std::sync::Arc::new(tw.linears()),
        })
    }

    /// Whether the model takes an image (Wan I2V).
    pub fn image_to_video(&self) -> bool {
        self.transformer.config.image_dim.is_some()
    }

    /// Tokenises and encodes one prompt: UMT5 with its attention mask, rows
    /// past the prompt's length zeroed (as the reference trims and pads).
    pub fn encode_prompt(&self, prompt: &[u8]) -> Result<PromptEmbeds> {
        let toks = self.text.tokenizer.encode(prompt, self.text.max_len)?;
        let n = toks.ids.len();
        let ids = Tensor::from_vec(toks.ids, (1, n), &self.device)?;
        let mask: Vec<f32> = toks.mask.iter().map(|m| *m as f32).collect();
        let mask = Tensor::from_vec(mask, (1, n), &self.device)?;
        let hidden = self.text.encoder.forward_masked(&ids, Some(&mask))?;
        Ok(PromptEmbeds {
            embeds: crate::t5::zero_past_length(&hidden, &mask)?,
            mask,
        })
    }

    /// Classifier-free guidance rows for one job.
    pub fn text_condition(
        &self,
        pos: &PromptEmbeds,
        neg: Option<&PromptEmbeds>,
        guidance: f64,
    ) -> Result<WanText> {
        let rows = if guidance > 1.0 {
            let neg = neg.ok_or_else(|| {
                GpuError::invalid("negative_prompt", "needed when guidance_scale > 1")
            })?;
            Tensor::cat(&[&neg.embeds, &pos.embeds], 0)?
        } else {
            pos.embeds.clone()
        };
        Ok(WanText { rows })
    }

    /// The latent grid of a request, checking Wan's size and frame rules.
    pub fn latent_grid(&self, width: usize, height: usize, frames: usize) -> Result<LatentGrid> {
        let [_, ph, pw] = self.transformer.config.patch_size;
        let (mh, mw) = (SPATIAL * ph, SPATIAL * pw);
        if width == 0 || height == 0 || width % mw != 0 || height % mh != 0 {
            return Err(GpuError::invalid(
                "resolution",
                format!("{width}x{height}: Wan needs sides that are multiples of {mw}"),
            ));
        }
        if frames == 0 || (frames - 1) % TEMPORAL != 0 {
            return Err(GpuError::invalid(
                "frames",
                format!("{frames}: Wan generates 4n+1 frames"),
            ));
        }
        Ok(LatentGrid {
            frames: 1 + (frames - 1) / TEMPORAL,
            height: height / SPATIAL,
            width: width / SPATIAL,
            rope_scale: [1.0; 3],
        })
    }

    /// Tokens the transformer sees for a grid (after its 1x2x2 patches).
    pub fn tokens(&self, grid: &LatentGrid) -> usize {
        let [pt, ph, pw] = self.transformer.config.patch_size;
        grid.tokens() / (pt * ph * pw)
    }

    /// Seeded noise, the sampler, and for image-to-video the image's
    /// condition and CLIP tokens.
    pub fn prepare(&self, req: &GenerateRequest) -> Result<DenoiseState> {
        if !req.conditions.is_empty() || req.video_to_video.is_some() {
            return Err(GpuError::invalid(
                "conditions",
                format!("{} takes a prompt and, for image-to-video, one image: keyframes and video-to-video are LTX-Video features", self.name),
            ));
        }
        if !(req.guidance_scale.is_finite() && req.guidance_scale >= 0.0) {
            return Err(GpuError::invalid(
                "guidance_scale",
                format!("{} must be a finite number >= 0", req.guidance_scale),
            ));
        }
        let grid = self.latent_grid(req.width, req.height, req.num_frames)?;
        let (condition, image_tokens) = match (&req.image, self.image_to_video()) {
            (Some(img), true) => {
                let (cond, tokens) = self.image_inputs(img, req)?;
                (Some(cond), Some(tokens))
            }
            (None, false) => (None, None),
            (Some(_), false) => {
                return Err(GpuError::invalid(
                    "image",
                    format!("{} is a text-to-video model: it takes no image", self.name),
                ))
            }
            (None, true) => {
                return Err(GpuError::invalid(
                    "image",
                    format!(
                        "{} is an image-to-video model: the job needs an image",
                        self.name
                    ),
                ))
            }
        };
        let sampler = UniPc::new(&self.sampler, req.steps, self.sampler.flow_shift)?;
        let schedule = Schedule {
            timesteps: sampler
                .schedule
                .timesteps
                .iter()
                .map(|&t| t as f32)
                .collect(),
            sigmas: sampler.schedule.sigmas.clone(),
        };
        let z = self.vae.config.z_dim;
        let shape = [1, z, grid.frames, grid.height, grid.width];
        let latents = NoiseRng::stream(req.seed, STREAM_LATENTS).randn(&shape, &self.device)?;
        Ok(DenoiseState {
            latents,
            grid,
            schedule,
            step: 0,
            frozen_tokens: 0,
            guidance_scale: req.guidance_scale,
            cond: None,
            seed: req.seed,
            wan: Some(Box::new(WanState {
                sampler,
                condition,
                image_tokens,
            })),
            lora: req.lora.clone(),
        })
    }

    /// The image-to-video inputs of `img` (already at the video's size).
    fn image_inputs(&self, img: &RgbImage, req: &GenerateRequest) -> Result<(Tensor, Tensor)> {
        let clip = self.clip.as_ref().ok_or_else(|| {
            GpuError::config(
                &self.name,
                "an image-to-video model needs its image encoder",
            )
        })?;
        if (img.width, img.height) != (req.width, req.height)
            || img.data.len() != img.width * img.height * 3
        {
            return Err(GpuError::invalid(
                "image",
                format!(
                    "is {}x{} ({} bytes), the video is {}x{}: convert it to the video's size",
                    img.width,
                    img.height,
                    img.data.len(),
                    req.width,
                    req.height
                ),
            ));
        }
        let pixels = Tensor::from_vec(img.data.clone(), (img.height, img.width, 3), &self.device)?
            .to_dtype(DType::F32)?
            .affine(1.0 / 255.0, 0.0)?
            .permute((2, 0, 1))?
            .contiguous()?;
        let cond = image_condition(&self.vae, &pixels, req.num_frames)?;
        let size = clip.config.image_size;
        let clip_in = clip_pixels(img, size, &self.device)?;
        let tokens = super::pipeline::image_tokens(clip, &clip_in)?;
        Ok((cond, tokens))
    }

    /// Guided velocities of several jobs in one transformer forward. Jobs
    /// must share the latent grid and be of this model's kind (all with an
    /// image, or none).
    pub fn velocity_batched(&self, jobs: &[(&DenoiseState, &WanText)]) -> Result<Vec<Tensor>> {
        let Some((first, _)) = jobs.first() else {
            return Ok(Vec::new());
        };
        let mut xs = Vec::new();
        let mut ts = Vec::new();
        let mut texts = Vec::new();
        let mut images = Vec::new();
        let mut rows = Vec::new();
        let mut adapters = Vec::new();
        for (st, text) in jobs {
            if !st.same_positions(first) {
                return Err(GpuError::invalid(
                    "batch",
                    "jobs in one batch must share the latent grid",
                ));
            }
            let w = wan_state(st)?;
            let t = st.current_timestep()?;
            let b = st.cfg_rows(text.batch())?;
            let x = match &w.condition {
                Some(c) => Tensor::cat(&[&st.latents, c], 1)?,
                None => st.latents.clone(),
            };
            for r in 0..b {
                adapters.push(st.lora.clone());
                xs.push(x.clone());
                ts.push(t);
                texts.push(text.rows.narrow(0, r, 1)?);
                if let Some(i) = &w.image_tokens {
                    images.push(i.clone());
                }
            }
            rows.push(b);
        }
        let n: usize = rows.iter().sum();
        if !images.is_empty() && images.len() != n {
            return Err(GpuError::invalid(
                "batch",
                "image-to-video and text-to-video jobs cannot share a batch",
            ));
        }
        let x = Tensor::cat(&xs, 0)?;
        let ts = Tensor::from_vec(ts, n, &self.device)?;
        let text = Tensor::cat(&texts, 0)?;
        let image = if images.is_empty() {
            None
        } else {
            Some(Tensor::cat(&images, 0)?)
        };
        let v = crate::lora::scoped(adapters, || {
            self.transformer.forward(&x, &ts, &text, image.as_ref())
        })?
        .to_dtype(DType::F32)?;
        let guidance: Vec<f64> = jobs.iter().map(|(st, _)| st.guidance_scale).collect();
        crate::pipeline::step::guided(&v, &guidance, &rows)
    }

    /// One UniPC step of one job with its guided velocity.
    pub fn apply_velocity(&self, st: &mut DenoiseState, v: &Tensor) -> Result<()> {
        let latents = st.latents.clone();
        let w = st
            .wan
            .as_mut()
            .ok_or_else(|| GpuError::invalid("state", "not a Wan job's state"))?;
        st.latents = w.sampler.step(v, &latents)?;
        st.step += 1;
        Ok(())
    }

    /// Denoised latents to RGB8 frames: de-normalised with the VAE's
    /// per-channel statistics, decoded a latent frame at a time.
    pub fn decode_video(&self, st: &DenoiseState, req: &GenerateRequest) -> Result<Video> {
        let (mean, std) = self.vae.config.latent_stats(&self.device)?;
        let latents = st
            .latents
            .to_dtype(DType::F32)?
            .broadcast_mul(&std)?
            .broadcast_add(&mean)?;
        let (video, _) = self.vae.decode(&latents)?;
        Video::from_decoded(&video, req.fps, self.untrained)
    }
}

fn wan_state(st: &DenoiseState) -> Result<&WanState> {
    st.wan
        .as_deref()
        .ok_or_else(|| GpuError::invalid("state", "not a Wan job's state"))
}

/// CLIP's input for an RGB8 image: the shorter side scaled to `size`
/// (bilinear; the reference's processor is bicubic), the centre `size`
/// square, normalised with CLIP's statistics: `[1, 3, size, size]`.
fn clip_pixels(img: &RgbImage, size: usize, dev: &Device) -> Result<Tensor> {
    let (w, h) = (img.width, img.height);
    let scale = size as f32 / w.min(h) as f32;
    let (sw, sh) = (
        ((w as f32 * scale).round() as usize).max(size),
        ((h as f32 * scale).round() as usize).max(size),
    );
    let (ox, oy) = ((sw - size) / 2, (sh - size) / 2);
    let mut out = vec![0f32; 3 * size * size];
    let px = |x: usize, y: usize, c: usize| img.data[(y * w + x) * 3 + c] as f32 / 255.0;
    for y in 0..size {
        let fy = ((y + oy) as f32 + 0.5) / scale - 0.5;
        let y0 = fy.floor().clamp(0.0, (h - 1) as f32) as usize;
        let y1 = (y0 + 1).min(h - 1);
        let dy = (fy - y0 as f32).clamp(0.0, 1.0);
        for x in 0..size {
            let fx = ((x + ox) as f32 + 0.5) / scale - 0.5;
            let x0 = fx.floor().clamp(0.0, (w - 1) as f32) as usize;
            let x1 = (x0 + 1).min(w - 1);
            let dx = (fx - x0 as f32).clamp(0.0, 1.0);
            for c in 0..3 {
                let top = px(x0, y0, c) * (1.0 - dx) + px(x1, y0, c) * dx;
                let bot = px(x0, y1, c) * (1.0 - dx) + px(x1, y1, c) * dx;
                let v = top * (1.0 - dy) + bot * dy;
                out[(c * size + y) * size + x] = (v - CLIP_MEAN[c]) / CLIP_STD[c];
            }
        }
    }
    Ok(Tensor::from_vec(out, (1, 3, size, size), dev)?)
}
