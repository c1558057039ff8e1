//! The LTX-Video sampling loop: prompt encoding, seeded initial latents,
//! flow-matching Euler steps with classifier-free guidance, image-to-video
//! conditioning, VAE decode and post-processing to RGB frames.
//!
//! The loop is split into `prepare` / `denoise_steps` / `decode` so the
//! dataflow can batch steps across jobs and resume from checkpoints; the
//! one-call `generate` composes them.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{GpuError, Result};
use crate::rng::{NoiseRng, STREAM_DECODE, STREAM_LATENTS};
use crate::scheduler::{Schedule, SchedulerConfig};
use crate::t5::{T5Config, T5Encoder};
use crate::tokenizer::PromptTokenizer;
use crate::transformer::{LatentGrid, LtxTransformer, TextCond, TransformerConfig};
use crate::vae::{LtxVae, VaeConfig};
use crate::weights::{read_config, Weights};

pub mod chain;
pub mod condition;
mod conditioned;
mod frames;
mod memory;
pub(crate) mod step;

pub use conditioned::{ConditionInput, RgbFrames, VideoToVideo, IMAGE_COND_NOISE_SCALE};
pub use frames::{pack_latents, postprocess, to_rgb8, unpack_latents};

/// T5 sequence length the LTX pipeline pads/truncates prompts to.
pub const DEFAULT_MAX_TEXT_LEN: usize = 128;

/// Tokenizer + T5 encoder.
pub struct TextEncoder {
    pub tokenizer: PromptTokenizer,
    pub encoder: T5Encoder,
    pub max_len: usize,
}

/// Encoded prompt: `embeds` `[1,L,C]` and `mask` `[1,L]` (1 keep, 0 pad).
#[derive(Clone)]
pub struct PromptEmbeds {
    pub embeds: Tensor,
    pub mask: Tensor,
}

/// A whole LTX-Video model.
pub struct LtxPipeline {
    pub transformer: LtxTransformer,
    pub vae: LtxVae,
    pub text: TextEncoder,
    pub scheduler: SchedulerConfig,
    /// True for the built-in seeded model: its output is noise-like and must
    /// be labelled as coming from an untrained model wherever it is shown.
    pub untrained: bool,
    pub name: String,
    pub device: Device,
    /// Working-set budget of the VAE decode: a clip whose estimated decode
    /// exceeds it is decoded in tiles (`vae::DecodeTiling::plan`).
    pub decode_budget_bytes: u64,
    /// The transformer's linear layers, for fitting LoRA adapters.
    pub lora_targets: std::sync::Arc<crate::lora::Targets>,
}

/// An RGB8 image for image-to-video conditioning, row-major, no padding.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Raw prompt bytes; must be UTF-8 (checked, with the offending offset).
    pub prompt: Vec<u8>,
    pub negative_prompt: Vec<u8>,
    pub width: usize,
    pub height: usize,
    pub num_frames: usize,
    pub fps: f64,
    pub steps: usize,
    pub guidance_scale: f64,
    pub seed: u64,
    /// First frame for image-to-video (must be `width` x `height`).
    pub image: Option<RgbImage>,
    /// Decoder timestep for 0.9.1-style VAEs (ignored by 0.9.0 VAEs).
    pub decode_timestep: f64,
    /// Noise mixed into latents before a timestep-conditioned decode;
    /// defaults to `decode_timestep`, as the reference does.
    pub decode_noise_scale: Option<f64>,
    /// Images or videos at chosen frames (keyframes, extension): the
    /// conditioning pipeline's path (`conditioned.rs`).
    pub conditions: Vec<ConditionInput>,
    /// A source video re-generated from part-way down the schedule.
    pub video_to_video: Option<VideoToVideo>,
    /// Re-noising of strength-1 conditions each step (see
    /// [`IMAGE_COND_NOISE_SCALE`]); 0 holds them exactly.
    pub image_cond_noise_scale: f64,
    /// A LoRA adapter the job applies (fitted to this model).
    pub lora: Option<crate::lora::Applied>,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        GenerateRequest {
            prompt: Vec::new(),
            negative_prompt: Vec::new(),
            width: 704,
            height: 512,
            num_frames: 121,
            fps: 25.0,
            steps: 50,
            guidance_scale: 3.0,
            seed: 0,
            image: None,
            decode_timestep: 0.05,
            decode_noise_scale: None,
            conditions: Vec::new(),
            video_to_video: None,
            image_cond_noise_scale: IMAGE_COND_NOISE_SCALE,
            lora: None,
        }
    }
}

