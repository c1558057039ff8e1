//! The `safety` analytics table: one row per safety decision (the prompt
//! check, and the frame check when the job got that far), so block rates,
//! categories and policy versions can be queried next to billing.

use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Field};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::sinks::{batch, f64s, strings, ts, ts_field};

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
    pub fn from_decision(
        job_id: &str,
        tenant: &str,
        d: &vidflow_operators::safety::Decision,
        ts_ms: u64,
    ) -> SafetyRow {
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

pub(crate) fn safety_batch(r: &[&SafetyRow]) -> RecordBatch {
    let s = |f: fn(&SafetyRow) -> &str| strings(r.iter().map(move |x| f(x)));
    let blocked: ArrayRef = Arc::new(BooleanArray::from_iter(
        r.iter().map(|x| Some(x.decision == "block")),
    ));
    batch(
        vec![
            Field::new("job_id", DataType::Utf8, false),
            Field::new("tenant", DataType::Utf8, false),
            Field::new("stage", DataType::Utf8, false),
            Field::new("decision", DataType::Utf8, false),
            Field::new("blocked", DataType::Boolean, false),
            Field::new("category", DataType::Utf8, false),
            Field::new("reason", DataType::Utf8, false),
            Field::new("scores_json", DataType::Utf8, false),
            Field::new("policy_version", DataType::Utf8, false),
            Field::new("model_versions", DataType::Utf8, false),
            Field::new("latency_ms", DataType::Float64, false),
            ts_field("ts"),
        ],
        vec![
            s(|x| &x.job_id),
            s(|x| &x.tenant),
            s(|x| &x.stage),
            s(|x| &x.decision),
            blocked,
            s(|x| &x.category),
            s(|x| &x.reason),
            s(|x| &x.scores_json),
            s(|x| &x.policy_version),
            s(|x| &x.model_versions),
            f64s(r.iter().map(|x| x.latency_ms)),
            ts(r.iter().map(|x| x.ts_ms)),
        ],
    )
}
