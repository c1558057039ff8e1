//! Errors as the convention writes them: a status code and
//! `{"error": {"message", "type", "param", "code"}}`, with `param` naming
//! the request field at fault.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::ApiError;

#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// A stable, machine-readable reason.
    pub code: &'static str,
}

impl HttpError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            message: message.into(),
            param: None,
            code,
        }
    }

    pub fn invalid(param: &str, message: impl Into<String>) -> HttpError {
        HttpError {
            param: Some(param.to_string()),
            ..HttpError::new(StatusCode::BAD_REQUEST, "invalid_value", message)
        }
    }

    /// A 400 naming the first query parameter not in `known`.
    pub fn only_params(
        q: &std::collections::HashMap<String, String>,
        known: &[&str],
    ) -> Result<(), HttpError> {
        match q.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(HttpError::invalid(
                k,
                format!("unknown query parameter `{k}`"),
            )),
            None => Ok(()),
        }
    }

    pub fn not_found(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", message)
    }

    pub fn too_large(limit: usize) -> HttpError {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body over {limit} bytes"),
        )
    }

    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            409 => "conflict_error",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "message": self.message,
                "type": self.kind(),
                "param": self.param,
                "code": self.code,
            }
        });
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> HttpError {
        match e {
            ApiError::Invalid { field, message } => HttpError::invalid(&field, message),
            ApiError::NotFound(id) => HttpError::not_found(format!("video {id:?} not found")),
            ApiError::Conflict(m) => HttpError::new(StatusCode::CONFLICT, "conflict", m),
            ApiError::Unavailable(m) => {
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            ApiError::Internal(m) => {
                HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", m)
            }
        }
    }
}