/// Progress reported after each denoising step.
pub struct StepInfo<'a> {
    /// Steps completed so far (1..=total).
    pub step: usize,
    pub total: usize,
    /// The sigma the latents are now at.
    pub sigma: f32,
    /// Packed latents `[1,S,C]` after this step (for checkpoints).
    pub latents: &'a Tensor,
}

/// Returned by the step callback: keep going or stop (cancellation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Decoded frames, RGB8, `frames` x `height` x `width` x 3.
#[derive(Debug, Clone)]
pub struct Video {
    pub width: usize,
    pub height: usize,
    pub frames: usize,
    pub fps: f64,
    pub rgb: Vec<u8>,
    /// Copied from the pipeline: the output of an untrained model.
    pub untrained: bool,
}

impl Video {
    /// A VAE's output `[1, 3, F, H, W]` in [-1, 1] as RGB8 frames.
    pub fn from_decoded(video: &Tensor, fps: f64, untrained: bool) -> Result<Video> {
        let frames = postprocess(video)?; // [1,F,3,H,W]
        let (_, f, _, h, w) = frames.dims5()?;
        Ok(Video {
            width: w,
            height: h,
            frames: f,
            fps,
            rgb: to_rgb8(&frames)?,
            untrained,
        })
    }
}

/// A job's latent state between steps: everything needed to continue.
#[derive(Clone)]
pub struct DenoiseState {
    pub latents: Tensor,
    pub grid: LatentGrid,
    pub schedule: Schedule,
    /// Steps already taken.
    pub step: usize,
    /// Leading tokens held clean (image-to-video frame 0), else 0.
    pub frozen_tokens: usize,
    pub guidance_scale: f64,
    /// Per-token conditioning of a conditioned job (keyframes, extension,
    /// video-to-video); `None` for text- and image-to-video.
    pub cond: Option<Box<condition::TokenConditioning>>,
    /// The job's seed: a conditioned job draws each step's noise from it.
    pub seed: u64,
    /// A Wan job's sampler history and image-to-video inputs (its latents
    /// stay `[1, z, F, h, w]`, unpacked); `None` for LTX jobs.
    pub wan: Option<Box<crate::wan::state::WanState>>,
    /// The LoRA adapter the job applies (its request names it; not part of
    /// a checkpoint's snapshot, whose request hash covers it).
    pub lora: Option<crate::lora::Applied>,
}

impl DenoiseState {
    /// Whether two jobs' tokens sit at the same RoPE positions (a batched
    /// forward shares one table): the same grid and fps, and for
    /// conditioned jobs the same coordinates.
    pub fn same_positions(&self, other: &DenoiseState) -> bool {
        let (a, b) = (&self.grid, &other.grid);
        if (a.frames, a.height, a.width) != (b.frames, b.height, b.width)
            || a.rope_scale != b.rope_scale
        {
            return false;
        }
        if self.wan.is_some() != other.wan.is_some() {
            return false;
        }
        match (&self.cond, &other.cond) {
            (None, None) => true,
            (Some(x), Some(y)) => x.coords == y.coords,
            _ => false,
        }
    }

    /// A hash of the RoPE positions beyond the grid (0 for a plain grid):
    /// part of the dataflow's batch key.
    pub fn positions_key(&self) -> u64 {
        self.cond.as_ref().map_or(0, |c| c.coords.key() | 1)
    }

    /// What a checkpoint stores to resume this state exactly: the latents,
    /// and for a Wan job its sampler's history stacked after them.
    pub fn snapshot(&self) -> Result<Tensor> {
        match &self.wan {
            None => Ok(self.latents.clone()),
            Some(w) => crate::wan::state::snapshot(&self.latents, w),
        }
    }

    /// The dims of [`Self::snapshot`] (what a stored checkpoint must have).
    pub fn snapshot_dims(&self) -> Vec<usize> {
        match &self.wan {
            None => self.latents.dims().to_vec(),
            Some(_) => crate::wan::state::snapshot_dims(self.latents.dims()),
        }
    }

