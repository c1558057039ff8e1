//! A job on the near side of its commit: the account a job carries through
//! the stages ([`JobMeta`]), how it left them early ([`Failure`]), and the
//! outcome the pipeline hands to a driver ([`JobResult`]). Nothing here is
//! durable yet; the durable side is [`crate::ledger::JobRecord`].
//!
//! Every `JobResult` is made by one of the constructors below, so the
//! fields a status implies (a key for a delivered video, a stage for a
//! failure, a step for a cancel) are always set together.

use serde::{Deserialize, Serialize};

use crate::event::Stage;
use crate::safety::Decision;
use crate::Tier;

/// How a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Its video is stored.
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// A video was delivered (the job is charged, not credited).
    pub fn delivered(self) -> bool {
        self == JobStatus::Completed
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is none of `completed`, `failed`, `cancelled`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job status {0:?}")]
pub struct UnknownStatus(pub String);

impl std::str::FromStr for JobStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "completed" => Ok(JobStatus::Completed),
            "failed" => Ok(JobStatus::Failed),
            "cancelled" => Ok(JobStatus::Cancelled),
            other => Err(UnknownStatus(other.to_string())),
        }
    }
}

/// Compares with the wire name (`"completed"`, ...): readers of JSON and
/// Parquet rows hold the name, not the enum.
impl PartialEq<str> for JobStatus {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for JobStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Seconds spent per stage, in the order the stages ran (the safety stage
/// appears twice when both checks ran).
pub type StageTimings = Vec<(Stage, f64)>;

/// Total seconds of one stage.
pub fn stage_seconds(t: &[(Stage, f64)], stage: Stage) -> f64 {
    t.iter().filter(|(s, _)| *s == stage).map(|(_, v)| v).sum()
}

/// What every stage carries about a job besides its tensors.
#[derive(Clone, Debug)]
pub struct JobMeta {
    pub job_id: String,
    pub tenant: String,
    pub model_id: String,
    /// UTC date of admission, `yyyy-mm-dd`: part of the output key.
    pub date: chrono::NaiveDate,
    pub timings: StageTimings,
    /// Batch sizes of this job's denoising steps.
    pub batch_sizes: Vec<usize>,
    /// This job's share of its batched denoising steps' time.
    pub denoise_accel_s: f64,
    /// Step of the checkpoint this run resumed from.
    pub resumed_from: Option<usize>,
    pub tier: Tier,
    /// Safety decisions so far (prompt, then frames), for the record.
    pub safety: Vec<Decision>,
    /// Unix ms of submission, when known (else the scheduler counts from
    /// the job's arrival at the denoiser).
    pub submitted_ms: Option<u64>,
    /// Seconds from submission until the job's denoising last started,
    /// every waiting period included (after a preemption too): the wait
    /// the tiers' targets are about.
    pub queue_wait_s: f64,
    /// Times the job yielded its slot to a more urgent one.
    pub preemptions: u32,
    /// The cost model's accelerator-seconds for the job's denoising, when
    /// it arrived at the denoiser (next to the measured `denoise_accel_s`).
    pub predicted_accel_s: f64,
    /// Where a segment of a long video stands in its chain: progress and
    /// ETAs count the whole chain's steps, not the segment's.
    pub chain: Option<ChainSpan>,
}

/// A chain segment's place among the chain's denoising steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainSpan {
    pub segment: usize,
    pub segments: usize,
    /// Steps of the segments before this one.
    pub steps_before: usize,
    /// Steps of the whole chain.
    pub steps_total: usize,
}

impl JobMeta {
    /// A segment's `step` of `total` as the whole job's progress (the
    /// same numbers for a job that is not a chain).
    pub fn progress(&self, step: usize, total: usize) -> (usize, usize) {
        match &self.chain {
            Some(c) => (
                c.steps_before + step,
                c.steps_total.max(c.steps_before + total),
            ),
            None => (step, total),
        }
    }

    /// The (tenant, job id) this job is.
    pub fn key(&self) -> crate::JobKey {
        crate::JobKey::new(self.tenant.clone(), self.job_id.clone())
    }

