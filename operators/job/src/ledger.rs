//! The far side of a job's commit: its durable [`JobRecord`] and the
//! analytics rows inside it (the ledger entry [`BillingRow`], the metering
//! [`MetricsRow`], the [`JobRow`] and one [`SafetyRow`] per decision), all
//! built in one place, [`JobRecord::commit`], from the pipeline's
//! [`JobResult`], the [`JobTerms`] the job was admitted under and the
//! [`Pricing`] beside this module.
//!
//! The money model: tenants pay for delivered video, after the fact. The
//! only ledger row is a `charge`, written when (and because) the video is
//! stored; a job that delivers nothing (failed, cancelled, blocked,
//! poison) has no ledger row at all, so no row can ever refund money that
//! was not taken. Nothing is held at admission: what a tenant may still
//! spend is bounded by its quota reservation (`crate::quota`), not by a
//! money hold. The record is created once (first commit wins, see
//! `vidflow_connectors::records`), so a job is charged once.

use serde::{Deserialize, Serialize};

use crate::billing::{Pricing, ResClass};
use crate::event::Stage;
use crate::result::{stage_seconds, JobResult, JobStatus, StageTimings};
use crate::safety::Decision;
use crate::spec::{JobKind, Tier};

/// What intake knew about a job when it took it: the shape it is priced
/// by and the times its queue wait is measured from. Kept with the job's
/// deliveries until its commit.
#[derive(Clone, Debug, PartialEq)]
pub struct JobTerms {
    pub tier: Tier,
    pub kind: JobKind,
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub fps: f64,
    pub audio: bool,
    /// Unix ms when the job was published (its message header), else
    /// when it was admitted.
    pub submitted_ms: u64,
    pub admitted_ms: u64,
    /// The admission estimate of the job's accelerator memory.
    pub est_vram_bytes: u64,
}

/// A ledger entry's kind. There is one: money moves only for delivered
/// video (see the module doc); the column names it so a reader can tell a
/// ledger row from anything else and so the set can grow without a new
/// schema.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// The video was delivered: the tenant pays.
    #[default]
    Charge,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Charge => "charge",
        }
    }
}

/// A ledger entry kind this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown ledger entry kind {0:?}")]
pub struct UnknownEntryKind(pub String);

impl std::str::FromStr for EntryKind {
    type Err = UnknownEntryKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "charge" => Ok(EntryKind::Charge),
            other => Err(UnknownEntryKind(other.to_string())),
        }
    }
}

impl PartialEq<&str> for EntryKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One ledger entry: the charge of a delivered job. Money in integer
/// micro-dollars.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BillingRow {
    pub job_id: String,
    pub tenant: String,
    pub tier: String,
    pub resolution_class: String,
    pub width: u32,
    pub height: u32,
    pub kind: EntryKind,
    /// Delivered video, whole milliseconds (rounded up).
    pub billed_ms: u64,
    pub unit_micro_per_s: i64,
    /// What the tenant pays (positive).
    pub amount_micro: i64,
    pub price_version: String,
    pub accelerator_s: f64,
    pub compute_cost_micro: i64,
    pub ts_ms: u64,
}

/// Metering of one job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    pub job_id: String,
    pub tenant: String,
    pub tier: String,
    pub status: JobStatus,
    /// From publish to admission.
    pub queue_wait_ms: u64,
    /// From submission until denoising last started, every waiting period
    /// included (the broker's queue, the worker's scheduler, and waiting
    /// again after a preemption): what the tiers' wait targets promise.
    #[serde(default)]
    pub start_wait_s: f64,
    /// Times the job yielded its slot at a step boundary.
    #[serde(default)]
    pub preemptions: u32,
    /// The cost model's prediction of `accelerator_s` for the denoising.
    #[serde(default)]
    pub predicted_accel_s: f64,
    pub encode_s: f64,
    pub denoise_s: f64,
    pub decode_s: f64,
    pub output_s: f64,
    pub steps: u32,
    pub batch_max: u32,
    pub batch_mean: f64,
    pub accelerator_s: f64,
    pub accelerator: String,
    /// Process peak resident memory when the job finished (CPU backend).
    pub peak_rss_bytes: u64,
    /// The admission estimate of the job's accelerator memory.
    pub est_vram_bytes: u64,
    pub compute_cost_micro: i64,
    /// Price minus compute cost (charges only; 0 otherwise).
    pub margin_micro: i64,
    pub ts_ms: u64,
}

