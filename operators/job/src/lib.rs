//! The job model of vidflow: what a job is on every side of the pipeline.
//! [`JobSpec`] is what clients send (JSON via serde, protobuf via
//! [`proto`]); [`validate()`] turns it, with an [`AdmissionConfig`] loaded
//! from `configs/`, into a [`ValidatedJob`] the pipeline consumes, or a
//! [`JobError`] naming the field, the value and what is allowed. [`event`]
//! is what users see while it runs, [`result`] what the pipeline hands to
//! a commit, [`ledger`] what the commit makes durable (record, charge or
//! credit, analytics rows), priced by [`billing`] and bounded by [`quota`].
//! The stages themselves are in `vidflow-operators`, which uses this crate.

pub mod billing;
pub mod config;
pub mod error;
pub mod event;
pub mod id;
pub mod ledger;
pub mod limits;
pub mod media;
pub mod proto;
pub mod quota;
pub mod registry;
pub mod result;
pub mod safety;
pub mod source;
pub mod spec;
pub mod validate;

pub use config::{
    AdmissionConfig, Architecture, ChainConfig, ModeDefaults, ModelEntry, ModelProfile,
    ModesConfig, BUILTIN_TINY,
};
pub use error::{ConfigError, JobError};
pub use event::Stage;
pub use id::{default_seed, generate_job_id, job_id_timestamp_ms, JobKey};
pub use media::{JobMedia, MediaInput, MediaKind};
pub use result::{JobResult, JobStatus, UnknownStatus};
pub use spec::{ConditionSpec, ExtendSpec, ImageSource, JobKind, JobSpec, LoraSpec, Mode, Tier};
pub use validate::{
    decode_image, fit_frame, fit_rgb8, image_header, validate, ImageHeader, ImageInput,
    ValidatedJob, PRESETS,
};
