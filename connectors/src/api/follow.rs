//! The job table's feed: every job event of every serve process, from the
//! events exchange, so either API can answer for any job of the fleet.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use vidflow_job::event::EventEnvelope;

use super::JobTable;
use crate::amqp::{self, Topology};

/// Keeps `table` up to date from the events exchange (every job of every
/// serve process), reconnecting with back-off, until `stop` is set. Only
/// events a service user published are believed: a forged `completed`
/// must never reach a tenant's job table.
pub async fn follow_events(
    url: String,
    topo: Topology,
    trust: Arc<amqp::Trust>,
    table: Arc<JobTable>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let mut attempt = 0;
    while !stop.load(Ordering::Relaxed) {
        let r: Result<(), lapin::Error> = async {
            let conn = amqp::connect(&url, "vidflow-api-events").await?;
            let ch = conn.create_channel().await?;
            topo.declare(&ch).await?;
            let q = topo.bind_events(&ch, "job.#").await?;
            let mut consumer = amqp::consume_auto_ack(&ch, &q, "vidflow-api").await?;
            attempt = 0;
            while let Some(d) = consumer.next().await {
                let d = d?;
                if !trust.is_service(&d.properties) {
                    tracing::warn!(
                        user = ?d.properties.user_id().as_ref().map(|u| u.as_str().to_string()),
                        "event not from a service user: ignored"
                    );
                    continue;
                }
                match serde_json::from_slice::<EventEnvelope>(&d.data) {
                    Ok(env) => table.apply(&env),
                    Err(e) => tracing::warn!(error = %e, "unreadable event on the events exchange"),
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "events follower lost the broker; reconnecting");
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(amqp::backoff(attempt).max(Duration::from_millis(200))).await;
        attempt += 1;
    }
}
