//! `GET /v1/videos/{id}/events`: the job's progress as server-sent events.
//! Each event is `event: video` with the whole video object as its data:
//! the current one first, then every change the job table sees, and at
//! least one every second while nothing changes (so a client sees that
//! the job and the connection are alive), until the job has finished.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;

use super::auth::Caller;
use super::videos::video_of;
use super::{AppState, HttpError};
use crate::api::pb::JobStatus;

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
    // Subscribe before reading, so no change falls in between.
    let mut changes = st.jobs.deps.table.subscribe();
    let first = st.jobs.lookup(&tenant, &id).await?;
    let first_video = video_of(&st, &tenant, &first, false).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(16);
    tokio::spawn(async move {
        let done = first_video.status.is_terminal();
        if tx.send(Ok(event(&first_video))).await.is_err() || done {
            return;
        }
        let mut last: JobStatus = first;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            let next = tokio::select! {
                c = changes.recv() => match c {
                    Ok(s) if s.tenant == tenant && s.job_id == id => s,
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => match st.jobs.deps.table.get(&tenant, &id) {
                        Some(s) => s,
                        None => continue,
                    },
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => st.jobs.deps.table.get(&tenant, &id).unwrap_or_else(|| last.clone()),
                _ = tx.closed() => return,
            };
            last = next;
            let Ok(v) = video_of(&st, &tenant, &last, false).await else {
                return;
            };
            let done = v.status.is_terminal();
            if tx.send(Ok(event(&v))).await.is_err() || done {
                return;
            }
            tick.reset();
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
}
