//! Errors of job validation and of loading the admission configuration.

use std::path::PathBuf;

/// Why a job spec was rejected. Every variant names the field (or model) at
/// fault; `Display` is the message returned to the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// A value outside what is accepted. `value` is the offending value as
    /// sent (JSON-formatted, long values shortened); `reason` says what is
    /// allowed and, for sizes, the nearest valid values.
    #[error("invalid {field} = {value}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    /// A feature that is recognised but not implemented.
    #[error("{field}: {reason}")]
    Unsupported { field: String, reason: String },
    /// `model` is not in `configs/models.toml`.
    #[error("invalid model = {model:?}: unknown model (known: {})", known.join(", "))]
    UnknownModel { model: String, known: Vec<String> },
    /// The job's VRAM estimate exceeds what a worker holds.
    #[error(
        "job too large: {width}x{height}, {num_frames} frames on model {model:?} needs an \
         estimated {:.2} GiB of GPU memory, more than a worker's {:.2} GiB \
         (lower the resolution or duration)",
        gib(*needed_bytes),
        gib(*limit_bytes)
    )]
    TooLarge {
        needed_bytes: u64,
        limit_bytes: u64,
        model: String,
        width: u32,
        height: u32,
        num_frames: u32,
    },
    /// The job's frames would not fit the host memory budget: its video is
    /// held in host memory whole (decoded f32 frames, RGB8 frames, the
    /// crop) before MP4 encoding.
    #[error(
        "job too large for host memory: {width}x{height}, {num_frames} frames needs an \
         estimated {:.2} GiB of host memory for its frames, more than the budget \
         worker_host_bytes = {:.2} GiB (lower the resolution or duration)",
        gib(*needed_bytes),
        gib(*limit_bytes)
    )]
    HostMemory {
        needed_bytes: u64,
        limit_bytes: u64,
        width: u32,
        height: u32,
        num_frames: u32,
    },
}

impl JobError {
    /// The spec field the error is about (`"model"` for an unknown model,
    /// `"resolution"` for a job too large).
    pub fn field(&self) -> &str {
        match self {
            JobError::Invalid { field, .. } | JobError::Unsupported { field, .. } => field,
            JobError::UnknownModel { .. } => "model",
            JobError::TooLarge { .. } | JobError::HostMemory { .. } => "resolution",
        }
    }

    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        JobError::Invalid {
            field: field.into(),
            value: display_value(&value.to_string()),
            reason: reason.into(),
        }
    }
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// Shortens long values (prompts, base64) for error messages.
pub(crate) fn display_value(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}... ({} bytes)", s.len())
    }
}

/// Why `configs/` could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("model {id:?} ({path}): {source}")]
    Model {
        id: String,
        path: String,
        #[source]
        source: Box<vidflow_gpu::GpuError>,
    },
}
