//! The two safety stages of the graph. The prompt decision is written to
//! the object store (`safety/<tenant>/<job>/prompt.json`) before the job
//! may go on to encoding: no job is generated without a recorded decision,
//! and a redelivered or resumed job reuses the recorded one, so a policy
//! edit between two deliveries cannot flip an answer already given. The
//! frame decision is recorded the same way before the output is stored;
//! a blocked video never reaches the store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use vidflow_connectors::store::OutputStore;
use vidflow_operators::safety::{self, Decision, PromptChecker, VisualChecker};

use crate::events::Stage;
use crate::stages::{secs, AdmittedJob, DecodedJob, JobMeta, StageCtx, ThreadStage};
use crate::DataflowError;

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

pub struct Safety {
    pub prompt: PromptChecker,
    pub visual: VisualChecker,
    store: Arc<OutputStore>,
}

impl Safety {
    pub fn load(cfg: &SafetyConfig, store: Arc<OutputStore>) -> Result<Safety, DataflowError> {
        let err = |e: safety::SafetyError| DataflowError::Safety(e.to_string());
        let prompt = safety::prompt::load(&cfg.policy, &cfg.models_dir).map_err(err)?;
        let visual = VisualChecker::load(&cfg.models_dir, &prompt.policy).map_err(err)?;
        Ok(Safety {
            prompt,
            visual,
            store,
        })
    }

    fn key(meta: &JobMeta, stage: safety::Stage) -> Result<object_store::path::Path, String> {
        if !vidflow_operators::id::is_safe_id(&meta.tenant)
            || !vidflow_operators::id::is_safe_id(&meta.job_id)
        {
            return Err(format!(
                "unsafe tenant or job id {:?}/{:?}",
                meta.tenant, meta.job_id
            ));
        }
        Ok(object_store::path::Path::from(format!(
            "safety/{}/{}/{}.json",
            meta.tenant,
            meta.job_id,
            stage.as_str()
        )))
    }

    /// The recorded decision for this job and stage, if any. An unreadable
    /// record is an error, never "absent": guessing could run a blocked job.
    fn recorded(&self, meta: &JobMeta, stage: safety::Stage) -> Result<Option<Decision>, String> {
        let key = Self::key(meta, stage)?;
        match self.store.get_blocking(&key) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("safety record {key} is corrupt: {e}")),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(format!("reading safety record {key}: {e}")),
        }
    }

    fn record(&self, meta: &JobMeta, d: &Decision) -> Result<(), String> {
        let key = Self::key(meta, d.stage)?;
        let body = serde_json::to_vec(d).map_err(|e| e.to_string())?;
        self.store
            .put_atomic_blocking(&key, body)
            .map(|_| ())
            .map_err(|e| format!("recording the safety decision at {key}: {e}"))
    }

    /// Decides (or re-reads) and durably records the prompt decision.
    pub fn check_prompt(&self, meta: &JobMeta, prompt: &str) -> Result<Decision, String> {
        if let Some(d) = self.recorded(meta, safety::Stage::Prompt)? {
            return Ok(d);
        }
        let d = self
            .prompt
            .check(&meta.tenant, prompt)
            .map_err(|e| e.to_string())?;
        self.record(meta, &d)?;
        Ok(d)
    }

    pub fn check_video(
        &self,
        meta: &JobMeta,
        v: &vidflow_gpu::pipeline::Video,
    ) -> Result<Decision, String> {
        if let Some(d) = self.recorded(meta, safety::Stage::Visual)? {
            return Ok(d);
        }
        let d = self
            .visual
            .check(&meta.tenant, v.width, v.height, v.frames, &v.rgb)
            .map_err(|e| e.to_string())?;
        self.record(meta, &d)?;
        Ok(d)
    }
}

/// What a blocked job's failure says: the category first, for people and
/// for anything that parses it.
pub fn blocked_message(d: &Decision) -> String {
    format!(
        "blocked by safety policy ({} check): category {}: {}",
        d.stage.as_str(),
        d.category.as_deref().unwrap_or("unspecified"),
        d.reason
    )
}

/// Before encoding: the prompt decision (and, for image-to-video, the
/// first frame through the frame classifier, so an explicit input image is
/// not animated).
pub fn prompt_stage(ctx: StageCtx, s: Arc<Safety>) -> ThreadStage<AdmittedJob, AdmittedJob> {
    ThreadStage::spawn("safety-prompt", move |j: AdmittedJob| {
        let t0 = Instant::now();
        let AdmittedJob { mut meta, req } = j;
        let prompt = String::from_utf8_lossy(&req.prompt).into_owned();
        let d = match s.check_prompt(&meta, &prompt) {
            Ok(d) => d,
            Err(e) => return Err(ctx.fail(meta, Stage::Safety, e)),
        };
        tracing::info!(job_id = %meta.job_id, decision = d.label(), category = ?d.category, policy = %d.policy_version, latency_ms = d.latency_ms, "prompt safety decision");
        let allowed = d.allowed;
        let msg = blocked_message(&d);
        meta.safety.push(d);
        if !allowed {
            return Err(ctx.fail(meta, Stage::Safety, msg));
        }
        if let Some(img) = &req.image {
            let d = match s
                .visual
                .check(&meta.tenant, img.width, img.height, 1, &img.data)
            {
                Ok(d) => d,
                Err(e) => return Err(ctx.fail(meta, Stage::Safety, e.to_string())),
            };
            if !d.allowed {
                let msg = format!("input image {}", blocked_message(&d));
                meta.safety.push(d);
                return Err(ctx.fail(meta, Stage::Safety, msg));
            }
        }
        meta.timings.push((Stage::Safety, secs(t0)));
        Ok(AdmittedJob { meta, req })
    })
}

/// After decode, before the output is stored.
pub fn visual_stage(ctx: StageCtx, s: Arc<Safety>) -> ThreadStage<DecodedJob, DecodedJob> {
    ThreadStage::spawn("safety-visual", move |j: DecodedJob| {
        let t0 = Instant::now();
        let DecodedJob { mut meta, video } = j;
        let d = match s.check_video(&meta, &video) {
            Ok(d) => d,
            Err(e) => return Err(ctx.fail(meta, Stage::Safety, e)),
        };
        tracing::info!(job_id = %meta.job_id, decision = d.label(), category = ?d.category, latency_ms = d.latency_ms, "visual safety decision");
        let allowed = d.allowed;
        let msg = blocked_message(&d);
        meta.safety.push(d);
        if !allowed {
            return Err(ctx.fail(meta, Stage::Safety, msg));
        }
        meta.timings.push((Stage::Safety, secs(t0)));
        Ok(DecodedJob { meta, video })
    })
}
