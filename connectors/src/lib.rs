//! The edges of vidflow. Today: MP4 output ([`mp4::encode_mp4`]) and the
//! output object store ([`store::OutputStore`]). AMQP, gRPC and Parquet come
//! with later issues (see README.md).

pub mod error;
pub mod mp4;
pub mod store;

pub use error::OutputError;
pub use mp4::encode_mp4;
pub use store::{output_key, OutputStore, StoredObject};

/// Re-exported so callers can build dates and keys without naming the crates.
pub use chrono::NaiveDate;
pub use object_store::path::Path as ObjectPath;
