//! The safety checkers of a process and the decisions they recorded. A
//! decision is written to the object store
//! (`safety/<tenant>/<job>/<stage>.json`) before the job may go on, and a
//! redelivered or resumed job reuses the recorded one, so a policy edit
//! between two deliveries cannot flip an answer already given.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::path::Path;
use vidflow_connectors::store::OutputStore;
use vidflow_connectors::OutputError;
use vidflow_job::result::JobMeta;
use vidflow_job::safety::{self, Decision, PromptChecker, SafetyError, VisualChecker};

/// Where the policy and the model files are.
#[derive(Debug, Clone)]
pub struct SafetyConfig {
    pub policy: PathBuf,
    pub models_dir: PathBuf,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig {
            policy: PathBuf::from("configs/safety.toml"),
            models_dir: safety::models::default_dir(),
        }
    }
}

impl SafetyConfig {
    /// The policy and model cache of a checkout at `root` (tests and
    /// benches, whose working directory is a crate folder);
    /// `$VIDFLOW_MODEL_CACHE` still wins for the models.
    pub fn in_repo(root: &std::path::Path) -> SafetyConfig {
        SafetyConfig {
            policy: root.join("configs/safety.toml"),
            models_dir: std::env::var_os("VIDFLOW_MODEL_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join(".cache/models")),
        }
    }
}

/// A decision record that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("unsafe tenant or job id {tenant:?}/{job_id:?}")]
    UnsafeId { tenant: String, job_id: String },
    #[error("safety record {key} is corrupt: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("reading safety record {key}: {source}")]
    Read {
        key: String,
        #[source]
        source: OutputError,
    },
    #[error("recording the safety decision at {key}: {source}")]
    Write {
        key: String,
        #[source]
        source: OutputError,
    },
}

/// Both checkers and the store their decisions are recorded in.
pub struct Safety {
    pub prompt: PromptChecker,
    pub visual: VisualChecker,
    store: Arc<OutputStore>,
}

impl Safety {
    pub fn load(cfg: &SafetyConfig, store: Arc<OutputStore>) -> Result<Safety, SafetyError> {
        let prompt = safety::prompt::load(&cfg.policy, &cfg.models_dir)?;
        let visual = VisualChecker::load(&cfg.models_dir, &prompt.policy)?;
        Ok(Safety {
            prompt,
            visual,
            store,
        })
    }

    fn key(meta: &JobMeta, stage: safety::Check) -> Result<Path, RecordError> {
        if !vidflow_job::id::is_safe_id(&meta.tenant) || !vidflow_job::id::is_safe_id(&meta.job_id)
        {
            return Err(RecordError::UnsafeId {
                tenant: meta.tenant.clone(),
                job_id: meta.job_id.clone(),
            });
        }
        Ok(Path::from(format!(
            "safety/{}/{}/{}.json",
            meta.tenant,
            meta.job_id,
            stage.as_str()
        )))
    }

    /// The recorded decision for this job and stage, if any. An unreadable
    /// record is an error, never "absent": guessing could run a blocked job.
    pub fn recorded(
        &self,
        meta: &JobMeta,
        stage: safety::Check,
    ) -> Result<Option<Decision>, RecordError> {
        let key = Self::key(meta, stage)?;
        match self.store.get_blocking(&key) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| RecordError::Corrupt {
                    key: key.to_string(),
                    source,
                }),
            Err(e) if e.is_not_found() => Ok(None),
            Err(source) => Err(RecordError::Read {
                key: key.to_string(),
                source,
            }),
        }
    }

    fn record(&self, meta: &JobMeta, d: &Decision) -> Result<(), RecordError> {
        let key = Self::key(meta, d.stage)?;
        let body = serde_json::to_vec(d).map_err(|source| RecordError::Corrupt {
            key: key.to_string(),
            source,
        })?;
        self.store
            .put_atomic_blocking(&key, body)
            .map(|_| ())
            .map_err(|source| RecordError::Write {
                key: key.to_string(),
                source,
            })
    }

    /// Decides (or re-reads) and durably records the prompt decision.
    pub fn decide_prompt(
        &self,
        meta: &JobMeta,
        prompt: &str,
    ) -> Result<Decision, crate::StageError> {
        if let Some(d) = self.recorded(meta, safety::Check::Prompt)? {
            return Ok(d);
        }
        let d = self.prompt.check(&meta.tenant, prompt)?;
        self.record(meta, &d)?;
        Ok(d)
    }

    /// Decides (or re-reads) and durably records the frame decision.
    pub fn decide_video(
        &self,
        meta: &JobMeta,
        v: &vidflow_gpu::pipeline::Video,
    ) -> Result<Decision, crate::StageError> {
        if let Some(d) = self.recorded(meta, safety::Check::Visual)? {
            return Ok(d);
        }
        let d = self
            .visual
            .check(&meta.tenant, v.width, v.height, v.frames, &v.rgb)?;
        self.record(meta, &d)?;
        Ok(d)
    }
}
