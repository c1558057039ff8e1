//! The gRPC API (`vidflow.v1.JobService`, proto/api.proto): Submit
//! enqueues through AMQP, Get/Watch/List read the job table fed by the
//! events exchange (and the durable job records), Cancel fans a control
//! message out to every serve process. API keys are checked by an
//! interceptor; health and reflection are served without one.

mod service;

use std::future::Future;
use tokio::net::TcpListener;

pub use crate::api::{
    client_job_id, follow_events, pb, table, ApiDeps, JobTable, Jobs, DESCRIPTOR,
};
pub use service::Api;

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
    jobs: Jobs,
    tls: Option<(Vec<u8>, Vec<u8>)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    use pb::job_service_server::JobServiceServer;
    let keys = jobs.deps.keys.clone();
    let api = Api::with_jobs(jobs);
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
