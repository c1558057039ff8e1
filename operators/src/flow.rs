//! The values a job is between two stages. Each carries the job's
//! [`JobMeta`] (identity, timings, batch sizes, safety decisions); a stage
//! that cannot go on returns a [`Failure`] instead, which every later stage
//! passes through untouched.

use std::sync::Arc;

use vidflow_gpu::model::Conditioning;
use vidflow_gpu::pipeline::{DenoiseState, GenerateRequest, Video};
use vidflow_job::result::{Failure, JobMeta};

/// What travels between stages: the job, or why it stopped.
pub type Msg<T> = Result<T, Failure>;

/// Admitted: validated, with its runtime request (an i2v first frame
/// already decoded and fitted).
#[derive(Clone)]
pub struct AdmittedJob {
    pub meta: JobMeta,
    pub req: GenerateRequest,
}

/// Prompt encoded, initial (or resumed) latents prepared.
#[derive(Clone)]
pub struct EncodedJob {
    pub meta: JobMeta,
    pub req: GenerateRequest,
    pub state: DenoiseState,
    pub text: Arc<Conditioning>,
}

/// Every denoising step taken.
#[derive(Clone)]
pub struct DenoisedJob {
    pub meta: JobMeta,
    pub req: GenerateRequest,
    pub state: DenoiseState,
}

/// RGB frames.
#[derive(Clone)]
pub struct DecodedJob {
    pub meta: JobMeta,
    pub video: Arc<Video>,
}
