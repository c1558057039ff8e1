//! The API's view of jobs: the latest status of every job this server has
//! seen, built from the events exchange (so it covers jobs run by any serve
//! process), plus change notifications for `Watch`. Finished jobs also have
//! durable records (`records.rs`); this table is only a cache in front.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;
use vidflow_job::event::{EventEnvelope, JobEvent, Stage};

use super::pb::{JobState, JobStatus};
use vidflow_job::ledger::JobRecord;
use vidflow_job::JobStatus as Outcome;

/// Entries kept before finished ones are pruned (oldest first).
const MAX_ENTRIES: usize = 50_000;

pub struct JobTable {
    jobs: Mutex<HashMap<String, JobStatus>>,
    changes: broadcast::Sender<JobStatus>,
}

impl Default for JobTable {
    fn default() -> Self {
        JobTable {
            jobs: Mutex::new(HashMap::new()),
            changes: broadcast::channel(4096).0,
        }
    }
}

pub fn is_terminal(s: JobState) -> bool {
    matches!(
        s,
        JobState::Completed | JobState::Failed | JobState::Cancelled | JobState::Rejected
    )
}

impl JobTable {
    pub fn get(&self, tenant: &str, job_id: &str) -> Option<JobStatus> {
        self.jobs.lock().ok()?.get(&slot(tenant, job_id)).cloned()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobStatus> {
        self.changes.subscribe()
    }

    /// Inserts a queued job unless the id is already known; returns the
    /// existing status when it is (an idempotent resubmit).
    pub fn insert_queued(&self, tenant: &str, job_id: &str) -> Option<JobStatus> {
        let mut jobs = self.jobs.lock().ok()?;
        if let Some(s) = jobs.get(&slot(tenant, job_id)) {
            return Some(s.clone());
        }
        let s = JobStatus {
            job_id: job_id.to_string(),
            tenant: tenant.to_string(),
            state: JobState::Queued as i32,
            updated_ms: vidflow_job::event::now_ms(),
            created_ms: vidflow_job::event::now_ms(),
            ..Default::default()
        };
        jobs.insert(slot(tenant, job_id), s.clone());
        Self::prune(&mut jobs);
        drop(jobs);
        let _ = self.changes.send(s);
        None
    }

    /// Sets when the job was submitted (the time its summary records).
    pub fn set_created(&self, tenant: &str, job_id: &str, created_ms: u64) {
        if let Ok(mut jobs) = self.jobs.lock() {
            if let Some(s) = jobs.get_mut(&slot(tenant, job_id)) {
                s.created_ms = created_ms;
            }
        }
    }

    /// Forgets a queued entry whose publish failed.
    pub fn remove(&self, tenant: &str, job_id: &str) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.remove(&slot(tenant, job_id));
        }
    }

    /// Folds an event into the table. Non-terminal events for a finished
    /// job (a late heartbeat) are ignored.
    pub fn apply(&self, env: &EventEnvelope) {
        let Ok(mut jobs) = self.jobs.lock() else {
            return;
        };
        let id = env.event.job_id().to_string();
        let s = jobs
            .entry(slot(&env.tenant, &id))
            .or_insert_with(|| JobStatus {
                job_id: id.clone(),
                tenant: env.tenant.clone(),
                state: JobState::Queued as i32,
                // Submitted elsewhere: the first event seen is the best
                // estimate of when.
                created_ms: env.ts_ms,
                ..Default::default()
            });
        let done = is_terminal(s.state());
        if done && !env.event.is_terminal() {
            return;
        }
        s.updated_ms = env.ts_ms;
        match &env.event {
            JobEvent::Accepted { .. } => {
                s.set_state(JobState::Running);
                s.stage = "admit".into();
            }
            JobEvent::Progress {
                stage,
                step,
                total,
                eta_s,
                ..
            } => {
                s.set_state(JobState::Running);
                s.stage = stage.as_str().into();
                s.step = *step as u32;
                s.total_steps = *total as u32;
                s.eta_s = *eta_s;
                s.progress = s.progress.max(progress_at(*stage, *step, *total));
            }
            JobEvent::Completed {
                key,
                size,
                sha256,
                untrained,
                ..
            } => {
                s.set_state(JobState::Completed);
                s.stage = "output".into();
                s.progress = 100;
                s.step = s.total_steps;
                s.eta_s = Some(0.0);
                s.output_key = key.clone();
                s.output_size = *size;
                s.sha256 = sha256.clone();
                s.untrained = *untrained;
            }
            JobEvent::Failed { stage, error, .. } => {
                s.set_state(JobState::Failed);
                s.stage = stage.as_str().into();
                s.error = error.clone();
                s.eta_s = None;
            }
            JobEvent::Cancelled { step, .. } => {
                s.set_state(JobState::Cancelled);
                s.step = *step as u32;
                s.error = "cancelled".into();
                s.eta_s = None;
            }
            JobEvent::Rejected { field, error, .. } => {
                s.set_state(JobState::Rejected);
                s.stage = "admit".into();
                s.error = format!("{field}: {error}");
            }
        }
        let out = s.clone();
        drop(jobs);
        let _ = self.changes.send(out);
    }

    /// Every entry of a tenant.
    pub fn of_tenant(&self, tenant: &str) -> Vec<JobStatus> {
        self.jobs
            .lock()
            .map(|j| j.values().filter(|s| s.tenant == tenant).cloned().collect())
            .unwrap_or_default()
    }

    fn prune(jobs: &mut HashMap<String, JobStatus>) {
        if jobs.len() <= MAX_ENTRIES {
            return;
        }
        let mut done: Vec<(u64, String)> = jobs
            .values()
            .filter(|s| is_terminal(s.state()))
            .map(|s| (s.updated_ms, slot(&s.tenant, &s.job_id)))
            .collect();
        done.sort();
        for (_, id) in done.into_iter().take(MAX_ENTRIES / 10) {
            jobs.remove(&id);
        }
    }
}

