//! The edges of vidflow: MP4 output ([`mp4::encode_mp4`]), the object
//! store ([`store::OutputStore`]) and the job records kept in it
//! ([`records`]), RabbitMQ topology and message formats ([`amqp`]), API
//! keys ([`auth`]), the gRPC API ([`grpc`]) and the HTTP API with its web
//! console ([`http`]), both over the same handlers ([`api`]), and the Parquet analytics
//! sinks ([`sinks`], their Arrow batches in [`batches`]) and the state a
//! fleet of serving nodes shares ([`state`]: local files or PostgreSQL).

pub mod amqp;
pub mod api;
pub mod auth;
pub mod batches;
pub mod error;
pub mod grpc;
pub mod http;
pub mod meta;
pub mod mp4;
pub mod records;
pub mod sinks;
pub mod state;
pub mod store;

pub use error::OutputError;

/// Makes ring the process's TLS crypto provider (the gRPC API's and
/// clients' TLS, the S3 client). rustls picks one by itself only when
/// exactly one is compiled in; a build that also links aws-lc-rs (a test
/// build whose dev-dependencies bring it) would otherwise refuse every TLS
/// handshake. Call at start; a second call changes nothing.
pub fn install_crypto_provider() {
    // ring has no post-quantum key exchange (hence rustls's deprecation
    // note); the other provider, aws-lc-rs, is a C build we avoid.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
}
pub use mp4::encode_mp4;
pub use store::{output_key, OutputStore, StoredObject};

/// Re-exported so callers can build dates and keys without naming the crates.
pub use chrono::NaiveDate;
pub use lapin;
pub use object_store::path::Path as ObjectPath;
pub use tonic;
