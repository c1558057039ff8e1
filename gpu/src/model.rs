//! A served model of either family behind the operations the serving
//! stages take: encode a prompt, prepare a job's state, one batched guided
//! velocity, one sampler step, decode. The stages hold a [`Model`] and never
//! name a family; what differs (LTX's packed tokens and Euler steps, Wan's
//! unpacked latents and UniPC history) stays inside each pipeline and its
//! [`DenoiseState`].

use candle_core::Tensor;

use crate::error::{GpuError, Result};
use crate::pipeline::{DenoiseState, GenerateRequest, LtxPipeline, PromptEmbeds, Video};
use crate::transformer::TextCond;
use crate::wan::serve::{WanPipeline, WanText};

/// The model families the runtime serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Ltx,
    Wan,
}

/// A loaded model.
pub enum Model {
    Ltx(LtxPipeline),
    Wan(WanPipeline),
}

/// A job's text conditioning, in its model's form.
pub enum Conditioning {
    Ltx(TextCond),
    Wan(WanText),
}

impl From<LtxPipeline> for Model {
    fn from(p: LtxPipeline) -> Self {
        Model::Ltx(p)
    }
}

impl From<WanPipeline> for Model {
    fn from(p: WanPipeline) -> Self {
        Model::Wan(p)
    }
}

fn mismatch() -> GpuError {
    GpuError::invalid("text", "conditioning from another model family")
}

impl Model {
    pub fn family(&self) -> Family {
        match self {
            Model::Ltx(_) => Family::Ltx,
            Model::Wan(_) => Family::Wan,
        }
    }

    /// The LTX pipeline, for what only LTX-Video does (chained segments
    /// conditioned on the previous one's frames).
    pub fn as_ltx(&self) -> Option<&LtxPipeline> {
        match self {
            Model::Ltx(p) => Some(p),
            Model::Wan(_) => None,
        }
    }

    pub fn untrained(&self) -> bool {
        match self {
            Model::Ltx(p) => p.untrained,
            Model::Wan(p) => p.untrained,
        }
    }

    /// The transformer's linear layers an adapter may target.
    pub fn lora_targets(&self) -> &crate::lora::Targets {
        match self {
            Model::Ltx(p) => &p.lora_targets,
            Model::Wan(p) => &p.lora_targets,
        }
    }

    /// Reads a safetensors LoRA adapter and fits it to this model (see
    /// [`crate::lora::Adapter::from_safetensors`]).
    pub fn load_adapter(&self, name: &str, bytes: &[u8]) -> Result<crate::lora::Adapter> {
        let device = match self {
            Model::Ltx(p) => &p.device,
            Model::Wan(p) => &p.device,
        };
        crate::lora::Adapter::from_safetensors(
            name,
            bytes,
            self.lora_targets(),
            device,
            candle_core::DType::F32,
        )
    }

    pub fn name(&self) -> &str {
        match self {
            Model::Ltx(p) => &p.name,
            Model::Wan(p) => &p.name,
        }
    }

    /// Frames per latent frame after the first (8 for LTX, 4 for Wan).
    pub fn temporal_compression(&self) -> usize {
        match self {
            Model::Ltx(p) => p.temporal_compression(),
            Model::Wan(_) => crate::wan::serve::TEMPORAL,
        }
    }

    /// Tokens one transformer pass sees for the job's latents.
    pub fn tokens(&self, st: &DenoiseState) -> usize {
        match self {
            Model::Ltx(_) => st.grid.tokens(),
            Model::Wan(p) => p.tokens(&st.grid),
        }
    }

    pub fn encode_prompt(&self, prompt: &[u8]) -> Result<PromptEmbeds> {
        match self {
            Model::Ltx(p) => p.encode_prompt(prompt),
            Model::Wan(p) => p.encode_prompt(prompt),
        }
    }

    pub fn text_condition(
        &self,
        pos: &PromptEmbeds,
        neg: Option<&PromptEmbeds>,
        guidance: f64,
    ) -> Result<Conditioning> {
        Ok(match self {
            Model::Ltx(p) => Conditioning::Ltx(p.text_condition(pos, neg, guidance)?),
            Model::Wan(p) => Conditioning::Wan(p.text_condition(pos, neg, guidance)?),
        })
    }

    pub fn prepare(&self, req: &GenerateRequest) -> Result<DenoiseState> {
        match self {
            Model::Ltx(p) => p.prepare(req),
            Model::Wan(p) => p.prepare(req),
        }
    }

    /// Guided velocities of several jobs in one transformer forward.
    pub fn velocity_batched(&self, jobs: &[(&DenoiseState, &Conditioning)]) -> Result<Vec<Tensor>> {
        match self {
            Model::Ltx(p) => {
                let pairs = jobs
                    .iter()
                    .map(|(s, c)| match c {
                        Conditioning::Ltx(t) => Ok((*s, t)),
                        Conditioning::Wan(_) => Err(mismatch()),
                    })
                    .collect::<Result<Vec<_>>>()?;
                p.velocity_batched(&pairs)
            }
            Model::Wan(p) => {
                let pairs = jobs
                    .iter()
                    .map(|(s, c)| match c {
                        Conditioning::Wan(t) => Ok((*s, t)),
                        Conditioning::Ltx(_) => Err(mismatch()),
                    })
                    .collect::<Result<Vec<_>>>()?;
                p.velocity_batched(&pairs)
            }
        }
    }

    /// One sampler step of one job with its guided velocity.
    pub fn apply_velocity(&self, st: &mut DenoiseState, v: &Tensor) -> Result<()> {
        match self {
            Model::Ltx(p) => p.apply_velocity(st, v),
            Model::Wan(p) => p.apply_velocity(st, v),
        }
    }

    /// One whole step of one job (what the batched path does for a batch
    /// of one).
    pub fn step(&self, st: &mut DenoiseState, text: &Conditioning) -> Result<()> {
        let v = self.velocity_batched(&[(st, text)])?.remove(0);
        self.apply_velocity(st, &v)
    }

    pub fn decode_video(&self, st: &DenoiseState, req: &GenerateRequest) -> Result<Video> {
        match self {
            Model::Ltx(p) => p.decode_video(st, req),
            Model::Wan(p) => p.decode_video(st, req),
        }
    }
}
