//! Why a stage could not go on with a job. The `Display` text is what the
//! job's client reads (it becomes the failure's `error` once, where it
//! happened); the source chain stays for logs.

use vidflow_connectors::OutputError;
use vidflow_job::safety::{Decision, SafetyError};
use vidflow_job::JobError;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("model `{0}` is not loaded in this worker")]
    ModelNotLoaded(String),
    /// The model runtime failed (encode, step, decode).
    #[error(transparent)]
    Runtime(#[from] vidflow_gpu::GpuError),
    /// MP4 encoding or the object store.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// An i2v first frame named by key could not be read.
    #[error("invalid `image` key `{key}`: {source}")]
    ImageKey {
        key: String,
        #[source]
        source: ImageKeyError,
    },
    /// A keyframe, source or extension input named by key could not be read.
    #[error("invalid `{field}` key `{key}`: {source}")]
    MediaKey {
        field: String,
        key: String,
        #[source]
        source: ImageKeyError,
    },
    /// A registry adapter's file could not be read.
    #[error("lora `{id}`: {}: {source}", .path.display())]
    LoraFile {
        id: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An input image or video that cannot be used as given.
    #[error("invalid `{field}`: {reason}")]
    Media { field: String, reason: String },
    /// An i2v first frame that is not a usable image.
    #[error(transparent)]
    Image(#[from] JobError),
    /// A safety checker failed to run.
    #[error(transparent)]
    Safety(#[from] SafetyError),
    /// A safety decision could not be read or written.
    #[error(transparent)]
    SafetyRecord(#[from] crate::safety_record::RecordError),
    /// A chain's checkpoint state could not be written.
    #[error("chain state: {0}")]
    ChainState(#[from] serde_json::Error),
    /// The policy said no.
    #[error("{}{}", if *.input_image { "input image " } else { "" }, blocked_message(.decision))]
    Blocked {
        decision: Box<Decision>,
        /// The i2v input frame was blocked (not the prompt or the video).
        input_image: bool,
    },
}

impl StageError {
    /// The failure of a job the policy blocked at a safety stage.
    pub fn blocked(
        meta: vidflow_job::result::JobMeta,
        decision: Decision,
        input_image: bool,
    ) -> vidflow_job::result::Failure {
        let e = StageError::Blocked {
            decision: Box::new(decision),
            input_image,
        };
        vidflow_job::result::Failure::new(meta, vidflow_job::event::Stage::Safety, e)
    }
}

/// Why an object-store key did not give an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageKeyError {
    #[error(transparent)]
    Path(#[from] object_store::path::Error),
    #[error(transparent)]
    Store(#[from] OutputError),
}

/// What a blocked job's failure says: the category first, for people and
/// for anything that parses it.
pub fn blocked_message(d: &Decision) -> String {
    format!(
        "blocked by safety policy ({} check): category {}: {}",
        d.stage.as_str(),
        d.category.as_deref().unwrap_or("unspecified"),
        d.reason
    )
}
