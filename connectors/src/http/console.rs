//! The web console: three static files compiled into the binary (no
//! toolchain, no CDN, nothing fetched at run time) and the sign-in that
//! sets the cookie its `<video>` elements need. The page itself talks to
//! the public `/v1` API with the key in an `Authorization` header, like any
//! other client; see `console/app.js`.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::auth::{tenant_of_key, KEY_COOKIE};
use super::{AppState, HttpError};

const INDEX: &str = include_str!("console/index.html");
const APP: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/style.css");

/// Only our own files run and load; videos and thumbnails come from the
/// same origin.
const CSP: &str = "default-src 'self'; img-src 'self' data:; media-src 'self'; \
                   style-src 'self'; script-src 'self'; connect-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(index))
        .route("/console/app.js", get(app))
        .route("/console/style.css", get(style))
        .route("/console/session", post(sign_in).delete(sign_out))
}

fn page(ctype: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn app() -> Response {
    page("text/javascript; charset=utf-8", APP)
}

async fn style() -> Response {
    page("text/css; charset=utf-8", STYLE)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    key: String,
}

/// Checks the key and sets it as an `HttpOnly`, `SameSite=Strict` cookie,
/// which only the content route reads (for `<video src>`).
async fn sign_in(
    State(st): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    let s: SignIn = serde_json::from_slice(&body).map_err(|e| {
        HttpError::invalid("key", format!("a JSON object {{\"key\": \"...\"}}: {e}"))
    })?;
    let key = s.key.trim();
    if key.is_empty() || key.len() > 256 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HttpError::unauthenticated("invalid API key"));
    }
    let tenant = tenant_of_key(&st, key)?;
    let cookie = format!("{KEY_COOKIE}={key}; Path=/v1/videos; HttpOnly; SameSite=Strict");
    let mut r = (
        StatusCode::OK,
        Json(serde_json::json!({ "tenant": tenant })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

async fn sign_out() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "vidflow_key=; Path=/v1/videos; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}
