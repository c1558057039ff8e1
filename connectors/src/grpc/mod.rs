//! The gRPC API (`vidflow.v1.JobService`, proto/api.proto): Submit
//! enqueues through AMQP, Get/Watch/List read the job table fed by the
//! events exchange (and the durable job records), Cancel fans a control
//! message out to every serve process. API keys are checked by an
//! interceptor; health and reflection are served without one.

mod service;
pub mod table;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::TcpListener;
use vidflow_job::event::EventEnvelope;
use vidflow_job::AdmissionConfig;

pub use service::{client_job_id, Api};
pub use table::JobTable;

use crate::amqp::{self, Publisher, Topology};
use crate::auth::KeyRing;

/// Generated messages, client and server.
pub mod pb {
    tonic::include_proto!("vidflow.v1");
}

/// The encoded file descriptor set of the API (for reflection).
pub const DESCRIPTOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vidflow_descriptor.bin"));

/// What the API needs.
pub struct ApiDeps {
    /// Followed as the key file changes (see [`KeyRing`]).
    pub keys: Arc<KeyRing>,
    pub admission: Arc<AdmissionConfig>,
    /// Job records (the local files or the fleet's database).
    pub state: crate::state::StateStore,
    pub publisher: Arc<Publisher>,
    pub table: Arc<JobTable>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC TLS: {0}")]
    Tls(#[source] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Serves the API on `listener` until `shutdown` resolves; with `tls`
/// (PEM certificate chain, PEM key) only over TLS.
pub async fn serve_api(
    listener: TcpListener,
    deps: ApiDeps,
    tls: Option<(Vec<u8>, Vec<u8>)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    use pb::job_service_server::JobServiceServer;
    let keys = deps.keys.clone();
    let api = Api::new(deps);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<JobServiceServer<Api>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(DESCRIPTOR)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let interceptor = move |req| service::authenticate(&keys.current(), req);
    let mut server = tonic::transport::Server::builder();
    if let Some((cert, key)) = tls {
        let id = tonic::transport::Identity::from_pem(cert, key);
        server = server
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(id))
            .map_err(ApiError::Tls)?;
    }
    server
        .add_service(health)
        .add_service(reflection)
        .add_service(JobServiceServer::with_interceptor(api, interceptor))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await?;
    Ok(())
}

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
