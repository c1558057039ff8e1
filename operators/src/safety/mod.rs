//! Safety scoring (issue 7, in progress): learned prompt scorers that run
//! in Rust on model files fetched by `scripts/setup-models.sh`. Not wired
//! into admission yet.

pub mod profanity;

/// Why a safety model could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SafetyError {
    #[error("safety model {path}: {msg} (run `bash scripts/setup-models.sh`)")]
    Model { path: String, msg: String },
}
