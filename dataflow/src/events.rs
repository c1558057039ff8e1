//! Job events: what users see of a job while it runs. Stages publish them on
//! a channel that the embedded CLI (and later the AMQP event exchange) reads.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The pipeline stage a progress event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Admit,
    Encode,
    Denoise,
    Decode,
    Output,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    Accepted {
        job_id: String,
        tenant: String,
    },
    /// `step`/`total` count denoising steps; other stages report 0/1 or 1/1.
    Progress {
        job_id: String,
        stage: Stage,
        step: usize,
        total: usize,
        eta_s: Option<f64>,
        /// Jobs denoised together in the step just taken (denoise only).
        batch: usize,
    },
    Completed {
        job_id: String,
        key: String,
        size: u64,
        sha256: String,
        /// The output came from the built-in untrained model.
        untrained: bool,
    },
    Failed {
        job_id: String,
        stage: Stage,
        error: String,
    },
    Cancelled {
        job_id: String,
        step: usize,
    },
}

impl JobEvent {
    pub fn job_id(&self) -> &str {
        match self {
            JobEvent::Accepted { job_id, .. }
            | JobEvent::Progress { job_id, .. }
            | JobEvent::Completed { job_id, .. }
            | JobEvent::Failed { job_id, .. }
            | JobEvent::Cancelled { job_id, .. } => job_id,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobEvent::Completed { .. } | JobEvent::Failed { .. } | JobEvent::Cancelled { .. }
        )
    }
}

/// Where events go. Sending never fails the pipeline: a consumer that went
/// away must not stop generation.
///
/// The sink also keeps each running job's latest progress and re-sends it
/// (ETA counted down) when a job has been quiet for a second, so users hear
/// about every job at least every 2 s even while one long step, a queue wait
/// or a decode is in progress.
#[derive(Clone)]
pub struct EventSink {
    tx: Option<Sender<JobEvent>>,
    live: Arc<Mutex<HashMap<String, (JobEvent, Instant)>>>,
}

/// How long a job may go without an event before its progress is re-sent.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

impl EventSink {
    pub fn new(tx: Sender<JobEvent>) -> Self {
        let sink = EventSink {
            tx: Some(tx),
            live: Arc::new(Mutex::new(HashMap::new())),
        };
        let weak = Arc::downgrade(&sink.live);
        let tx = sink.tx.clone();
        let _ = std::thread::Builder::new()
            .name("vidflow-heartbeat".into())
            .spawn(move || loop {
                std::thread::sleep(HEARTBEAT / 4);
                // Stops once every clone of the sink is gone.
                let Some(live) = weak.upgrade() else { return };
                let Ok(mut live) = live.lock() else { return };
                let now = Instant::now();
                for (ev, last) in live.values_mut() {
                    if now.duration_since(*last) >= HEARTBEAT {
                        if let JobEvent::Progress { eta_s, .. } = ev {
                            *eta_s = eta_s
                                .map(|e| (e - now.duration_since(*last).as_secs_f64()).max(0.0));
                        }
                        if let Some(tx) = &tx {
                            let _ = tx.send(ev.clone());
                        }
                        *last = now;
                    }
                }
            });
        sink
    }

    pub fn discard() -> Self {
        EventSink {
            tx: None,
            live: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn emit(&self, e: JobEvent) {
        tracing::debug!(job_id = e.job_id(), event = ?e, "job event");
        if let Ok(mut live) = self.live.lock() {
            if e.is_terminal() {
                live.remove(e.job_id());
            } else if self.tx.is_some() {
                let mut beat = e.clone();
                if let JobEvent::Accepted { job_id, .. } = &e {
                    beat = JobEvent::Progress {
                        job_id: job_id.clone(),
                        stage: Stage::Admit,
                        step: 0,
                        total: 0,
                        eta_s: None,
                        batch: 0,
                    };
                }
                if let JobEvent::Progress { batch, .. } = &mut beat {
                    *batch = 0;
                }
                live.insert(e.job_id().to_string(), (beat, Instant::now()));
            }
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(e);
        }
    }
}
