//! `GET /v1/usage?days=N`: the caller's charges per day and tier, from the
//! ledger entries of its job records (the same rows billing and the
//! Parquet `billing` dataset hold), summed in exact micro-dollars.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::auth::Caller;
use super::video::usd;
use super::{AppState, HttpError};

#[derive(Debug, Serialize)]
pub struct UsageDay {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    pub tier: String,
    pub jobs: u64,
    pub video_seconds: f64,
    pub amount_usd: String,
    pub amount_micro: i64,
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub object: &'static str,
    pub currency: &'static str,
    pub days: u32,
    pub data: Vec<UsageDay>,
    pub total_usd: String,
    pub total_micro: i64,
    pub total_video_seconds: f64,
}

fn date_of_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|d| d.date_naive().to_string())
        .unwrap_or_default()
}

pub async fn usage(
    State(st): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Usage>, HttpError> {
    HttpError::only_params(&q, &["days"])?;
    let days = match q.get("days") {
        None => 30,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=366).contains(&n) => n,
            _ => {
                return Err(HttpError::invalid(
                    "days",
                    format!("invalid days = {v:?}: 1 to 366"),
                ))
            }
        },
    };
    let since = vidflow_job::event::now_ms().saturating_sub(days as u64 * 86_400_000);
    let since_date = date_of_ms(since);
    let records = st
        .jobs
        .deps
        .state
        .list_records(&caller.tenant)
        .await
        .map_err(|e| {
            HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                e.to_string(),
            )
        })?;
    // (date, tier) -> (jobs, billed ms, micro-dollars)
    let mut sums: BTreeMap<(String, String), (u64, u64, i64)> = BTreeMap::new();
    for r in &records {
        let Some(b) = r.charge() else { continue };
        let date = date_of_ms(b.ts_ms);
        if date < since_date {
            continue;
        }
        let e = sums.entry((date, b.tier.clone())).or_default();
        e.0 += 1;
        e.1 += b.billed_ms;
        e.2 += b.amount_micro;
    }
    let total_micro: i64 = sums.values().map(|v| v.2).sum();
    let total_ms: u64 = sums.values().map(|v| v.1).sum();
    Ok(Json(Usage {
        object: "usage",
        currency: "usd",
        days,
        data: sums
            .into_iter()
            .map(|((date, tier), (jobs, ms, micro))| UsageDay {
                date,
                tier,
                jobs,
                video_seconds: ms as f64 / 1000.0,
                amount_usd: usd(micro),
                amount_micro: micro,
            })
            .collect(),
        total_usd: usd(total_micro),
        total_micro,
        total_video_seconds: total_ms as f64 / 1000.0,
    }))
}