/// A finished job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRow {
    pub job_id: String,
    pub tenant: String,
    pub tier: String,
    pub kind: String,
    pub status: JobStatus,
    pub error: Option<String>,
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub fps: f64,
    pub resolution_class: String,
    pub output_key: Option<String>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub untrained: bool,
    pub submitted_ms: u64,
    pub finished_ms: u64,
}

/// One safety decision (the prompt check, and the frame check when the job
/// got that far), so block rates, categories and policy versions can be
/// queried next to billing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SafetyRow {
    pub job_id: String,
    pub tenant: String,
    /// `prompt` or `visual`.
    pub stage: String,
    /// `allow` or `block`.
    pub decision: String,
    /// Empty when allowed.
    pub category: String,
    pub reason: String,
    /// Every score, as a JSON object (`{"embedding.sexual": 0.31, ...}`):
    /// the set of signals grows with the policy, a fixed column set would not.
    pub scores_json: String,
    pub policy_version: String,
    /// Comma-separated model versions.
    pub model_versions: String,
    pub latency_ms: f64,
    pub ts_ms: u64,
}

impl SafetyRow {
    pub fn from_decision(job_id: &str, tenant: &str, d: &Decision, ts_ms: u64) -> SafetyRow {
        SafetyRow {
            job_id: job_id.into(),
            tenant: tenant.into(),
            stage: d.stage.as_str().into(),
            decision: d.label().into(),
            category: d.category.clone().unwrap_or_default(),
            reason: d.reason.clone(),
            scores_json: serde_json::to_string(&d.scores).unwrap_or_default(),
            policy_version: d.policy_version.clone(),
            model_versions: d.model_versions.join(","),
            latency_ms: d.latency_ms,
            ts_ms,
        }
    }
}

/// A finished job, durably: written once at `jobs/<tenant>/<job_id>.json`
/// before the job's message is acknowledged. It makes a redelivered job
/// idempotent and carries the analytics rows, so the Parquet sinks can
/// always be re-derived from records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub tenant: String,
    pub status: JobStatus,
    #[serde(default)]
    pub error: Option<String>,
    /// Stage a failed job stopped in.
    #[serde(default)]
    pub stage: Option<Stage>,
    /// Denoising steps a cancelled job had taken.
    #[serde(default)]
    pub cancelled_at: Option<usize>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub untrained: bool,
    /// Unix ms when the record was written.
    pub finished_ms: u64,
    #[serde(default)]
    pub timings: StageTimings,
    #[serde(default)]
    pub batch_sizes: Vec<usize>,
    /// Unique per commit attempt (diagnostics: which run's record won).
    #[serde(default)]
    pub commit_id: String,
    #[serde(default)]
    pub billing: Option<BillingRow>,
    #[serde(default)]
    pub metrics: Option<MetricsRow>,
    #[serde(default)]
    pub job: Option<JobRow>,
    #[serde(default)]
    pub safety: Vec<SafetyRow>,
}

/// What the machine measured besides the result itself.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Machine {
    /// Unix ms of the commit.
    pub now_ms: u64,
    /// Peak resident memory of the process so far.
    pub peak_rss_bytes: u64,
}

