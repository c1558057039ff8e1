//! The HTTP API and the web console of `vidflow serve`.
//!
//! The API has the `/v1/videos` shape that OpenAI's Videos API introduced
//! and that open engines and gateways keep as the convention, so a client
//! written for it works unchanged: asynchronous jobs (`POST` answers at
//! once with a `queued` video object), polling, content download with
//! HTTP ranges, cancel, delete, and a server-sent-events stream of a job's
//! progress. Our own fields (tier, mode, seed, steps, cost, stage, ETA)
//! ride along as extra fields of the same objects. Every request is handled
//! by [`crate::api::Jobs`], the same code the gRPC API uses, so keys,
//! tenant isolation, idempotency and validation are the same on both.
//!
//! Routes (documented for clients in `openapi.json`, served at
//! `/openapi.json`):
//!
//! | route | module |
//! | --- | --- |
//! | `POST /v1/videos`, `GET /v1/videos`, `GET /v1/videos/{id}` | [`videos`] |
//! | `GET /v1/videos/{id}/content`, `DELETE /v1/videos/{id}` | [`content`] |
//! | `POST /v1/videos/{id}/cancel`, `GET /v1/videos/{id}/events` | [`videos`], [`events`] |
//! | `GET /v1/usage` | [`usage`] |
//! | `GET /`, `/console/*`, `POST /console/session` | [`console`] |

mod auth;
mod console;
mod content;
mod create;
mod error;
mod events;
mod usage;
mod video;
mod videos;

use std::future::Future;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

pub use error::HttpError;
pub use video::{Video, VideoStatus};

use crate::api::Jobs;

/// The OpenAPI 3.1 document of the HTTP API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Limits of the HTTP API.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Largest request body accepted (JSON or multipart, an
    /// `input_reference` image included); larger is a 413 before it is read.
    pub max_body_bytes: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            max_body_bytes: 16 << 20,
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub jobs: Jobs,
    pub opts: HttpOptions,
}

/// The whole router: the API, the OpenAPI document and the console.
pub fn router(jobs: Jobs, opts: HttpOptions) -> Router {
    let limit = opts.max_body_bytes;
    let state = AppState { jobs, opts };
    Router::new()
        .route("/v1/videos", post(videos::create).get(videos::list))
        .route(
            "/v1/videos/{id}",
            get(videos::retrieve).delete(content::delete),
        )
        .route("/v1/videos/{id}/content", get(content::download))
        .route("/v1/videos/{id}/cancel", post(videos::cancel))
        .route("/v1/videos/{id}/events", get(events::stream))
        .route("/v1/usage", get(usage::usage))
        .route("/openapi.json", get(openapi))
        .merge(console::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

async fn not_found(uri: axum::http::Uri) -> HttpError {
    HttpError::not_found(format!("no route {}", uri.path()))
}

/// Serves the HTTP API and console on `listener` until `shutdown` resolves.
pub async fn serve_http(
    listener: TcpListener,
    jobs: Jobs,
    opts: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(jobs, opts))
        .with_graceful_shutdown(shutdown)
        .await
}
