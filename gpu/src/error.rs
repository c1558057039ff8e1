//! Typed errors for the model runtime.
//!
//! Every error that can come from user-supplied data (weight files, configs,
//! prompts, generation parameters) names the file, tensor or field at fault so
//! an operator can fix the input without reading our code.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A weight file that cannot be parsed (truncated, bad header, bad index).
    #[error("weight file {path}: {msg}")]
    WeightFile { path: PathBuf, msg: String },
    #[error("missing tensor `{name}` in {source_desc}")]
    MissingTensor { name: String, source_desc: String },
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{name}` has unsupported dtype {dtype} (supported: F32, F16, BF16, I64)")]
    UnsupportedDtype { name: String, dtype: String },
    /// A config that is not valid JSON, or lacks a required key.
    #[error("config {source_desc}: {msg}")]
    Config { source_desc: String, msg: String },
    /// A generation parameter or input tensor outside what the model accepts.
    #[error("invalid `{field}`: {msg}")]
    InvalidInput { field: String, msg: String },
    #[error("tokenizer {source_desc}: {msg}")]
    Tokenizer { source_desc: String, msg: String },
    /// Generation stopped because the per-step callback asked for it.
    #[error("cancelled at step {step}")]
    Cancelled { step: usize },
    #[error("tensor backend: {0}")]
    Candle(#[from] candle_core::Error),
    /// A pinned model file (safety classifiers) that is not on disk; models
    /// are never fetched at run time, so the message says how to get them.
    #[error("model file {path} is missing: run `bash scripts/setup-models.sh`")]
    ModelMissing { path: PathBuf },
    /// A pinned model file whose bytes are not the release we validated.
    #[error(
        "model file {path} is corrupt: sha256 {found}, expected {expected}; \
         delete it and run `bash scripts/setup-models.sh`"
    )]
    ModelCorrupt {
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// A file of the shipped demo model that is not the one pinned in
    /// `demo/pins.rs` (edited, truncated, or retrained without re-pinning).
    #[error(
        "demo model file {path} is not the shipped one: sha256 {found}, expected {expected} \
         (after retraining, `python3 scripts/demo_model/pin.py` writes the new pins)"
    )]
    DemoPin {
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// Refused before any allocation: the job's estimated working set does
    /// not fit the device's free memory (a clear error instead of a CUDA
    /// out-of-memory crash half-way through a step).
    #[error(
        "not enough GPU memory for {what}: the estimate needs {needed_mib} MiB, \
         {free_mib} MiB of {total_mib} MiB are free (lower the resolution or frame count)"
    )]
    OutOfMemory {
        what: String,
        needed_mib: u64,
        free_mib: u64,
        total_mib: u64,
    },
    /// An ONNX model that our interpreter (`onnx/`) cannot load or run.
    #[error("onnx model {path}: {source}")]
    Onnx {
        path: PathBuf,
        #[source]
        source: crate::onnx::error::OnnxError,
    },
}

pub type Result<T> = std::result::Result<T, GpuError>;

impl GpuError {
    pub fn invalid(field: impl Into<String>, msg: impl Into<String>) -> Self {
        GpuError::InvalidInput {
            field: field.into(),
            msg: msg.into(),
        }
    }
    pub fn config(source_desc: impl Into<String>, msg: impl Into<String>) -> Self {
        GpuError::Config {
            source_desc: source_desc.into(),
            msg: msg.into(),
        }
    }
}
