//! Job events: what users see of a job while it runs. Stages emit them into
//! an [`EventSink`]: a channel the embedded CLI reads, or (in `vidflow
//! serve`) the publisher of the AMQP events exchange.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use vidflow_job::event::{EventEnvelope, JobEvent, Stage};
use vidflow_job::JobKey;

/// Where events go. Sending never fails the pipeline: a consumer that went
/// away must not stop generation.
///
/// The sink also keeps each running job's latest progress and re-sends it
/// (ETA counted down) when a job has been quiet for a second, so users hear
/// about every job at least every 2 s even while one long step, a queue wait
/// or a decode is in progress.
#[derive(Clone)]
pub struct EventSink {
    tx: Option<SendFn>,
    /// Each running job's latest progress, by (tenant, job id).
    live: Arc<Mutex<HashMap<JobKey, (JobEvent, Instant)>>>,
}

/// How long a job may go without an event before its progress is re-sent.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Where a sink delivers each event, with the tenant whose job it is (an
/// event names only the job id, which two tenants may share).
pub type SendFn = Arc<dyn Fn(EventEnvelope) + Send + Sync>;

impl EventSink {
    /// Events go to a channel.
    pub fn new(tx: Sender<JobEvent>) -> Self {
        let tx = Mutex::new(tx);
        Self::from_fn(Arc::new(move |env: EventEnvelope| {
            if let Ok(tx) = tx.lock() {
                let _ = tx.send(env.event);
            }
        }))
    }

    /// Events go to `send`, called on the emitting stage's thread (and the
    /// heartbeat thread): it must not block for long.
    pub fn from_fn(send: SendFn) -> Self {
        let sink = EventSink {
            tx: Some(send),
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
                for (key, (ev, last)) in live.iter_mut() {
                    if now.duration_since(*last) >= HEARTBEAT {
                        if let JobEvent::Progress { eta_s, .. } = ev {
                            *eta_s = eta_s
                                .map(|e| (e - now.duration_since(*last).as_secs_f64()).max(0.0));
                        }
                        if let Some(tx) = &tx {
                            tx(envelope(&key.tenant, ev.clone()));
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

    /// Sends `e`, an event of `tenant`'s job.
    pub fn emit(&self, tenant: &str, e: JobEvent) {
        tracing::debug!(tenant = %tenant, job_id = e.job_id(), event = ?e, "job event");
        let key = JobKey::new(tenant, e.job_id());
        if let Ok(mut live) = self.live.lock() {
            if e.is_terminal() {
                live.remove(&key);
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
                live.insert(key, (beat, Instant::now()));
            }
        }
        if let Some(tx) = &self.tx {
            tx(envelope(tenant, e));
        }
    }
}

fn envelope(tenant: &str, event: JobEvent) -> EventEnvelope {
    EventEnvelope {
        tenant: tenant.to_string(),
        ts_ms: vidflow_job::event::now_ms(),
        replay: false,
        event,
    }
}