    /// A job at admission: nothing measured yet.
    pub fn new(
        job_id: String,
        tenant: String,
        model_id: String,
        tier: Tier,
        date: chrono::NaiveDate,
    ) -> JobMeta {
        JobMeta {
            job_id,
            tenant,
            model_id,
            date,
            timings: Vec::new(),
            batch_sizes: Vec::new(),
            denoise_accel_s: 0.0,
            resumed_from: None,
            submitted_ms: None,
            queue_wait_s: 0.0,
            preemptions: 0,
            predicted_accel_s: 0.0,
            chain: None,
            tier,
            safety: Vec::new(),
        }
    }

    /// Accelerator-seconds of a job: encode + decode + its denoise share.
    pub fn accel_seconds(&self) -> f64 {
        self.denoise_accel_s
            + stage_seconds(&self.timings, Stage::Encode)
            + stage_seconds(&self.timings, Stage::Decode)
    }
}

/// A job that left the pipeline early, and why. `error` is the message
/// clients see (the stage's typed error, rendered once where it happened).
#[derive(Clone, Debug)]
pub struct Failure {
    pub meta: JobMeta,
    pub stage: Stage,
    pub error: String,
    /// Denoising steps taken, when the job was cancelled (not failed).
    pub cancelled_at: Option<usize>,
}

impl Failure {
    pub fn new(meta: JobMeta, stage: Stage, error: impl std::fmt::Display) -> Failure {
        Failure {
            meta,
            stage,
            error: error.to_string(),
            cancelled_at: None,
        }
    }

    /// A job stopped by a cancel before its next denoising step.
    pub fn cancelled(meta: JobMeta, step: usize) -> Failure {
        Failure {
            meta,
            stage: Stage::Denoise,
            error: format!("cancelled at step {step}"),
            cancelled_at: Some(step),
        }
    }
}

/// A stored output: object-store key, size and SHA-256 (hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredVideo {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

/// The end of a job's path through the pipeline: stored output or
/// failure. Made only by the constructors below.
#[derive(Clone, Debug, Serialize)]
pub struct JobResult {
    pub job_id: String,
    pub tenant: String,
    pub status: JobStatus,
    pub error: Option<String>,
    pub key: Option<String>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub untrained: bool,
    pub timings: StageTimings,
    pub batch_sizes: Vec<usize>,
    /// Accelerator-seconds attributed to the job: its encode and decode,
    /// plus its fair share of every batched denoising step.
    #[serde(default)]
    pub accel_s: f64,
    /// Queue wait until its denoising last started (see `JobMeta`).
    #[serde(default)]
    pub queue_wait_s: f64,
    /// Times it yielded its slot at a step boundary.
    #[serde(default)]
    pub preemptions: u32,
    /// The cost model's accelerator-seconds for its denoising.
    #[serde(default)]
    pub predicted_accel_s: f64,
    /// Where a failed job stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_stage: Option<Stage>,
    /// Denoising steps a cancelled job had taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<usize>,
    /// The job's safety decisions (to the `safety` analytics table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub safety: Vec<Decision>,
}

impl JobResult {
    /// The (tenant, job id) this result belongs to.
    pub fn key(&self) -> crate::JobKey {
        crate::JobKey::new(self.tenant.clone(), self.job_id.clone())
    }

    fn bare(job_id: String, tenant: String, status: JobStatus) -> JobResult {
        JobResult {
            job_id,
            tenant,
            status,
            error: None,
            key: None,
            size: None,
            sha256: None,
            untrained: false,
            timings: Vec::new(),
            batch_sizes: Vec::new(),
            accel_s: 0.0,
            queue_wait_s: 0.0,
            preemptions: 0,
            predicted_accel_s: 0.0,
            failed_stage: None,
            cancelled_at: None,
            safety: Vec::new(),
        }
    }

    /// A job whose video is stored.
    pub fn completed(meta: JobMeta, stored: StoredVideo, untrained: bool) -> JobResult {
        let accel_s = meta.accel_seconds();
        JobResult {
            key: Some(stored.key),
            size: Some(stored.size),
            sha256: Some(stored.sha256),
            untrained,
            accel_s,
            queue_wait_s: meta.queue_wait_s,
            preemptions: meta.preemptions,
            predicted_accel_s: meta.predicted_accel_s,
            timings: meta.timings,
            batch_sizes: meta.batch_sizes,
            safety: meta.safety,
            ..JobResult::bare(meta.job_id, meta.tenant, JobStatus::Completed)
        }
    }

