//! `POST /v1/videos`, `GET /v1/videos`, `GET /v1/videos/{id}`,
//! `POST /v1/videos/{id}/cancel`.

use std::collections::HashMap;

use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;

use super::auth::Caller;
use super::create;
use super::video::{Video, VideoStatus};
use super::{AppState, HttpError};
use crate::api::pb::JobStatus;
use crate::meta;

/// The most an `input_reference` part or any text part may hold is the
/// body limit itself; the body limit bounds them all together.
const IDEMPOTENCY_KEY_MAX: usize = 256;

/// The video object of `s`, with what was asked for and, once finished,
/// its record.
pub(super) async fn video_of(
    st: &AppState,
    tenant: &str,
    s: &JobStatus,
    details: bool,
) -> Result<Video, HttpError> {
    let store = &st.jobs.deps.store;
    let m = meta::read(store, tenant, &s.job_id).await.map_err(|e| {
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            e.to_string(),
        )
    })?;
    let status = VideoStatus::of(s.state());
    let record = if status.is_terminal() {
        st.jobs
            .deps
            .state
            .read_record(tenant, &s.job_id)
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    Ok(Video::build(s, m.as_ref(), record.as_ref(), details))
}

async fn read_body(st: &AppState, req: Request) -> Result<create::CreateVideo, HttpError> {
    let limit = st.opts.max_body_bytes;
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ctype.starts_with("application/json") {
        let body = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| HttpError::too_large(limit))?;
        return create::parse_json(&body);
    }
    if ctype.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(req, st)
            .await
            .map_err(|e| HttpError::invalid("(body)", format!("not a multipart form: {e}")))?;
        let mut texts = Vec::new();
        let mut image = None;
        let too_large = |e: &axum::extract::multipart::MultipartError| {
            e.status() == StatusCode::PAYLOAD_TOO_LARGE
        };
        loop {
            let field = match form.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) if too_large(&e) => return Err(HttpError::too_large(limit)),
                Err(e) => {
                    return Err(HttpError::invalid(
                        "(body)",
                        format!("bad multipart form: {e}"),
                    ))
                }
            };
            let name = field.name().unwrap_or("").to_string();
            if name == "input_reference" {
                if image.is_some() {
                    return Err(HttpError::invalid(
                        "input_reference",
                        "input_reference given twice",
                    ));
                }
                let bytes = field.bytes().await.map_err(|e| {
                    if too_large(&e) {
                        HttpError::too_large(limit)
                    } else {
                        HttpError::invalid(
                            "input_reference",
                            format!("reading input_reference: {e}"),
                        )
                    }
                })?;
                image = Some(bytes.to_vec());
            } else {
                let text = field.text().await.map_err(|e| {
                    if too_large(&e) {
                        HttpError::too_large(limit)
                    } else {
                        HttpError::invalid(&name, format!("reading {name}: {e}"))
                    }
                })?;
                texts.push((name, text));
            }
        }
        return create::from_form(texts, image);
    }
    Err(HttpError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("Content-Type {ctype:?}: send application/json or multipart/form-data"),
    ))
}

pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    req: Request,
) -> Result<Json<Video>, HttpError> {
    let key = match headers.get("idempotency-key") {
        Some(v) => {
            let k = v.to_str().map_err(|_| {
                HttpError::invalid("Idempotency-Key", "Idempotency-Key: visible ASCII only")
            })?;
            if k.is_empty() || k.len() > IDEMPOTENCY_KEY_MAX {
                return Err(HttpError::invalid(
                    "Idempotency-Key",
                    format!("Idempotency-Key: 1 to {IDEMPOTENCY_KEY_MAX} characters"),
                ));
            }
            Some(k.to_string())
        }
        None => None,
    };
    let body = read_body(&st, req).await?;
    let spec = create::to_spec(body, &caller.tenant, &st.jobs.deps.admission)?;
    let sub = st
        .jobs
        .submit(&caller.tenant, spec, key.as_deref(), "http")
        .await?;
    let s = st.jobs.lookup(&caller.tenant, &sub.job_id).await?;
    Ok(Json(video_of(&st, &caller.tenant, &s, false).await?))
}

pub async fn retrieve(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Video>, HttpError> {
    let details = match q.get("include").map(String::as_str) {
        None => false,
        Some("details") => true,
        Some(other) => {
            return Err(HttpError::invalid(
                "include",
                format!("invalid include = {other:?}: only \"details\""),
            ))
        }
    };
    HttpError::only_params(&q, &["include"])?;
    let s = st.jobs.lookup(&caller.tenant, &id).await?;
    Ok(Json(video_of(&st, &caller.tenant, &s, details).await?))
}

pub async fn cancel(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Video>, HttpError> {
    let s = st.jobs.lookup(&caller.tenant, &id).await?;
    if VideoStatus::of(s.state()).is_terminal() {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            "video_finished",
            format!(
                "video {id:?} has already finished ({:?})",
                VideoStatus::of(s.state())
            ),
        ));
    }
    let s = st.jobs.cancel(&caller.tenant, &id, "http").await?;
    Ok(Json(video_of(&st, &caller.tenant, &s, false).await?))
}

#[derive(Serialize)]
pub struct VideoList {
    pub object: &'static str,
    pub data: Vec<Video>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<VideoList>, HttpError> {
    HttpError::only_params(&q, &["after", "limit", "order"])?;
    let limit = match q.get("limit") {
        None => 20,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return Err(HttpError::invalid(
                    "limit",
                    format!("invalid limit = {v:?}: 1 to 100"),
                ))
            }
        },
    };
    let asc = match q.get("order").map(String::as_str) {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(o) => {
            return Err(HttpError::invalid(
                "order",
                format!("invalid order = {o:?}: \"asc\" or \"desc\""),
            ))
        }
    };
    let mut jobs = st.jobs.list(&caller.tenant).await?;
    if asc {
        jobs.reverse();
    }
    let start = match q.get("after") {
        None => 0,
        Some(after) => match jobs.iter().position(|s| &s.job_id == after) {
            Some(i) => i + 1,
            None => {
                return Err(HttpError::invalid(
                    "after",
                    format!("invalid after = {after:?}: not one of your videos"),
                ))
            }
        },
    };
    let rest = &jobs[start.min(jobs.len())..];
    let page = &rest[..limit.min(rest.len())];
    let mut data = Vec::with_capacity(page.len());
    for s in page {
        data.push(video_of(&st, &caller.tenant, s, false).await?);
    }
    Ok(Json(VideoList {
        object: "list",
        first_id: data.first().map(|v| v.id.clone()),
        last_id: data.last().map(|v| v.id.clone()),
        has_more: rest.len() > page.len(),
        data,
    }))
}
