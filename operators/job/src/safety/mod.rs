//! Safety decisions: a prompt check before any compute ([`prompt`]) and a
//! frame check after decode ([`visual`]). Both return a [`Decision`] that
//! the pipeline records durably (the prompt one before generation starts)
//! and writes to the `safety` Parquet table.

pub mod eval;
pub mod evasion;
pub mod head;
pub mod models;
pub mod policy;
pub mod profanity;
pub mod prompt;
pub mod text;
pub mod visual;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use policy::Policy;
pub use prompt::PromptChecker;
pub use visual::VisualChecker;

/// Why a safety check could not run.
#[derive(Debug, thiserror::Error)]
pub enum SafetyError {
    #[error("safety model {path}: {msg} (run `bash scripts/setup-models.sh`)")]
    Model { path: String, msg: String },
    #[error("safety policy {path}: {msg}")]
    Policy { path: String, msg: String },
    #[error("invalid {field}: {msg}")]
    Input { field: String, msg: String },
}

/// Which of the two safety checks made a decision: the prompt check
/// (before encoding) or the frame check (after decoding). Recorded as the
/// decision's `stage` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Prompt,
    Visual,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Prompt => "prompt",
            Check::Visual => "visual",
        }
    }
}

/// Which text of the job a prompt decision's block came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptText {
    Prompt,
    NegativePrompt,
}

/// One safety decision, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub stage: Check,
    pub allowed: bool,
    /// The blocking category (`sexual`, `real_person`, ...); none when allowed.
    pub category: Option<String>,
    /// What fired, for the tenant and the audit trail.
    pub reason: String,
    /// Every signal computed (`embedding.<category>`, `terms.<category>`,
    /// `profanity`, `nsfw.max`, ...).
    pub scores: BTreeMap<String, f64>,
    pub policy_version: String,
    pub model_versions: Vec<String>,
    pub latency_ms: f64,
    /// For a blocked prompt decision: the text that triggered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<PromptText>,
}

impl Decision {
    pub fn label(&self) -> &'static str {
        if self.allowed {
            "allow"
        } else {
            "block"
        }
    }
}
