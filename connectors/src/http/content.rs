//! `GET /v1/videos/{id}/content` (`variant=video|thumbnail`, HTTP ranges
//! so a browser can seek) and `DELETE /v1/videos/{id}` (the finished
//! video's content; its record and charge stay).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use serde_json::json;

use super::auth::{Caller, MediaCaller};
use super::video::VideoStatus;
use super::{AppState, HttpError};
use crate::api::pb::JobStatus;
use crate::meta;
use crate::ObjectPath;

/// Thumbnails are made from the first frame of videos up to this size.
const THUMBNAIL_SOURCE_MAX: u64 = 1 << 30;

fn internal(e: impl std::fmt::Display) -> HttpError {
    HttpError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        e.to_string(),
    )
}

/// The stored MP4 of a completed, not deleted video of `tenant`.
async fn stored_video(
    st: &AppState,
    tenant: &str,
    id: &str,
) -> Result<(JobStatus, ObjectPath), HttpError> {
    let s = st.jobs.lookup(tenant, id).await?;
    let status = VideoStatus::of(s.state());
    if status != VideoStatus::Completed {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            "video_not_ready",
            format!("video {id:?} is {status:?}: content exists once it is completed"),
        ));
    }
    let m = meta::read(&st.jobs.deps.store, tenant, id)
        .await
        .map_err(internal)?;
    if m.as_ref().is_some_and(|m| m.content_deleted_ms.is_some()) || s.output_key.is_empty() {
        return Err(HttpError::not_found(format!(
            "video {id:?}: its content was deleted"
        )));
    }
    Ok((s.clone(), ObjectPath::from(s.output_key.as_str())))
}

fn thumbnail_key(video: &ObjectPath) -> ObjectPath {
    let k = video.as_ref();
    ObjectPath::from(format!("{}.thumb.png", k.strip_suffix(".mp4").unwrap_or(k)))
}

/// One `bytes=` range of a `size`-byte object: `Ok(None)` for no header,
/// `Err(())` for one that cannot be satisfied (a 416). Several ranges are
/// answered with the whole object, as RFC 9110 allows.
pub(crate) fn parse_range(h: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(h) = h else { return Ok(None) };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        // The last `b` bytes.
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        (start, end)
    };
    if start >= size || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

pub async fn download(
    State(st): State<AppState>,
    caller: MediaCaller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    HttpError::only_params(&q, &["variant"])?;
    let thumbnail = match q.get("variant").map(String::as_str) {
        None | Some("video") => false,
        Some("thumbnail") => true,
        Some(v) => {
            return Err(HttpError::invalid(
                "variant",
                format!("invalid variant = {v:?}: \"video\" or \"thumbnail\""),
            ))
        }
    };
    let (_, key) = stored_video(&st, &caller.tenant, &id).await?;
    let store = st.jobs.deps.store.clone();
    if thumbnail {
        let png = thumbnail_png(&store, &key).await?;
        return Ok((
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("image/png")),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("private, max-age=3600"),
                ),
            ],
            png,
        )
            .into_response());
    }
    let os = store.object_store().clone();
    let size = match os.head(&key).await {
        Ok(m) => m.size,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(HttpError::not_found(format!(
                "video {id:?}: its content is gone"
            )))
        }
        Err(e) => return Err(internal(e)),
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match parse_range(range, size) {
        Ok(r) => r,
        Err(()) => {
            let mut r = HttpError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the video has {size} bytes"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
    };
    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    let opts = GetOptions {
        range: (size > 0).then_some(GetRange::Bounded(start..end + 1)),
        ..GetOptions::default()
    };
    let body = if size == 0 {
        Body::empty()
    } else {
        Body::from_stream(
            os.get_opts(&key, opts)
                .await
                .map_err(internal)?
                .into_stream(),
        )
    };
    let len = if size == 0 { 0 } else { end + 1 - start };
    let mut r = Response::new(body);
    if range.is_some() {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if range.is_some() {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(r)
}

/// The first frame as a PNG, made once and kept next to the video.
async fn thumbnail_png(
    store: &crate::OutputStore,
    video: &ObjectPath,
) -> Result<Vec<u8>, HttpError> {
    let tkey = thumbnail_key(video);
    match store.get(&tkey).await {
        Ok(b) => return Ok(b),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(internal(e)),
    }
    let mp4 = store
        .get_capped(video, THUMBNAIL_SOURCE_MAX)
        .await
        .map_err(internal)?;
    let png = tokio::task::spawn_blocking(move || first_frame_png(&mp4))
        .await
        .map_err(internal)??;
    store
        .put_atomic(&tkey, png.clone())
        .await
        .map_err(internal)?;
    Ok(png)
}

fn first_frame_png(mp4: &[u8]) -> Result<Vec<u8>, HttpError> {
    let limits = crate::mp4::VideoLimits {
        max_side: 8192,
        max_pixels: 8192 * 8192,
        max_frames: 1,
    };
    let mut frame = None;
    crate::mp4::decode_frames(mp4, limits, &mut |w, h, rgb| {
        frame = Some((w, h, rgb.to_vec()));
        false
    })
    .map_err(internal)?;
    let (w, h, rgb) = frame.ok_or_else(|| internal("the video has no frame"))?;
    let img = image::RgbImage::from_raw(w, h, rgb).ok_or_else(|| internal("frame size"))?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(internal)?;
    Ok(out.into_inner())
}

pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let s = st.jobs.lookup(&caller.tenant, &id).await?;
    if !VideoStatus::of(s.state()).is_terminal() {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            "video_running",
            format!("video {id:?} is still running: cancel it first"),
        ));
    }
    let store = &st.jobs.deps.store;
    if !s.output_key.is_empty() {
        let key = ObjectPath::from(s.output_key.as_str());
        for k in [thumbnail_key(&key), key] {
            match store.delete(&k).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(internal(e)),
            }
        }
    }
    // The summary remembers the deletion, so the object says so from then
    // on (a job published straight onto the broker has none: its content
    // answers 404 once the object is gone).
    let mut m = meta::read(store, &caller.tenant, &id)
        .await
        .map_err(internal)?;
    if let Some(m) = m.as_mut() {
        if m.content_deleted_ms.is_none() {
            m.content_deleted_ms = Some(vidflow_job::event::now_ms());
            meta::write(store, m).await.map_err(internal)?;
        }
    }
    tracing::info!(job_id = %id, tenant = %caller.tenant, "video content deleted");
    Ok(Json(
        json!({"id": id, "object": "video.deleted", "deleted": true}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_browsers_send_them() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-"), 100), Ok(Some((0, 99))));
        assert_eq!(parse_range(Some("bytes=10-19"), 100), Ok(Some((10, 19))));
        assert_eq!(parse_range(Some("bytes=90-200"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=5-4"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=x-"), 100), Err(()));
        assert_eq!(parse_range(Some("items=0-1"), 100), Ok(None));
    }
}
