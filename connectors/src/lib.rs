//! The edges of vidflow: MP4 output ([`mp4::encode_mp4`]), the object
//! store ([`store::OutputStore`]) and the job records kept in it
//! ([`records`]), RabbitMQ topology and message formats ([`amqp`]), API
//! keys ([`auth`]) and the gRPC API ([`grpc`]). Parquet sinks come with a
//! later issue (see README.md).

pub mod amqp;
pub mod auth;
pub mod error;
pub mod grpc;
pub mod mp4;
pub mod records;
pub mod safety_rows;
pub mod sinks;
pub mod store;

pub use error::OutputError;
pub use mp4::encode_mp4;
pub use store::{output_key, OutputStore, StoredObject};

/// Re-exported so callers can build dates and keys without naming the crates.
pub use chrono::NaiveDate;
pub use lapin;
pub use object_store::path::Path as ObjectPath;
pub use tonic;