/// A progress event's share of the job, 0-99: the denoising steps done
/// (other stages report 0/1 or 1/1 of themselves, so they only say where
/// the job is: decoding and output come after every step). 100 is kept for
/// the stored video.
fn progress_at(stage: Stage, step: usize, total: usize) -> u32 {
    match stage {
        Stage::Denoise if total > 0 => (99 * step.min(total) / total) as u32,
        Stage::Decode | Stage::Output => 99,
        _ => 0,
    }
}

/// Jobs are keyed by tenant and id: two tenants may use the same job id
/// and never see each other's job.
fn slot(tenant: &str, job_id: &str) -> String {
    format!("{tenant}/{job_id}")
}

/// The status a stored record stands for.
pub fn status_from_record(r: &JobRecord) -> JobStatus {
    let state = match r.status {
        Outcome::Completed => JobState::Completed,
        Outcome::Cancelled => JobState::Cancelled,
        Outcome::Failed => JobState::Failed,
    };
    JobStatus {
        job_id: r.job_id.clone(),
        tenant: r.tenant.clone(),
        state: state as i32,
        stage: r.stage.map(|s| s.as_str().to_string()).unwrap_or_default(),
        step: r.cancelled_at.unwrap_or(0) as u32,
        total_steps: 0,
        eta_s: None,
        output_key: r.key.clone().unwrap_or_default(),
        output_size: r.size.unwrap_or(0),
        sha256: r.sha256.clone().unwrap_or_default(),
        error: r.error.clone().unwrap_or_default(),
        untrained: r.untrained,
        updated_ms: r.finished_ms,
        created_ms: r.job.as_ref().map(|j| j.submitted_ms).unwrap_or(0),
        progress: if state == JobState::Completed { 100 } else { 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vidflow_job::event::Stage;

    fn env(tenant: &str, event: JobEvent, ts: u64) -> EventEnvelope {
        EventEnvelope {
            tenant: tenant.into(),
            ts_ms: ts,
            replay: false,
            event,
        }
    }

    #[test]
    fn events_move_a_job_through_its_states() {
        let t = JobTable::default();
        assert!(t.insert_queued("a", "j").is_none());
        assert!(t.insert_queued("a", "j").is_some());
        t.apply(&env(
            "a",
            JobEvent::Progress {
                job_id: "j".into(),
                stage: Stage::Denoise,
                step: 2,
                total: 4,
                eta_s: Some(1.0),
                batch: 1,
            },
            2,
        ));
        let s = t.get("a", "j").unwrap();
        assert_eq!(
            (s.state(), s.step, s.total_steps),
            (JobState::Running, 2, 4)
        );
        t.apply(&env(
            "a",
            JobEvent::Completed {
                job_id: "j".into(),
                key: "k".into(),
                size: 3,
                sha256: "h".into(),
                untrained: true,
            },
            3,
        ));
        // A late heartbeat does not reopen it.
        t.apply(&env(
            "a",
            JobEvent::Progress {
                job_id: "j".into(),
                stage: Stage::Denoise,
                step: 3,
                total: 4,
                eta_s: None,
                batch: 0,
            },
            4,
        ));
        let s = t.get("a", "j").unwrap();
        assert_eq!(s.state(), JobState::Completed);
        assert_eq!(s.output_key, "k");
        // Another tenant's job with the same id is a different job.
        t.apply(&env(
            "b",
            JobEvent::Failed {
                job_id: "j".into(),
                stage: Stage::Encode,
                error: "x".into(),
            },
            5,
        ));
        assert_eq!(t.get("a", "j").unwrap().state(), JobState::Completed);
        assert_eq!(t.get("b", "j").unwrap().state(), JobState::Failed);
        assert_eq!(t.of_tenant("a").len(), 1);
    }

    #[test]
    fn progress_counts_denoising_steps_and_never_goes_back() {
        let t = JobTable::default();
        let at = |stage: Stage, step: usize, total: usize, ts: u64| {
            t.apply(&env(
                "a",
                JobEvent::Progress {
                    job_id: "j".into(),
                    stage,
                    step,
                    total,
                    eta_s: None,
                    batch: 1,
                },
                ts,
            ));
            t.get("a", "j").unwrap().progress
        };
        assert_eq!(
            at(Stage::Safety, 0, 1, 1),
            0,
            "the prompt check comes first"
        );
        assert_eq!(at(Stage::Denoise, 1, 4, 2), 24);
        assert_eq!(at(Stage::Denoise, 4, 4, 3), 99);
        assert_eq!(at(Stage::Decode, 0, 1, 4), 99);
        assert_eq!(
            at(Stage::Safety, 0, 1, 5),
            99,
            "the frame check comes after"
        );
        assert_eq!(at(Stage::Queued, 0, 1, 6), 99);
        t.apply(&env(
            "a",
            JobEvent::Completed {
                job_id: "j".into(),
                key: "k".into(),
                size: 1,
                sha256: "h".into(),
                untrained: false,
            },
            7,
        ));
        assert_eq!(t.get("a", "j").unwrap().progress, 100);
    }
}
