//! The stages of a job as plain functions over typed values, one file per
//! stage, in the order a job meets them:
//!
//! | stage | file | function |
//! | --- | --- | --- |
//! | admission | [`admit`] | [`admit::admit`]: spec → [`ValidatedJob`] (the one validation); [`admit::prepare`]: → [`AdmittedJob`] (runtime request, i2v frame fetched) |
//! | prompt safety | [`prompt_safety`] | [`prompt_safety::check_prompt`] |
//! | prompt encoding | [`encode`] | [`encode::encode`] (with a [`encode::TextCache`]) |
//! | denoising | [`denoise`] | [`denoise::Batcher`]: which jobs step together, each job's share, ETAs, cancels, checkpoints |
//! | VAE decode | [`decode`] | [`decode::decode`] |
//! | frame safety | [`frame_safety`] | [`frame_safety::check_frames`] |
//! | output | [`output`] | [`output::output`]: MP4 → object store → [`JobResult`] |
//! | metering and ledger | `vidflow_job::ledger` | [`ledger::JobRecord::commit`] |
//!
//! None of them knows about timely, a broker or threads: `vidflow-dataflow`
//! decides where each runs. The job model they work on (spec, validation,
//! events, results, ledger, pricing, quotas) is the `vidflow-job` crate in
//! `operators/job/`, re-exported here.

pub use vidflow_job::*;

pub mod admit;
pub mod chain;
pub mod checkpoint;
pub mod context;
pub mod cost;
pub mod decode;
pub mod denoise;
pub mod encode;
pub mod error;
pub mod events;
pub mod faults;
pub mod flow;
pub mod frame_safety;
pub mod inputs;
pub mod output;
pub mod prompt_safety;
pub mod safety_record;
#[cfg(test)]
mod testkit;

pub use context::{Models, StageCtx};
pub use error::StageError;
pub use events::EventSink;
pub use flow::{AdmittedJob, DecodedJob, DenoisedJob, EncodedJob, Msg};
