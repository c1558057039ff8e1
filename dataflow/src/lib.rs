//! The vidflow dataflow: the `timely` graph that runs the stages of
//! `vidflow-operators` (admission, prompt safety, prompt encoding,
//! step-batched denoising, decode, frame safety, MP4 output) with heavy
//! compute on executor threads, and the drivers that feed it: the bounded
//! runs (`run_jobs`, `backfill`) and the service (`serve`).
//!
//! | module | owns |
//! | --- | --- |
//! | [`run`] | [`run::start`], the one place timely starts; feeds, routing, cluster set-up |
//! | [`graph`] | the stage order ([`graph::pipeline`]) and the one exit of results ([`graph::Results`]) |
//! | [`engine`] | models, store, safety checkers and one executor per stage |
//! | [`offload`] | the operator that runs a stage off the worker thread |
//! | [`executors`] | the stage threads and the denoiser's thread |
//! | [`backfill`], [`serve`] | the drivers |

pub mod backfill;
pub mod engine;
pub mod executors;
pub mod graph;
pub mod offload;
pub mod run;
pub mod serve;

pub use backfill::{run_backfill, BackfillConfig, BackfillReport, ResultRow};
pub use engine::{Engine, EngineConfig};
pub use run::{
    cluster_config, read_hostfile, run_jobs, run_jobs_with, Intake, ResultHook, RunOptions,
};
pub use vidflow_operators::event::{JobEvent, Stage};
pub use vidflow_operators::{EventSink, JobResult};

/// Why an engine or a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum DataflowError {
    #[error(transparent)]
    Model(#[from] vidflow_operators::context::ModelLoadError),
    #[error("output store: {0}")]
    Store(#[from] vidflow_connectors::OutputError),
    /// timely reports its start-up failures (a cluster peer that cannot
    /// be reached, a bad configuration) as text only.
    #[error("timely: {0}")]
    Timely(String),
    #[error("safety: {0}")]
    Safety(#[from] vidflow_operators::safety::SafetyError),
}
