//! `GET /v1/videos/{id}/events`: the job's progress as server-sent events.
//! Each event is `event: video` with the whole video object as its data:
//! the current one first, then every change the job table sees, and at
//! least one every second while nothing changes (so a client sees that
//! the job and the connection are alive), until the job has finished.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;

use super::auth::Caller;
use super::videos::video_of;
use super::{AppState, HttpError};

fn event(v: &super::Video) -> Event {
    Event::default()
        .event("video")
        .id(format!("{}", v.progress))
        .json_data(v)
        .unwrap_or_else(|_| Event::default().event("error").data("unserializable video"))
}

pub async fn stream(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HttpError> {
    let tenant = caller.tenant;
    let mut statuses = st.jobs.watch(&tenant, &id).await?;
    // The first object is built before answering, so a bad summary is an
    // error status rather than an empty stream.
    let first = match statuses.recv().await {
        Some(s) => video_of(&st, &tenant, &s, false).await?,
        None => return Err(crate::api::ApiError::NotFound(id).into()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(16);
    tokio::spawn(async move {
        let mut v = first;
        loop {
            if tx.send(Ok(event(&v))).await.is_err() || v.status.is_terminal() {
                return;
            }
            let next = tokio::select! {
                s = statuses.recv() => s,
                _ = tx.closed() => return,
            };
            let Some(s) = next else { return };
            match video_of(&st, &tenant, &s, false).await {
                Ok(next) => v = next,
                Err(_) => return,
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
}
