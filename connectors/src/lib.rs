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
pub use mp4::encode_mp4;
pub use store::{output_key, OutputStore, StoredObject};

/// Re-exported so callers can build dates and keys without naming the crates.
pub use chrono::NaiveDate;
pub use lapin;
pub use object_store::path::Path as ObjectPath;
pub use tonic;
