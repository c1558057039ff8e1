//! Who is calling: the API key of `Authorization: Bearer <key>` (or
//! `x-api-key`), checked against the same [`crate::auth::KeyRing`] as the
//! gRPC API. The console's `<video>` elements cannot send a header, so the
//! content route alone also takes the key from the console's cookie
//! ([`MediaCaller`]); the cookie is `HttpOnly` and `SameSite=Strict`, and
//! only read for GETs that change nothing.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method};

use super::{AppState, HttpError};

/// The cookie the console sets at sign-in.
pub const KEY_COOKIE: &str = "vidflow_key";

/// An authenticated tenant.
#[derive(Clone, Debug)]
pub struct Caller {
    pub tenant: String,
}

/// As [`Caller`], also accepting the console's cookie (GET only).
#[derive(Clone, Debug)]
pub struct MediaCaller {
    pub tenant: String,
}

fn header_key(parts: &Parts) -> Option<String> {
    let h = &parts.headers;
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        let key = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v);
        return Some(key.trim().to_string());
    }
    h.get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

fn cookie_key(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == KEY_COOKIE)
        .map(|(_, v)| v.trim().to_string())
}

/// The tenant of `key`, or 401.
pub(super) fn tenant_of_key(state: &AppState, key: &str) -> Result<String, HttpError> {
    state
        .jobs
        .deps
        .keys
        .current()
        .tenant(key)
        .map(str::to_string)
        .ok_or_else(|| HttpError::unauthenticated("invalid API key"))
}

fn missing() -> HttpError {
    HttpError::unauthenticated("missing API key: send `Authorization: Bearer <key>`")
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, HttpError> {
        let key = header_key(parts).ok_or_else(missing)?;
        Ok(Caller {
            tenant: tenant_of_key(state, &key)?,
        })
    }
}

impl FromRequestParts<AppState> for MediaCaller {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, HttpError> {
        let key = header_key(parts)
            .or_else(|| {
                (parts.method == Method::GET || parts.method == Method::HEAD)
                    .then(|| cookie_key(parts))
                    .flatten()
            })
            .ok_or_else(missing)?;
        Ok(MediaCaller {
            tenant: tenant_of_key(state, &key)?,
        })
    }
}