    /// A job that failed or was cancelled inside the pipeline.
    pub fn from_failure(f: Failure) -> JobResult {
        let accel_s = f.meta.accel_seconds();
        let status = if f.cancelled_at.is_some() {
            JobStatus::Cancelled
        } else {
            JobStatus::Failed
        };
        JobResult {
            error: Some(f.error),
            accel_s,
            queue_wait_s: f.meta.queue_wait_s,
            preemptions: f.meta.preemptions,
            predicted_accel_s: f.meta.predicted_accel_s,
            failed_stage: f.cancelled_at.is_none().then_some(f.stage),
            cancelled_at: f.cancelled_at,
            timings: f.meta.timings,
            batch_sizes: f.meta.batch_sizes,
            safety: f.meta.safety,
            ..JobResult::bare(f.meta.job_id, f.meta.tenant, status)
        }
    }

    /// A job that failed before it reached the pipeline (a poison message
    /// parked after too many cut-short runs).
    pub fn failed_before_start(job_id: String, tenant: String, error: String) -> JobResult {
        JobResult {
            error: Some(error),
            failed_stage: Some(Stage::Admit),
            ..JobResult::bare(job_id, tenant, JobStatus::Failed)
        }
    }

    /// A completed job whose output an earlier run stored (found, not
    /// generated: no timings, not known to be untrained).
    pub fn adopted(job_id: String, tenant: String, stored: StoredVideo) -> JobResult {
        JobResult {
            key: Some(stored.key),
            size: Some(stored.size),
            sha256: Some(stored.sha256),
            ..JobResult::bare(job_id, tenant, JobStatus::Completed)
        }
    }

    /// The intake benchmark's stand-in for a generated job (no model ran).
    pub fn noop(job_id: String, tenant: String) -> JobResult {
        JobResult {
            key: Some("noop".into()),
            size: Some(0),
            sha256: Some(String::new()),
            untrained: true,
            ..JobResult::bare(job_id, tenant, JobStatus::Completed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> JobMeta {
        let mut m = JobMeta::new(
            "j1".into(),
            "acme".into(),
            "ltx-tiny".into(),
            Tier::Standard,
            chrono::NaiveDate::from_ymd_opt(2026, 12, 3).unwrap(),
        );
        m.timings = vec![
            (Stage::Encode, 0.5),
            (Stage::Denoise, 9.0),
            (Stage::Decode, 1.0),
        ];
        m.denoise_accel_s = 3.0;
        m.batch_sizes = vec![2, 2, 1];
        m
    }

    #[test]
    fn a_completed_result_carries_the_stored_video_and_accelerator_seconds() {
        let stored = StoredVideo {
            key: "acme/2026-12-03/j1.mp4".into(),
            size: 10,
            sha256: "ab".into(),
        };
        let r = JobResult::completed(meta(), stored, true);
        assert_eq!(r.status, JobStatus::Completed);
        assert_eq!(r.key.as_deref(), Some("acme/2026-12-03/j1.mp4"));
        // encode 0.5 + decode 1.0 + the denoise share 3.0 (not the 9 s wall).
        assert_eq!(r.accel_s, 4.5);
        assert_eq!(r.failed_stage, None);
        assert_eq!(r.batch_sizes, vec![2, 2, 1]);
    }

    #[test]
    fn failures_and_cancels_become_failed_and_cancelled_results() {
        let f = JobResult::from_failure(Failure::new(meta(), Stage::Decode, "boom"));
        assert_eq!(f.status, JobStatus::Failed);
        assert_eq!(f.failed_stage, Some(Stage::Decode));
        assert_eq!(f.error.as_deref(), Some("boom"));
        assert_eq!(f.key, None);
        let c = JobResult::from_failure(Failure::cancelled(meta(), 7));
        assert_eq!(c.status, JobStatus::Cancelled);
        assert_eq!(c.cancelled_at, Some(7));
        assert_eq!(c.failed_stage, None);
        assert_eq!(c.error.as_deref(), Some("cancelled at step 7"));
    }

    #[test]
    fn status_names_round_trip_and_compare_with_strings() {
        for s in [
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
            assert!(s == s.as_str());
        }
        assert!("done".parse::<JobStatus>().is_err());
        assert!(JobStatus::Completed.delivered() && !JobStatus::Cancelled.delivered());
        // Timings serialise as before: `[["encode", 0.5]]`.
        let t: StageTimings = vec![(Stage::Encode, 0.5)];
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"[["encode",0.5]]"#);
    }
}
