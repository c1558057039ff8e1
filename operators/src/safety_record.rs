//! The safety checkers of a process and the decisions they recorded. A
//! decision is written to the object store
//! (`safety/<tenant>/<job>/<stage>-<fingerprint>.json`) before the job may
//! go on, and a redelivered or resumed job reuses the recorded one, so a
//! crash between the check and the commit costs no second check. The
//! fingerprint binds a decision to what was decided: the policy version
//! and, for the prompt check, the prompt and negative prompt. A later run
//! with the same (tenant, job id) but another prompt (or after a policy
//! change) is checked afresh, never waved through on an old "allow".

use std::path::PathBuf;
use std::sync::Arc;

use object_store::path::Path;
use sha2::{Digest, Sha256};
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

    /// What a prompt decision is bound to.
    fn prompt_fingerprint(&self, prompt: &str, negative: &str) -> String {
        fingerprint(&[
            self.prompt.policy.version.as_bytes(),
            prompt.as_bytes(),
            negative.as_bytes(),
        ])
    }

    /// What a frame decision is bound to (the frames follow from the
    /// request the job id was admitted with; the policy may change).
    fn visual_fingerprint(&self) -> String {
        fingerprint(&[self.prompt.policy.version.as_bytes()])
    }

    fn key(meta: &JobMeta, stage: safety::Check, fp: &str) -> Result<Path, RecordError> {
        record_key(&meta.tenant, &meta.job_id, stage, fp)
    }

    /// The decision recorded for this job, stage and fingerprint, if any.
    /// An unreadable record is an error, never "absent": guessing could run
    /// a blocked job.
    fn recorded(
        &self,
        meta: &JobMeta,
        stage: safety::Check,
        fp: &str,
    ) -> Result<Option<Decision>, RecordError> {
        let key = Self::key(meta, stage, fp)?;
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

    fn record(&self, meta: &JobMeta, d: &Decision, fp: &str) -> Result<(), RecordError> {
        let key = Self::key(meta, d.stage, fp)?;
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
        negative_prompt: &str,
    ) -> Result<Decision, crate::StageError> {
        let fp = self.prompt_fingerprint(prompt, negative_prompt);
        if let Some(d) = self.recorded(meta, safety::Check::Prompt, &fp)? {
            return Ok(d);
        }
        let d = self
            .prompt
            .check_job(&meta.tenant, prompt, negative_prompt)?;
        self.record(meta, &d, &fp)?;
        Ok(d)
    }

    /// Where the prompt decision for this job and input is recorded.
    pub fn prompt_record_key(
        &self,
        tenant: &str,
        job_id: &str,
        prompt: &str,
        negative_prompt: &str,
    ) -> Result<Path, RecordError> {
        let fp = self.prompt_fingerprint(prompt, negative_prompt);
        record_key(tenant, job_id, safety::Check::Prompt, &fp)
    }

    /// Where the frame decision for this job is recorded.
    pub fn visual_record_key(&self, tenant: &str, job_id: &str) -> Result<Path, RecordError> {
        record_key(
            tenant,
            job_id,
            safety::Check::Visual,
            &self.visual_fingerprint(),
        )
    }

    /// Decides (or re-reads) and durably records the frame decision.
    pub fn decide_video(
        &self,
        meta: &JobMeta,
        v: &vidflow_gpu::pipeline::Video,
    ) -> Result<Decision, crate::StageError> {
        // Each segment of a chain is its own picture and its own decision.
        let fp = match &meta.chain {
            None => self.visual_fingerprint(),
            Some(c) => fingerprint(&[
                self.visual_fingerprint().as_bytes(),
                b"segment",
                &(c.segment as u64).to_le_bytes(),
            ]),
        };
        if let Some(d) = self.recorded(meta, safety::Check::Visual, &fp)? {
            return Ok(d);
        }
        let d = self
            .visual
            .check(&meta.tenant, v.width, v.height, v.frames, &v.rgb)?;
        self.record(meta, &d, &fp)?;
        Ok(d)
    }
}

fn record_key(
    tenant: &str,
    job_id: &str,
    stage: safety::Check,
    fp: &str,
) -> Result<Path, RecordError> {
    if !vidflow_job::id::is_safe_id(tenant) || !vidflow_job::id::is_safe_id(job_id) {
        return Err(RecordError::UnsafeId {
            tenant: tenant.to_string(),
            job_id: job_id.to_string(),
        });
    }
    Ok(Path::from(format!(
        "safety/{tenant}/{job_id}/{}-{fp}.json",
        stage.as_str()
    )))
}

/// 16 hex digits of SHA-256 over the parts, each length-prefixed (so
/// ("ab", "c") and ("a", "bc") differ).
fn fingerprint(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
