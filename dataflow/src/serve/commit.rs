//! The commit of a finished job ([`Committer::commit`]): the job record
//! with its ledger entry and analytics rows (built by
//! `vidflow_operators::ledger::JobRecord::commit`; created once: the first
//! commit of a job wins, so a job is charged once however often it runs),
//! the analytics outbox, then the terminal event whose broker confirm acks
//! the message and frees the job's quota slot.

use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use vidflow_connectors::sinks::Sinks;
use vidflow_connectors::state::{Committed, StateStore};
use vidflow_operators::billing::Pricing;
use vidflow_operators::event::now_ms;
use vidflow_operators::faults::{self, Fault};
use vidflow_operators::ledger::{JobRecord, Machine};
use vidflow_operators::{JobResult, JobStatus};

use super::metrics::Finished;
use super::{terminal_event, InFlightMap, Outbound};
use crate::graph::Results;

/// The graph's exit in `serve`: every result the graph delivers goes onto
/// the committer's queue, in the order the graph finished them.
pub(crate) fn graph_results(queue: UnboundedSender<JobResult>) -> Results {
    Results::new(move |r| {
        let _ = queue.send(r);
    })
}

pub(crate) struct Committer {
    pub timed_out: super::TimedOut,
    pub engine: Option<Arc<crate::engine::Engine>>,
    pub checkpoints: Option<vidflow_operators::checkpoint::Checkpoints>,
    pub metrics: Arc<super::metrics::Metrics>,
    /// Records, ledger, attempts, reservations, leases (local or shared).
    pub state: StateStore,
    pub pricing: Arc<Pricing>,
    pub sinks: Arc<Sinks>,
    pub inflight: InFlightMap,
    pub out: UnboundedSender<Outbound>,
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

    /// The commit of one finished job, in the documented order: its
    /// output is already stored (the output stage); the record with its
    /// ledger entry is created (first commit wins); the analytics outbox
    /// gets its rows; then the terminal event goes to the session, whose
    /// broker confirm acks the job's deliveries (`Session::publish_terminal`).
    async fn commit(&self, r: JobResult) {
        if self.hand_back_if_timed_out(&r).await {
            return;
        }
        let Some(Committed { record: rec, first }) = self.write_record(&r).await else {
            return;
        };
        // The job ended: a cancel sent for it must not outlive it (a later
        // job with the same tenant and id would inherit it).
        if let Some(e) = &self.engine {
            e.forget_cancel(&r.key());
        }
        // Only the commit that won writes the job's analytics rows and
        // announces it as new; another node's earlier commit stands, and
        // this one replays it.
        if first {
            self.append_outbox(&rec).await;
        } else {
            tracing::warn!(tenant = %rec.tenant, job_id = %rec.job_id, "job already committed elsewhere: replaying that record");
        }
        faults::point(Fault::AfterCommit);
        self.count(&rec, r.accel_s);
        let _ = self
            .out
            .send(Outbound::Terminal(terminal_event(&rec, !first)));
    }

    /// A job stopped for running over its tier's timeout is not committed:
    /// it goes back to the broker, and the retry resumes from its last
    /// checkpoint (the attempt count bounds the retries, then: dead letter
    /// and credit).
    async fn hand_back_if_timed_out(&self, r: &JobResult) -> bool {
        // (Removed either way: a job stopped too late to take effect
        // finished normally.)
        let key = r.key();
        let was_stopped = self
            .timed_out
            .lock()
            .map(|mut t| t.remove(&key))
            .unwrap_or(false);
        if !(was_stopped && r.status == JobStatus::Cancelled) {
            return false;
        }
        if let Some(e) = &self.engine {
            e.forget_cancel(&key);
        }
        let job = self.inflight.lock().ok().and_then(|mut m| m.remove(&key));
        if let Some(j) = job {
            // Its reservation stays: the redelivery takes it up again
            // rather than queueing behind (or being refused by) the quota.
            // The lease goes: any node may take the job up.
            if let Err(e) = self.state.hand_back(&key).await {
                tracing::warn!(job_id = %r.job_id, error = %e, "could not keep the handed-back job's reservation");
            }
            if let Err(e) = self.state.release_lease(&key).await {
                tracing::warn!(job_id = %r.job_id, error = %e, "could not release the handed-back job's lease");
            }
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
        true
    }

    /// The job's record and ledger entry, created once (a store failure is
    /// retried with back-off; the message stays unacked meanwhile). Returns
    /// the record that won: an earlier commit's if there was one.
    async fn write_record(&self, r: &JobResult) -> Option<Committed> {
        let terms = self
            .inflight
            .lock()
            .ok()
            .and_then(|m| m.get(&r.key()).map(|j| j.terms.clone()));
        let Some(terms) = terms else {
            tracing::error!(job_id = %r.job_id, "finished job is not in flight; not committed");
            return None;
        };
        let at = Machine {
            now_ms: now_ms(),
            peak_rss_bytes: super::metrics::peak_rss_bytes("self"),
        };
        let commit_id = vidflow_operators::generate_job_id();
        let rec = JobRecord::commit(r, &terms, &self.pricing, at, commit_id);
        let mut attempt = 0;
        let won = loop {
            match self.state.commit_record(&rec).await {
                Ok(won) => break won,
                Err(e) => {
                    tracing::error!(job_id = %rec.job_id, error = %e, attempt, "writing the job record failed; retrying");
                    tokio::time::sleep(vidflow_connectors::amqp::backoff(attempt)).await;
                    attempt += 1;
                }
            }
        };
        // Finished: its checkpoints are no longer needed (the commit ended
        // its attempt count and lease; a failure here leaves garbage, never
        // a wrong answer).
        if let Some(ck) = &self.checkpoints {
            ck.clear_async(&rec.tenant, &rec.job_id).await;
        }
        Some(won)
    }

    /// The record's analytics rows into the fsync'd outbox (retried until
    /// it succeeds: the rows must reach Parquet before the ack).
    async fn append_outbox(&self, rec: &JobRecord) {
        let mut attempt = 0;
        loop {
            let (s, row) = (self.sinks.clone(), rec.clone());
            match tokio::task::spawn_blocking(move || s.append(&row)).await {
                Ok(Ok(())) => return,
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
    }

    /// Prometheus counters and the log line of a committed job.
    fn count(&self, rec: &JobRecord, accel_s: f64) {
        self.metrics.finished(Finished::Job(rec.status));
        for (stage, t) in &rec.timings {
            self.metrics.stage(*stage, *t);
        }
        self.metrics.accelerator(accel_s);
        tracing::info!(
            job_id = %rec.job_id,
            tenant = %rec.tenant,
            status = %rec.status,
            amount_micro = rec.billing.as_ref().map(|b| b.amount_micro).unwrap_or(0),
            stage = ?rec.stage,
            error = rec.error.as_deref().unwrap_or(""),
            "job committed"
        );
    }
}
