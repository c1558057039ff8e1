//! The commit of a finished job: metering, the ledger entry (a charge if
//! the video was delivered, a credit otherwise), the job record (created
//! once: the first commit of a job wins, so a job is charged once however
//! often it runs), the analytics outbox, the quota book, then the terminal
//! event whose broker confirm acks the message.

use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use vidflow_connectors::records::{create_record, BillingRow, JobRecord, JobRow, MetricsRow};
use vidflow_connectors::sinks::Sinks;
use vidflow_connectors::store::OutputStore;
use vidflow_operators::billing::{Pricing, ResClass};
use vidflow_operators::event::now_ms;
use vidflow_operators::Tier;

use super::{terminal_event, InFlightMap, Outbound};
use crate::stages::JobResult;

/// What intake knew about a job, kept with its deliveries until the ack.
#[derive(Clone, Debug)]
pub(crate) struct JobInfo {
    pub tier: Tier,
    pub kind: &'static str,
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub fps: f64,
    pub audio: bool,
    pub submitted_ms: u64,
    pub admitted_ms: u64,
    pub est_vram_bytes: u64,
}

pub(crate) struct Committer {
    pub timed_out: super::TimedOut,
    pub engine: Option<Arc<crate::graph::Engine>>,
    pub checkpoints: Option<crate::checkpoint::Checkpoints>,
    pub metrics: Arc<super::metrics::Metrics>,
    pub store: Arc<OutputStore>,
    pub pricing: Arc<Pricing>,
    pub sinks: Arc<Sinks>,
    pub quotas: Arc<vidflow_operators::quota::QuotaBook>,
    pub inflight: InFlightMap,
    pub out: UnboundedSender<Outbound>,
}

