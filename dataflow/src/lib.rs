//! The vidflow dataflow: a `timely` graph whose operators are the stages of a
//! job's life (admission, prompt encoding, step-batched denoising, decode,
//! MP4 output, report), with heavy compute on executor threads.

pub mod backfill;
pub mod checkpoint;
pub mod denoise;
pub mod events;
pub mod faults;
pub mod graph;
pub mod offload;
pub mod safety;
pub mod serve;
pub mod stages;

pub use backfill::{run_backfill, BackfillConfig, BackfillReport, ResultRow};
pub use events::{EventSink, JobEvent, Stage};
pub use graph::{
    cluster_config, read_hostfile, run_jobs, run_jobs_with, Engine, EngineConfig, Intake,
    RunOptions,
};
pub use stages::JobResult;

#[derive(Debug, thiserror::Error)]
pub enum DataflowError {
    #[error("model `{id}`: {msg}")]
    Model { id: String, msg: String },
    #[error("output store: {0}")]
    Store(String),
    #[error("timely: {0}")]
    Timely(String),
    #[error("safety: {0}")]
    Safety(String),
}