    /// Puts a snapshot taken after `step` steps back into this freshly
    /// prepared state.
    pub fn restore(&mut self, step: usize, snapshot: &Tensor) -> Result<()> {
        if snapshot.dims() != self.snapshot_dims().as_slice() {
            return Err(GpuError::invalid(
                "checkpoint",
                format!(
                    "holds {:?}, the job's state is {:?}",
                    snapshot.dims(),
                    self.snapshot_dims()
                ),
            ));
        }
        self.latents = match &mut self.wan {
            None => snapshot.clone(),
            Some(w) => crate::wan::state::restore(w, step, snapshot)?,
        };
        self.step = step;
        Ok(())
    }
}

impl LtxPipeline {
    /// Loads a diffusers-format checkpoint directory (`transformer/`, `vae/`,
    /// `text_encoder/`, `tokenizer/`, `scheduler/`).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_dir_on(dir, &Device::Cpu, DType::F32)
    }

    /// [`Self::from_dir`] with the weights in `dtype` on `device` (bf16 on a
    /// GPU; latents, timesteps and the scheduler stay f32 either way).
    pub fn from_dir_on(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let device = device.clone();
        let sub = |n: &str| dir.join(n);
        let load = |n: &str| -> Result<Weights> {
            Ok(Weights::from_dir(&sub(n))?
                .with_dtype(dtype)
                .with_device(device.clone()))
        };
        let tcfg: TransformerConfig = read_config(&sub("transformer").join("config.json"))?;
        let tw = load("transformer")?;
        let transformer = LtxTransformer::load(&tw, &tcfg)?;
        let vcfg: VaeConfig = read_config(&sub("vae").join("config.json"))?;
        let vae = LtxVae::load(&load("vae")?, &vcfg)?;
        let ecfg: T5Config = read_config(&sub("text_encoder").join("config.json"))?;
        let encoder = T5Encoder::load(&load("text_encoder")?, &ecfg)?;
        let tokenizer = PromptTokenizer::from_dir(&sub("tokenizer"))?;
        let sched_path = sub("scheduler").join("scheduler_config.json");
        let scheduler = if sched_path.exists() {
            read_config(&sched_path)?
        } else {
            SchedulerConfig::default()
        };
        // Exported copies of the built-in tiny model say so in their index,
        // so their output keeps its "untrained" label.
        let untrained = index_says_untrained(dir);
        let p = LtxPipeline {
            transformer,
            vae,
            text: TextEncoder {
                tokenizer,
                encoder,
                max_len: DEFAULT_MAX_TEXT_LEN,
            },
            scheduler,
            untrained,
            name: dir.display().to_string(),
            device,
            decode_budget_bytes: crate::vae::DEFAULT_DECODE_BUDGET_BYTES,
            lora_targets: std::sync::Arc::new(tw.linears()),
        };
        p.check_compatible()?;
        Ok(p)
    }

    /// Cross-component shape agreement (a mixed-up checkpoint fails here).
    pub fn check_compatible(&self) -> Result<()> {
        let t = &self.transformer.config;
        let d = self.text.encoder.config.d_model;
        if t.caption_channels != d {
            return Err(GpuError::config(
                "pipeline",
                format!(
                    "transformer caption_channels {} != text encoder d_model {d}",
                    t.caption_channels
                ),
            ));
        }
        let c = self.vae.latent_channels();
        if t.in_channels != c || t.out_channels != c {
            return Err(GpuError::config(
                "pipeline",
                format!(
                    "transformer in/out channels {}/{} != VAE latent channels {c}",
                    t.in_channels, t.out_channels
                ),
            ));
        }
        Ok(())
    }

    pub fn spatial_compression(&self) -> usize {
        self.vae.config.spatial_compression()
    }

    pub fn temporal_compression(&self) -> usize {
        self.vae.config.temporal_compression()
    }

    /// Tokenises and encodes one prompt (raw bytes, validated as UTF-8).
    pub fn encode_prompt(&self, prompt: &[u8]) -> Result<PromptEmbeds> {
        let toks = self.text.tokenizer.encode(prompt, self.text.max_len)?;
        let n = toks.ids.len();
        let ids = Tensor::from_vec(toks.ids, (1, n), &self.device)?;
        let mask: Vec<f32> = toks.mask.iter().map(|m| *m as f32).collect();
        let embeds = self.text.encoder.forward(&ids)?;
        Ok(PromptEmbeds {
            embeds,
            mask: Tensor::from_vec(mask, (1, n), &self.device)?,
        })
    }

    /// Validates sizes against the model's compression and returns the grid.
    pub fn latent_grid(
        &self,
        width: usize,
        height: usize,
        frames: usize,
        fps: f64,
    ) -> Result<LatentGrid> {
        let s = self.spatial_compression();
        let t = self.temporal_compression();
        let nearest = |v: usize, m: usize| {
            let lo = (v / m).max(1) * m;
            if lo == v {
                format!("{v}")
            } else {
                format!("{lo} or {}", lo + m)
            }
        };
        if width == 0 || !width.is_multiple_of(s) {
            return Err(GpuError::invalid(
                "width",
                format!(
                    "{width} must be a positive multiple of {s} (nearest: {})",
                    nearest(width, s)
                ),
            ));
        }
        if height == 0 || !height.is_multiple_of(s) {
            return Err(GpuError::invalid(
                "height",
                format!(
                    "{height} must be a positive multiple of {s} (nearest: {})",
                    nearest(height, s)
                ),
            ));
        }
        if frames == 0 || !(frames - 1).is_multiple_of(t) {
            let lo = frames.saturating_sub(1) / t * t + 1;
            return Err(GpuError::invalid(
                "num_frames",
                format!(
                    "{frames} must be {t}*n+1 (1, {}, {}, ...; nearest: {lo} or {})",
                    t + 1,
                    2 * t + 1,
                    lo + t
                ),
            ));
        }
        if !(fps.is_finite() && fps > 0.0) {
            return Err(GpuError::invalid(
                "fps",
                format!("{fps} must be a positive number"),
            ));
        }
        Ok(LatentGrid {
            frames: (frames - 1) / t + 1,
            height: height / s,
            width: width / s,
            rope_scale: [t as f64 / fps, s as f64, s as f64],
        })
    }

    /// Seeded initial state (noise; for image-to-video the encoded image at
    /// latent frame 0).
    pub fn prepare(&self, req: &GenerateRequest) -> Result<DenoiseState> {
        let grid = self.latent_grid(req.width, req.height, req.num_frames, req.fps)?;
        if !(req.guidance_scale.is_finite() && req.guidance_scale >= 0.0) {
            return Err(GpuError::invalid(
                "guidance_scale",
                format!("{} must be a finite number >= 0", req.guidance_scale),
            ));
        }
        self.check_memory(req)?;
        if req.is_conditioned() {
            return self.prepare_conditioned(req, grid);
        }
        let schedule = self.scheduler.schedule(grid.tokens(), req.steps)?;
        let c = self.transformer.config.in_channels;
        let shape = [1, c, grid.frames, grid.height, grid.width];
        let noise = NoiseRng::stream(req.seed, STREAM_LATENTS).randn(&shape, &self.device)?;
        let mut latents = pack_latents(&noise)?;
        let mut frozen = 0;
        if let Some(img) = &req.image {
            let z0 = self.encode_image(img, req.width, req.height)?; // [1,C,1,h,w]
            let hw = grid.height * grid.width;
            let rest = latents.narrow(1, hw, latents.dim(1)? - hw)?;
            latents = Tensor::cat(&[pack_latents(&z0)?, rest], 1)?;
            frozen = hw;
        }
        Ok(DenoiseState {
            latents,
            grid,
            schedule,
            step: 0,
            frozen_tokens: frozen,
            guidance_scale: req.guidance_scale,
            cond: None,
            seed: req.seed,
            wan: None,
            lora: req.lora.clone(),
        })
    }

    /// Encodes an RGB8 image into normalised latents `[1,C,1,h,w]` (the
    /// distribution's mean: deterministic, and the spread of a trained VAE's
    /// posterior is negligible at this point).
    pub fn encode_image(&self, img: &RgbImage, width: usize, height: usize) -> Result<Tensor> {
        let frame = RgbFrames {
            width: img.width,
            height: img.height,
            frames: 1,
            data: img.data.clone(),
        };
        let x = frame.to_pixels("image", width, height, &self.device)?;
        let (mean, _std) = self.vae.encode(&x)?;
        // Latents stay f32 whatever the VAE computes in (bf16 on a GPU).
        self.vae.normalize_latents(&mean.to_dtype(DType::F32)?)
    }

    /// Classifier-free guidance conditioning for one job: batch
    /// `[negative, positive]` when guidance applies, else `[positive]`.
    pub fn text_condition(
        &self,
        pos: &PromptEmbeds,
        neg: Option<&PromptEmbeds>,
        guidance: f64,
    ) -> Result<TextCond> {
        if guidance > 1.0 {
            let neg = neg.ok_or_else(|| {
                GpuError::invalid("negative_prompt", "needed when guidance_scale > 1")
            })?;
            let e = Tensor::cat(&[&neg.embeds, &pos.embeds], 0)?;
            let m = Tensor::cat(&[&neg.mask, &pos.mask], 0)?;
            self.transformer.prepare_text(&e, &m)
        } else {
            self.transformer.prepare_text(&pos.embeds, &pos.mask)
        }
    }

    /// Runs the remaining steps with a per-step callback (progress,
    /// checkpoints, cancellation).
    pub fn denoise(
        &self,
        st: &mut DenoiseState,
        text: &TextCond,
        on_step: &mut dyn FnMut(&StepInfo) -> Flow,
    ) -> Result<()> {
        let total = st.schedule.steps();
        while st.step < total {
            self.step(st, text)?;
            let info = StepInfo {
                step: st.step,
                total,
                sigma: st.schedule.sigmas[st.step],
                latents: &st.latents,
            };
            if on_step(&info) == Flow::Stop {
                return Err(GpuError::Cancelled { step: st.step });
            }
        }
        Ok(())
    }

    /// Unpacks, de-normalises and decodes latents to `[1,3,F,H,W]` in [-1,1].
    pub fn decode_latents(&self, st: &DenoiseState, req: &GenerateRequest) -> Result<Tensor> {
        let g = &st.grid;
        let z = unpack_latents(&st.video_latents()?, g.frames, g.height, g.width)?;
        let mut z = self.vae.denormalize_latents(&z)?;
        let timestep = if self.vae.config.timestep_conditioning {
            let s = req.decode_noise_scale.unwrap_or(req.decode_timestep);
            let noise = NoiseRng::stream(req.seed, STREAM_DECODE).randn(z.dims(), &self.device)?;
            z = ((z * (1.0 - s))? + (noise * s)?)?;
            Some(req.decode_timestep)
        } else {
            None
        };
        let act_bytes = if self.vae.dtype() == DType::F32 { 4 } else { 2 };
        let tiling = crate::vae::DecodeTiling::plan(
            &self.vae.config,
            (g.frames, g.height, g.width),
            act_bytes,
            self.decode_budget_bytes,
        );
        if !tiling.is_whole() {
            tracing::debug!(?tiling, "tiled VAE decode");
        }
        // Frames are post-processed in f32 (a bf16 decode rounds to 1/256).
        self.vae
            .decode_tiled(&z, timestep, tiling)?
            .to_dtype(DType::F32)
            .map_err(Into::into)
    }

    /// The whole text/image-to-video generation.
    pub fn generate(
        &self,
        req: &GenerateRequest,
        on_step: &mut dyn FnMut(&StepInfo) -> Flow,
    ) -> Result<Video> {
        let mut st = self.prepare(req)?;
        let pos = self
            .encode_prompt(&req.prompt)
            .map_err(rename_field("prompt"))?;
        let neg = if req.guidance_scale > 1.0 {
            Some(
                self.encode_prompt(&req.negative_prompt)
                    .map_err(rename_field("negative_prompt"))?,
            )
        } else {
            None
        };
        let text = self.text_condition(&pos, neg.as_ref(), req.guidance_scale)?;
        self.denoise(&mut st, &text, on_step)?;
        self.decode_video(&st, req)
    }

    /// Denoised latents to the finished clip: VAE decode, then RGB8 frames.
    pub fn decode_video(&self, st: &DenoiseState, req: &GenerateRequest) -> Result<Video> {
        let video = self.decode_latents(st, req)?;
        Video::from_decoded(&video, req.fps, self.untrained)
    }
}

/// Whether a checkpoint's `model_index.json` marks it as an exported
/// built-in (untrained) model.
pub(crate) fn index_says_untrained(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("model_index.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("_vidflow_untrained").and_then(|b| b.as_bool()))
        .unwrap_or(false)
}

/// Prompt errors come out of the tokenizer as `prompt`; the negative prompt
/// must be named as itself.
fn rename_field(field: &'static str) -> impl Fn(GpuError) -> GpuError {
    move |e| match e {
        GpuError::InvalidInput { msg, .. } => GpuError::InvalidInput {
            field: field.into(),
            msg,
        },
        other => other,
    }
}