/// Peak resident memory of this process (VmHWM), 0 where unknown.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The record (with its analytics rows) of a finished job.
pub(crate) fn build_record(r: &JobResult, info: &JobInfo, pricing: &Pricing) -> JobRecord {
    let now = now_ms();
    let delivered = r.status == "completed";
    let charge = pricing.charge(
        info.tier,
        info.width,
        info.height,
        info.frames,
        info.fps,
        info.audio,
    );
    let cost = pricing.compute_cost_micro(r.accel_s);
    let t = |name: &str| {
        r.timings
            .iter()
            .filter(|(s, _)| s == name)
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    let amount = if delivered {
        charge.amount_micro
    } else {
        -charge.amount_micro
    };
    let class = ResClass::of(info.width, info.height).as_str().to_string();
    let billing = BillingRow {
        job_id: r.job_id.clone(),
        tenant: r.tenant.clone(),
        tier: info.tier.as_str().into(),
        resolution_class: class.clone(),
        width: info.width,
        height: info.height,
        kind: if delivered { "charge" } else { "credit" }.into(),
        billed_ms: charge.billed_ms,
        unit_micro_per_s: charge.unit_micro_per_s,
        amount_micro: amount,
        price_version: charge.price_version.clone(),
        accelerator_s: r.accel_s,
        compute_cost_micro: cost,
        ts_ms: now,
    };
    let n = r.batch_sizes.len().max(1) as f64;
    let metrics = MetricsRow {
        job_id: r.job_id.clone(),
        tenant: r.tenant.clone(),
        tier: info.tier.as_str().into(),
        status: r.status.clone(),
        queue_wait_ms: info.admitted_ms.saturating_sub(info.submitted_ms),
        encode_s: t("encode"),
        denoise_s: t("denoise"),
        decode_s: t("decode"),
        output_s: t("output"),
        steps: r.batch_sizes.len() as u32,
        batch_max: r.batch_sizes.iter().copied().max().unwrap_or(0) as u32,
        batch_mean: r.batch_sizes.iter().sum::<usize>() as f64 / n,
        accelerator_s: r.accel_s,
        accelerator: pricing.accelerator.clone(),
        peak_rss_bytes: peak_rss_bytes(),
        est_vram_bytes: info.est_vram_bytes,
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
        tier: info.tier.as_str().into(),
        kind: info.kind.into(),
        status: r.status.clone(),
        error: r.error.clone(),
        width: info.width,
        height: info.height,
        frames: info.frames,
        fps: info.fps,
        resolution_class: class,
        output_key: r.key.clone(),
        size: r.size,
        sha256: r.sha256.clone(),
        untrained: r.untrained,
        submitted_ms: info.submitted_ms,
        finished_ms: now,
    };
    JobRecord {
        job_id: r.job_id.clone(),
        tenant: r.tenant.clone(),
        status: r.status.clone(),
        error: r.error.clone(),
        stage: r.failed_stage.map(|s| s.as_str().to_string()),
        cancelled_at: r.cancelled_at,
        key: r.key.clone(),
        size: r.size,
        sha256: r.sha256.clone(),
        untrained: r.untrained,
        finished_ms: now,
        timings: r.timings.clone(),
        batch_sizes: r.batch_sizes.clone(),
        commit_id: vidflow_operators::generate_job_id(),
        billing: Some(billing),
        metrics: Some(metrics),
        job: Some(job),
        safety: r
            .safety
            .iter()
            .map(|d| {
                vidflow_connectors::safety_rows::SafetyRow::from_decision(
                    &r.job_id, &r.tenant, d, now,
                )
            })
            .collect(),
    }
}

impl Committer {
    /// Commits results as they leave the graph, each on its own task (a
    /// slow fsync must not hold the others). Store failures are retried
    /// with back-off: the message stays unacked meanwhile.
    pub async fn run(self, mut results: UnboundedReceiver<JobResult>) {
        let me = Arc::new(self);
        let slots = Arc::new(tokio::sync::Semaphore::new(64));
        while let Some(r) = results.recv().await {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let me = me.clone();
            tokio::spawn(async move {
                let _permit = permit;
                me.commit(r).await;
            });
        }
    }

    async fn commit(&self, r: JobResult) {
        // (Removed either way: a job stopped too late to take effect
        // finished normally.)
        let was_stopped = self
            .timed_out
            .lock()
            .map(|mut t| t.remove(&r.job_id))
            .unwrap_or(false);
        let timed_out = was_stopped && r.status == "cancelled";
        if timed_out {
            // Hand the job back: the broker redelivers it, the retry
            // resumes from its last checkpoint, and the attempt count
            // bounds the retries (then: dead letter + credit).
            if let Some(e) = &self.engine {
                e.uncancel(&r.job_id);
            }
            let job = self
                .inflight
                .lock()
                .ok()
                .and_then(|mut m| m.remove(&r.job_id));
            if let Some(j) = job {
                self.quotas.finish(&j.tenant, &r.job_id, false);
                tracing::warn!(job_id = %r.job_id, "generation timeout: handed back for a retry");
                for a in j.ackers {
                    let _ = a
                        .nack(vidflow_connectors::lapin::options::BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await;
                }
            }
            return;
        }
        let info = self
            .inflight
            .lock()
            .ok()
            .and_then(|m| m.get(&r.job_id).map(|j| j.info.clone()));
        let Some(info) = info else {
            tracing::error!(job_id = %r.job_id, "finished job is not in flight; not committed");
            return;
        };
        let rec = build_record(&r, &info, &self.pricing);
        let mut attempt = 0;
        let rec = loop {
            match create_record(&self.store, &rec).await {
                Ok(won) => break won,
                Err(e) => {
                    tracing::error!(job_id = %rec.job_id, error = %e, attempt, "writing the job record failed; retrying");
                    tokio::time::sleep(vidflow_connectors::amqp::backoff(attempt)).await;
                    attempt += 1;
                }
            }
        };
        // Finished: its checkpoints and attempt count are no longer needed.
        if let Some(ck) = &self.checkpoints {
            ck.clear(&rec.tenant, &rec.job_id);
        }
        if let Ok(k) = attempts_key(&rec.tenant, &rec.job_id) {
            use object_store::ObjectStoreExt;
            let _ = self.store.object_store().delete(&k).await;
        }
        let sinks = self.sinks.clone();
        let row = rec.clone();
        let mut attempt = 0;
        loop {
            let (s, row) = (sinks.clone(), row.clone());
            match tokio::task::spawn_blocking(move || s.append(&row)).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) => {
                    tracing::error!(job_id = %rec.job_id, error = %e, attempt, "analytics outbox append failed; retrying")
                }
                Err(e) => {
                    tracing::error!(job_id = %rec.job_id, error = %e, "analytics outbox task failed; retrying")
                }
            }
            tokio::time::sleep(vidflow_connectors::amqp::backoff(attempt)).await;
            attempt += 1;
        }
        crate::faults::point("after_commit");
        self.metrics.finished(&rec.status);
        for (stage, t) in &rec.timings {
            self.metrics.stage(stage, *t);
        }
        self.metrics.accelerator(r.accel_s);
        tracing::info!(
            job_id = %rec.job_id,
            tenant = %rec.tenant,
            status = %rec.status,
            amount_micro = rec.billing.as_ref().map(|b| b.amount_micro).unwrap_or(0),
            "job committed"
        );
        let _ = self
            .out
            .send(Outbound::Terminal(terminal_event(&rec, false)));
    }
}

/// Where a job's count of started runs is kept.
pub(crate) fn attempts_key(tenant: &str, job_id: &str) -> Result<object_store::path::Path, String> {
    if !vidflow_operators::id::is_safe_id(tenant) || !vidflow_operators::id::is_safe_id(job_id) {
        return Err("unsafe id".into());
    }
    Ok(object_store::path::Path::from(format!(
        "attempts/{tenant}/{job_id}"
    )))
}

/// Counts one more started run of a job and returns the runs before it.
pub(crate) async fn bump_attempts(
    store: &OutputStore,
    tenant: &str,
    job_id: &str,
) -> Result<u32, String> {
    let key = attempts_key(tenant, job_id)?;
    let before = match store.get(&key).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().parse().unwrap_or(0),
        Err(e) if e.is_not_found() => 0,
        Err(e) => return Err(e.to_string()),
    };
    store
        .put_atomic(&key, (before + 1).to_string().into_bytes())
        .await
        .map_err(|e| e.to_string())?;
    Ok(before)
}