impl JobRecord {
    /// The record, ledger entry and analytics rows of a finished job. Pure:
    /// the same inputs give the same record (the commit id aside, which
    /// the caller passes).
    pub fn commit(
        r: &JobResult,
        terms: &JobTerms,
        pricing: &Pricing,
        at: Machine,
        commit_id: String,
    ) -> JobRecord {
        let now = at.now_ms;
        let delivered = r.status.delivered();
        let charge = pricing.charge(
            terms.tier,
            terms.width,
            terms.height,
            terms.frames,
            terms.fps,
            terms.audio,
        );
        let cost = pricing.compute_cost_micro(r.accel_s);
        let class = ResClass::of(terms.width, terms.height).as_str().to_string();
        // A ledger row only for delivered video: nothing else moves money.
        let billing = delivered.then(|| BillingRow {
            job_id: r.job_id.clone(),
            tenant: r.tenant.clone(),
            tier: terms.tier.as_str().into(),
            resolution_class: class.clone(),
            width: terms.width,
            height: terms.height,
            kind: EntryKind::Charge,
            billed_ms: charge.billed_ms,
            unit_micro_per_s: charge.unit_micro_per_s,
            amount_micro: charge.amount_micro,
            price_version: charge.price_version.clone(),
            accelerator_s: r.accel_s,
            compute_cost_micro: cost,
            ts_ms: now,
        });
        let n = r.batch_sizes.len().max(1) as f64;
        let metrics = MetricsRow {
            job_id: r.job_id.clone(),
            tenant: r.tenant.clone(),
            tier: terms.tier.as_str().into(),
            status: r.status,
            queue_wait_ms: terms.admitted_ms.saturating_sub(terms.submitted_ms),
            start_wait_s: r.queue_wait_s,
            preemptions: r.preemptions,
            predicted_accel_s: r.predicted_accel_s,
            encode_s: stage_seconds(&r.timings, Stage::Encode),
            denoise_s: stage_seconds(&r.timings, Stage::Denoise),
            decode_s: stage_seconds(&r.timings, Stage::Decode),
            output_s: stage_seconds(&r.timings, Stage::Output),
            steps: r.batch_sizes.len() as u32,
            batch_max: r.batch_sizes.iter().copied().max().unwrap_or(0) as u32,
            batch_mean: r.batch_sizes.iter().sum::<usize>() as f64 / n,
            accelerator_s: r.accel_s,
            accelerator: pricing.accelerator.clone(),
            peak_rss_bytes: at.peak_rss_bytes,
            est_vram_bytes: terms.est_vram_bytes,
            compute_cost_micro: cost,
            margin_micro: if delivered {
                charge.amount_micro - cost
            } else {
                0
            },
            ts_ms: now,
        };
        let job = JobRow {
            job_id: r.job_id.clone(),
            tenant: r.tenant.clone(),
            tier: terms.tier.as_str().into(),
            kind: terms.kind.as_str().into(),
            status: r.status,
            error: r.error.clone(),
            width: terms.width,
            height: terms.height,
            frames: terms.frames,
            fps: terms.fps,
            resolution_class: class,
            output_key: r.key.clone(),
            size: r.size,
            sha256: r.sha256.clone(),
            untrained: r.untrained,
            submitted_ms: terms.submitted_ms,
            finished_ms: now,
        };
        JobRecord {
            job_id: r.job_id.clone(),
            tenant: r.tenant.clone(),
            status: r.status,
            error: r.error.clone(),
            stage: r.failed_stage,
            cancelled_at: r.cancelled_at,
            key: r.key.clone(),
            size: r.size,
            sha256: r.sha256.clone(),
            untrained: r.untrained,
            finished_ms: now,
            timings: r.timings.clone(),
            batch_sizes: r.batch_sizes.clone(),
            commit_id,
            billing,
            metrics: Some(metrics),
            job: Some(job),
            safety: r
                .safety
                .iter()
                .map(|d| SafetyRow::from_decision(&r.job_id, &r.tenant, d, now))
                .collect(),
        }
    }

