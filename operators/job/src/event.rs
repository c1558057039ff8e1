//! Job events: what users see of a job while it runs. The pipeline emits
//! them; `vidflow serve` publishes them (wrapped in [`EventEnvelope`]) to the
//! events exchange, where the gRPC API and any other consumer read them.
//! They live here, beside the job model, so publishers and readers in
//! different crates share one wire format.

use serde::{Deserialize, Serialize};

/// The pipeline stage a progress event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Admit,
    /// Waiting for a denoising slot in the worker's scheduler (before its
    /// first step, or after it yielded to a more urgent job).
    Queued,
    /// The prompt check (before any compute) or the frame check (after decode).
    Safety,
    Encode,
    Denoise,
    Decode,
    Output,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Admit => "admit",
            Stage::Queued => "queued",
            Stage::Safety => "safety",
            Stage::Encode => "encode",
            Stage::Denoise => "denoise",
            Stage::Decode => "decode",
            Stage::Output => "output",
        }
    }
}

/// Compares with the wire name (`"encode"`, ...).
impl PartialEq<str> for Stage {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Stage {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    /// Admitted into the pipeline. (The tenant travels beside the event:
    /// in [`EventEnvelope::tenant`] on the wire.)
    Accepted {
        job_id: String,
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
    /// The job never entered the pipeline: its message could not be decoded
    /// or its spec failed validation. `field` names the spec field at fault
    /// (`payload` when the message itself is unreadable).
    Rejected {
        job_id: String,
        field: String,
        error: String,
    },
}

impl JobEvent {
    pub fn job_id(&self) -> &str {
        match self {
            JobEvent::Accepted { job_id, .. }
            | JobEvent::Progress { job_id, .. }
            | JobEvent::Completed { job_id, .. }
            | JobEvent::Failed { job_id, .. }
            | JobEvent::Cancelled { job_id, .. }
            | JobEvent::Rejected { job_id, .. } => job_id,
        }
    }

    /// The event's name, as in its JSON `event` field and routing key.
    pub fn name(&self) -> &'static str {
        match self {
            JobEvent::Accepted { .. } => "accepted",
            JobEvent::Progress { .. } => "progress",
            JobEvent::Completed { .. } => "completed",
            JobEvent::Failed { .. } => "failed",
            JobEvent::Cancelled { .. } => "cancelled",
            JobEvent::Rejected { .. } => "rejected",
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobEvent::Completed { .. }
                | JobEvent::Failed { .. }
                | JobEvent::Cancelled { .. }
                | JobEvent::Rejected { .. }
        )
    }
}

/// An event as published on the events exchange: the event's own fields
/// plus who it belongs to and when it was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub tenant: String,
    /// Milliseconds since the Unix epoch when the event was published.
    pub ts_ms: u64,
    /// A terminal event re-published because its job's message was
    /// delivered again after the job had finished (its result is the stored
    /// one; nothing was generated again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    #[serde(flatten)]
    pub event: JobEvent,
}

impl EventEnvelope {
    /// Topic routing key `job.<tenant>.<job_id>.<event>`: bind
    /// `job.<tenant>.#` to follow a tenant, `job.*.<job_id>.*` for one job.
    /// Tenants and job ids are validated to `[A-Za-z0-9_-]`, so they never
    /// contain the topic separators `.`, `*` or `#`; anything else (a
    /// rejected message's unchecked id) is replaced by `_`.
    pub fn routing_key(&self) -> String {
        routing_key(&self.tenant, self.event.job_id(), self.event.name())
    }
}

/// See [`EventEnvelope::routing_key`].
pub fn routing_key(tenant: &str, job_id: &str, event: &str) -> String {
    fn word(s: &str) -> String {
        let w: String = s
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if w.is_empty() {
            "_".into()
        } else {
            w
        }
    }
    format!("job.{}.{}.{}", word(tenant), word(job_id), event)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_with_flat_fields() {
        let env = EventEnvelope {
            tenant: "acme".into(),
            ts_ms: 5,
            replay: false,
            event: JobEvent::Progress {
                job_id: "j1".into(),
                stage: Stage::Denoise,
                step: 3,
                total: 8,
                eta_s: Some(1.5),
                batch: 2,
            },
        };
        let text = serde_json::to_string(&env).unwrap();
        assert!(text.contains(r#""event":"progress""#), "{text}");
        assert!(!text.contains("replay"), "{text}");
        let back: EventEnvelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back, env);
        assert_eq!(env.routing_key(), "job.acme.j1.progress");
    }

    #[test]
    fn routing_key_words_never_contain_topic_syntax() {
        assert_eq!(routing_key("a.b", "#*", "rejected"), "job.a_b.__.rejected");
        assert_eq!(routing_key("", "", "rejected"), "job._._.rejected");
    }
}
