//! The video object: the convention's fields, then ours.
//!
//! Built from three sources, each optional but the first: the job's
//! status (the live table or its record), what was asked for
//! ([`VideoMeta`], absent for jobs published straight onto the broker) and
//! the record of a finished job (its charge, timings and safety decisions).

use serde::Serialize;
use vidflow_job::ledger::JobRecord;

use crate::api::pb::{JobState, JobStatus};
use crate::meta::VideoMeta;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoStatus {
    Queued,
    InProgress,
    Completed,
    Failed,
    /// Ours: the convention has no cancel state.
    Cancelled,
}

impl VideoStatus {
    pub fn of(s: JobState) -> VideoStatus {
        match s {
            JobState::Unspecified | JobState::Queued => VideoStatus::Queued,
            JobState::Running => VideoStatus::InProgress,
            JobState::Completed => VideoStatus::Completed,
            JobState::Failed | JobState::Rejected => VideoStatus::Failed,
            JobState::Cancelled => VideoStatus::Cancelled,
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, VideoStatus::Queued | VideoStatus::InProgress)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct VideoError {
    pub code: String,
    pub message: String,
}

/// What a delivered video cost, exactly (decimal strings of micro-dollars).
#[derive(Clone, Debug, Serialize)]
pub struct Cost {
    pub amount_usd: String,
    pub currency: &'static str,
    /// Delivered seconds charged.
    pub billed_seconds: f64,
    pub price_version: String,
}

/// How a finished job went: `GET /v1/videos/{id}?include=details`.
#[derive(Clone, Debug, Serialize)]
pub struct Details {
    pub queue_wait_s: f64,
    pub start_wait_s: f64,
    pub encode_s: f64,
    pub denoise_s: f64,
    pub decode_s: f64,
    pub output_s: f64,
    pub accelerator_s: f64,
    pub batch_max: u32,
    pub preemptions: u32,
    pub safety: Vec<SafetyDecision>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SafetyDecision {
    pub stage: String,
    pub decision: String,
    pub category: String,
    pub reason: String,
    pub policy_version: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Video {
    pub id: String,
    pub object: &'static str,
    pub model: String,
    pub status: VideoStatus,
    /// 0-100: denoising steps done; 100 only once the video is stored.
    pub progress: u32,
    /// Unix seconds.
    pub created_at: u64,
    pub completed_at: Option<u64>,
    /// Outputs are kept until deleted.
    pub expires_at: Option<u64>,
    /// `WxH`.
    pub size: String,
    /// Duration, as the convention writes it (a string).
    pub seconds: String,
    pub prompt: Option<String>,
    pub error: Option<VideoError>,
    // Ours.
    pub tier: Option<String>,
    pub mode: Option<String>,
    pub seed: Option<u64>,
    pub steps: Option<u32>,
    /// The pipeline stage the job is in (or ended in).
    pub stage: String,
    pub eta_s: Option<f64>,
    pub cost: Option<Cost>,
    /// Made by an untrained (seeded random) model: the picture means nothing.
    pub untrained: bool,
    pub bytes: Option<u64>,
    pub sha256: Option<String>,
    pub content_deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
}

/// Micro-dollars as a decimal string (`1234567` → `"1.234567"`).
pub fn usd(micro: i64) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    let m = micro.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

fn seconds_text(s: f64) -> String {
    let r = (s * 1000.0).round() / 1000.0;
    if r.fract() == 0.0 {
        format!("{}", r as u64)
    } else {
        format!("{r}")
    }
}

/// Progress from real steps (the job table's, which never decreases):
/// queued 0, stored 100.
fn progress(s: &JobStatus, status: VideoStatus) -> u32 {
    match status {
        VideoStatus::Completed => 100,
        VideoStatus::Queued => 0,
        _ => s.progress.min(99),
    }
}

fn error_of(s: &JobStatus, status: VideoStatus) -> Option<VideoError> {
    let code = match (status, s.state()) {
        (VideoStatus::Cancelled, _) => "cancelled",
        (_, JobState::Rejected) => "invalid_request",
        (VideoStatus::Failed, _) if s.stage.starts_with("safety") => "moderation_blocked",
        (VideoStatus::Failed, _) => "generation_failed",
        _ => return None,
    };
    Some(VideoError {
        code: code.into(),
        message: if s.error.is_empty() {
            code.replace('_', " ")
        } else {
            s.error.clone()
        },
    })
}

impl Video {
    pub fn build(
        s: &JobStatus,
        meta: Option<&VideoMeta>,
        record: Option<&JobRecord>,
        details: bool,
    ) -> Video {
        let status = VideoStatus::of(s.state());
        let row = record.and_then(|r| r.job.as_ref());
        let (w, h, seconds) = match (meta, row) {
            (Some(m), _) => (m.width, m.height, m.seconds()),
            (None, Some(j)) => (
                j.width,
                j.height,
                if j.fps > 0.0 {
                    j.frames as f64 / j.fps
                } else {
                    0.0
                },
            ),
            (None, None) => (0, 0, 0.0),
        };
        let created_ms = meta
            .map(|m| m.created_ms)
            .or(row.map(|j| j.submitted_ms))
            .filter(|ms| *ms > 0)
            .unwrap_or(if s.created_ms > 0 {
                s.created_ms
            } else {
                s.updated_ms
            });
        let completed_at = (status == VideoStatus::Completed)
            .then(|| record.map(|r| r.finished_ms).unwrap_or(s.updated_ms) / 1000);
        let cost = record.and_then(|r| r.charge()).map(|b| Cost {
            amount_usd: usd(b.amount_micro),
            currency: "usd",
            billed_seconds: b.billed_ms as f64 / 1000.0,
            price_version: b.price_version.clone(),
        });
        let details = if details {
            record.map(|r| {
                let m = r.metrics.as_ref();
                let f = |g: fn(&vidflow_job::ledger::MetricsRow) -> f64| m.map(g).unwrap_or(0.0);
                Details {
                    queue_wait_s: f(|m| m.queue_wait_ms as f64 / 1000.0),
                    start_wait_s: f(|m| m.start_wait_s),
                    encode_s: f(|m| m.encode_s),
                    denoise_s: f(|m| m.denoise_s),
                    decode_s: f(|m| m.decode_s),
                    output_s: f(|m| m.output_s),
                    accelerator_s: f(|m| m.accelerator_s),
                    batch_max: m.map(|m| m.batch_max).unwrap_or(0),
                    preemptions: m.map(|m| m.preemptions).unwrap_or(0),
                    safety: r
                        .safety
                        .iter()
                        .map(|d| SafetyDecision {
                            stage: d.stage.clone(),
                            decision: d.decision.clone(),
                            category: d.category.clone(),
                            reason: d.reason.clone(),
                            policy_version: d.policy_version.clone(),
                        })
                        .collect(),
                }
            })
        } else {
            None
        };
        let done = status == VideoStatus::Completed;
        Video {
            id: s.job_id.clone(),
            object: "video",
            model: meta.map(|m| m.model.clone()).unwrap_or_default(),
            status,
            progress: progress(s, status),
            created_at: created_ms / 1000,
            completed_at,
            expires_at: None,
            size: if w > 0 {
                format!("{w}x{h}")
            } else {
                String::new()
            },
            seconds: seconds_text(seconds),
            prompt: meta.map(|m| m.prompt.clone()),
            error: error_of(s, status),
            tier: meta.map(|m| m.tier.clone()).or(row.map(|j| j.tier.clone())),
            mode: meta.map(|m| m.mode.clone()),
            seed: meta.map(|m| m.seed),
            steps: meta.map(|m| m.steps),
            stage: s.stage.clone(),
            eta_s: if status.is_terminal() { None } else { s.eta_s },
            cost,
            untrained: s.untrained,
            bytes: done.then_some(s.output_size),
            sha256: (done && !s.sha256.is_empty()).then(|| s.sha256.clone()),
            content_deleted: meta.is_some_and(|m| m.content_deleted_ms.is_some()),
            details,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_seconds_print_exactly() {
        assert_eq!(usd(1_234_567), "1.234567");
        assert_eq!(usd(5), "0.000005");
        assert_eq!(usd(-2_500_000), "-2.500000");
        assert_eq!(seconds_text(4.0), "4");
        assert_eq!(seconds_text(25.0 / 24.0), "1.042");
    }

    #[test]
    fn progress_reaches_100_only_when_stored() {
        let mut s = JobStatus {
            job_id: "j".into(),
            state: JobState::Running as i32,
            stage: "denoise".into(),
            step: 5,
            total_steps: 10,
            progress: 49,
            ..Default::default()
        };
        let v = Video::build(&s, None, None, false);
        assert_eq!((v.status, v.progress), (VideoStatus::InProgress, 49));
        s.progress = 100;
        assert_eq!(Video::build(&s, None, None, false).progress, 99);
        s.set_state(JobState::Completed);
        assert_eq!(Video::build(&s, None, None, false).progress, 100);
        s.set_state(JobState::Failed);
        s.stage = "safety".into();
        s.error = "blocked".into();
        let v = Video::build(&s, None, None, false);
        assert_eq!(v.error.unwrap().code, "moderation_blocked");
    }
}
