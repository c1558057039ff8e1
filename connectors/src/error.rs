//! The error type of the output path (encoding, muxing, storing).

/// Everything that can go wrong between RGB frames and a stored MP4.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// An argument is out of range. `field` names the argument (`width`,
    /// `height`, `frames`, `fps`, `rgb`, `tenant`, `job_id`, `key`), `value`
    /// is what was given and `expected` what is allowed.
    #[error("invalid {field} = {value}: expected {expected}")]
    Invalid {
        field: &'static str,
        value: String,
        expected: String,
    },
    /// The H.264 encoder (OpenH264) failed: at start-up (`frame` is `None`)
    /// or on one frame.
    #[error("H.264 encoder error{}: {source}", at_frame(*.frame))]
    Encoder {
        frame: Option<u32>,
        #[source]
        source: openh264::Error,
    },
    /// The encoder produced no picture for a frame (it must never skip one:
    /// the MP4 must hold exactly the requested frame count).
    #[error("H.264 encoder dropped frame {index}")]
    DroppedFrame { index: u32 },
    /// The MP4 muxer failed: building, finishing (`frame` is `None`) or
    /// writing one frame.
    #[error("MP4 muxer error{}: {source}", at_frame(*.frame))]
    Mux {
        frame: Option<u32>,
        #[source]
        source: muxide::api::MuxerError,
    },
    /// An object is larger than the reader accepts (read no further).
    #[error("object {key} is larger than {limit} bytes")]
    TooLarge { key: String, limit: u64 },
    /// The object store failed (I/O, missing object, ...).
    #[error("object store error: {0}")]
    Store(#[from] object_store::Error),
    /// The blocking wrapper could not start its runtime.
    #[error("cannot start the output store's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// ` (frame N)` where an error concerns one frame, else nothing.
fn at_frame(frame: Option<u32>) -> String {
    frame.map(|i| format!(" (frame {i})")).unwrap_or_default()
}

impl OutputError {
    pub fn invalid(
        field: &'static str,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        OutputError::Invalid {
            field,
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    /// The argument an [`OutputError::Invalid`] is about.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            OutputError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }

    /// True when the object store reported that the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            OutputError::Store(object_store::Error::NotFound { .. })
        )
    }
}
