//! Stage logic of vidflow as plain, unit-testable Rust (no timely types).
//!
//! This issue: the job model. [`JobSpec`] is what clients send (JSON via
//! serde, protobuf via [`proto`]); [`validate()`] turns it, with an
//! [`AdmissionConfig`] loaded from `configs/`, into a [`ValidatedJob`] the
//! pipeline consumes, or a [`JobError`] naming the field, the value and what
//! is allowed.

pub mod billing;
pub mod config;
pub mod error;
pub mod event;
pub mod id;
pub mod proto;
pub mod quota;
pub mod safety;
pub mod spec;
pub mod validate;

pub use config::{AdmissionConfig, ModeDefaults, ModelProfile, ModesConfig, BUILTIN_TINY};
pub use error::{ConfigError, JobError};
pub use id::{default_seed, generate_job_id, job_id_timestamp_ms};
pub use spec::{ImageSource, JobKind, JobSpec, Mode, Tier};
pub use validate::{decode_image, validate, ImageInput, ValidatedJob, PRESETS};
