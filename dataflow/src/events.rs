//! Job events: what users see of a job while it runs. Stages publish them on
//! a channel that the embedded CLI (and later the AMQP event exchange) reads.

use std::sync::mpsc::Sender;

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
#[derive(Clone)]
pub struct EventSink(Option<Sender<JobEvent>>);

impl EventSink {
    pub fn new(tx: Sender<JobEvent>) -> Self {
        EventSink(Some(tx))
    }

    pub fn discard() -> Self {
        EventSink(None)
    }

    pub fn emit(&self, e: JobEvent) {
        tracing::debug!(job_id = e.job_id(), event = ?e, "job event");
        if let Some(tx) = &self.0 {
            let _ = tx.send(e);
        }
    }
}