    /// The charge of a delivered job, if this record holds one.
    pub fn charge(&self) -> Option<&BillingRow> {
        self.billing
            .as_ref()
            .filter(|b| b.kind == EntryKind::Charge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Failure, JobMeta, StoredVideo};

    fn terms() -> JobTerms {
        JobTerms {
            tier: Tier::Premium,
            kind: JobKind::T2v,
            width: 1280,
            height: 704,
            frames: 121,
            fps: 24.0,
            audio: false,
            submitted_ms: 1_000,
            admitted_ms: 1_250,
            est_vram_bytes: 7,
        }
    }

    fn meta() -> JobMeta {
        let mut m = JobMeta::new(
            "j1".into(),
            "acme".into(),
            "ltx-tiny".into(),
            Tier::Premium,
            chrono::NaiveDate::from_ymd_opt(2026, 12, 3).unwrap(),
        );
        m.timings = vec![
            (Stage::Safety, 0.01),
            (Stage::Encode, 0.5),
            (Stage::Denoise, 4.0),
            (Stage::Decode, 1.0),
            (Stage::Safety, 0.02),
            (Stage::Output, 0.25),
        ];
        m.batch_sizes = vec![2, 2, 1, 1];
        m.denoise_accel_s = 3.0;
        m
    }

    fn at() -> Machine {
        Machine {
            now_ms: 5_000,
            peak_rss_bytes: 1 << 20,
        }
    }

    #[test]
    fn a_delivered_job_is_charged_price_times_seconds() {
        let p = Pricing::builtin();
        let stored = StoredVideo {
            key: "acme/2026-12-03/j1.mp4".into(),
            size: 10,
            sha256: "ab".into(),
        };
        let r = JobResult::completed(meta(), stored, true);
        let rec = JobRecord::commit(&r, &terms(), &p, at(), "c1".into());
        let b = rec.charge().expect("a charge");
        let c = p.charge(Tier::Premium, 1280, 704, 121, 24.0, false);
        assert_eq!(b.amount_micro, c.amount_micro);
        assert!(b.amount_micro > 0);
        assert_eq!(
            b.amount_micro * 1000,
            b.unit_micro_per_s * b.billed_ms as i64
        );
        assert_eq!(
            (b.resolution_class.as_str(), b.tier.as_str()),
            ("720p", "premium")
        );
        // accel = encode 0.5 + decode 1.0 + denoise share 3.0.
        assert_eq!(b.accelerator_s, 4.5);
        assert_eq!(b.compute_cost_micro, p.compute_cost_micro(4.5));
        let m = rec.metrics.as_ref().unwrap();
        assert_eq!(m.queue_wait_ms, 250);
        assert_eq!(
            (m.encode_s, m.denoise_s, m.decode_s, m.output_s),
            (0.5, 4.0, 1.0, 0.25)
        );
        assert_eq!((m.steps, m.batch_max, m.batch_mean), (4, 2, 1.5));
        assert_eq!(m.margin_micro, b.amount_micro - b.compute_cost_micro);
        assert_eq!(m.peak_rss_bytes, 1 << 20);
        let j = rec.job.as_ref().unwrap();
        assert_eq!(j.output_key.as_deref(), Some("acme/2026-12-03/j1.mp4"));
        assert_eq!((j.kind.as_str(), j.finished_ms), ("t2v", 5_000));
        assert_eq!(rec.status, JobStatus::Completed);
        assert_eq!(rec.stage, None);
    }

    #[test]
    fn a_failed_job_has_no_ledger_row_and_no_margin() {
        let p = Pricing::builtin();
        let mut m = meta();
        m.safety.push(Decision {
            stage: crate::safety::Check::Prompt,
            allowed: false,
            category: Some("sexual".into()),
            reason: "terms".into(),
            scores: Default::default(),
            policy_version: "p1".into(),
            model_versions: vec!["a".into(), "b".into()],
            latency_ms: 1.5,
            text: None,
        });
        let r = JobResult::from_failure(Failure::new(m, Stage::Safety, "blocked"));
        let rec = JobRecord::commit(&r, &terms(), &p, at(), "c2".into());
        assert!(rec.charge().is_none());
        // Nothing was delivered, so no money moves either way (a credit
        // here would refund a charge that never happened).
        assert_eq!(rec.billing, None);
        assert_eq!(rec.metrics.as_ref().unwrap().margin_micro, 0);
        assert_eq!(rec.stage, Some(Stage::Safety));
        assert_eq!(rec.safety.len(), 1);
        let s = &rec.safety[0];
        assert_eq!((s.stage.as_str(), s.decision.as_str()), ("prompt", "block"));
        assert_eq!(s.model_versions, "a,b");
    }

    #[test]
    fn records_keep_their_json_shape() {
        let r = JobResult::from_failure(Failure::cancelled(meta(), 3));
        let rec = JobRecord::commit(&r, &terms(), &Pricing::builtin(), at(), "c3".into());
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(v["status"], "cancelled");
        assert!(v["billing"].is_null(), "{v}");
        assert_eq!(v["timings"][1][0], "encode");
        assert_eq!(v["cancelled_at"], 3);
        let back: JobRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, rec);
        // A record written before the enums (stage as a string) still reads.
        let old = r#"{"job_id":"j","tenant":"t","status":"failed","stage":"decode","finished_ms":1,"timings":[["decode",0.5]]}"#;
        let old: JobRecord = serde_json::from_str(old).unwrap();
        assert_eq!(old.stage, Some(Stage::Decode));
        assert_eq!(old.status, JobStatus::Failed);
    }
}
