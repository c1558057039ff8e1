//! Job events: what users see of a job while it runs. Stages emit them into
//! an [`EventSink`]: a channel the embedded CLI reads, or (in `vidflow
//! serve`) the publisher of the AMQP events exchange.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use vidflow_job::event::{JobEvent, Stage};

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
    live: Arc<Mutex<HashMap<String, (JobEvent, Instant)>>>,
}

/// How long a job may go without an event before its progress is re-sent.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Where a sink delivers each event.
pub type SendFn = Arc<dyn Fn(JobEvent) + Send + Sync>;

impl EventSink {
    /// Events go to a channel.
    pub fn new(tx: Sender<JobEvent>) -> Self {
        let tx = Mutex::new(tx);
        Self::from_fn(Arc::new(move |e| {
            if let Ok(tx) = tx.lock() {
                let _ = tx.send(e);
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
                for (ev, last) in live.values_mut() {
                    if now.duration_since(*last) >= HEARTBEAT {
                        if let JobEvent::Progress { eta_s, .. } = ev {
                            *eta_s = eta_s
                                .map(|e| (e - now.duration_since(*last).as_secs_f64()).max(0.0));
                        }
                        if let Some(tx) = &tx {
                            tx(ev.clone());
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
            tx(e);
        }
    }
}
