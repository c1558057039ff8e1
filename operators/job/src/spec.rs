//! The job spec as clients send it (JSON through serde; the protobuf form is
//! in [`crate::proto`]). Nothing here is checked beyond types: see
//! [`mod@crate::validate`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{display_value, JobError};
use crate::id::generate_job_id;

/// Service tier of the tenant that submitted the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Premium,
    Standard,
    Free,
}

/// Text-to-video (optionally with `conditions` or `extend`),
/// image-to-video (first frame given) or video-to-video (a source video
/// re-generated with a strength).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum JobKind {
    #[serde(rename = "t2v")]
    T2v,
    #[serde(rename = "i2v")]
    I2v,
    #[serde(rename = "v2v")]
    V2v,
}

/// Quality/latency trade-off; its step count, guidance and default duration
/// come from `configs/modes.toml`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Realtime,
    #[default]
    Standard,
    Cinema,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Premium => "premium",
            Tier::Standard => "standard",
            Tier::Free => "free",
        }
    }
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::T2v => "t2v",
            JobKind::I2v => "i2v",
            JobKind::V2v => "v2v",
        }
    }
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Realtime => "realtime",
            Mode::Standard => "standard",
            Mode::Cinema => "cinema",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an input image (an image-to-video job's first frame, a keyframe)
/// or video (MP4) comes from.
///
/// JSON: `{"key": "tenant/uploads/a.png"}` or `{"inline_base64": "iVBORw0..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageSource {
    /// An object-store key, fetched at admission in the dataflow.
    Key(String),
    /// The file's bytes (PNG/JPEG, or MP4 for a video), standard base64
    /// (padding optional).
    InlineBase64(String),
}

/// One condition of a keyframe job: an image or a video (exactly one) whose
/// first frame lands on output frame `frame_index`, held with `strength`
/// (1 keeps it; less lets the model change it).
///
/// JSON: `{"image": {"key": "acme/in/a.png"}, "frame_index": 0}` or
/// `{"video": {"key": "acme/in/b.mp4"}, "frame_index": 48, "strength": 0.8}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    /// PNG or JPEG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSource>,
    /// MP4 (H.264).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<ImageSource>,
    pub frame_index: u32,
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strength: Option<f64>,
}

/// Continue an existing video: its last `overlap_frames` frames (8k+1,
/// default 9) condition the start of the new clip, whose first frames so
/// reproduce them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendSpec {
    /// MP4 (H.264).
    pub video: ImageSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap_frames: Option<u32>,
}

/// A LoRA adapter a job applies: a safetensors file under the tenant's
/// prefix in the object store (`key`), or one the registry lists (`id`,
/// `[[lora]]` in `configs/models.toml`): exactly one of the two.
///
/// JSON: `{"key": "acme/loras/film-grain.safetensors", "strength": 0.8}`
/// or `{"id": "film-grain"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Multiplies the adapter's own `alpha / rank`, in (0, 2] (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strength: Option<f64>,
}

/// A generation request as submitted. Unknown fields are errors so a typo
/// (`"step": 30`) is reported instead of silently ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Client idempotency key; generated (time-ordered, ULID-style) if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    pub tenant: String,
    pub tier: Tier,
    pub kind: JobKind,
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// Required for `i2v`, forbidden for `t2v`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSource>,
    /// A preset (`480p`, `720p`, `768p`, `1080p`, `4k`) or `WxH`.
    pub resolution: String,
    /// Duration; at most one of `seconds` and `frames`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<u32>,
    /// Frames per second (default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    #[serde(default)]
    pub mode: Mode,
    /// Overrides the mode's step count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    /// Overrides the mode's guidance scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance: Option<f64>,
    /// Default: derived from the job id, so a redelivered job is identical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Model id from `configs/models.toml` (default: its `default_model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Generate an audio track (not supported yet: rejected).
    #[serde(default)]
    pub audio: bool,
    /// Keyframes: images or videos at chosen frames (kind `t2v`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ConditionSpec>,
    /// The source of a `v2v` job (MP4, H.264).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<ImageSource>,
    /// How much a `v2v` job may change its source: the share of the
    /// denoising schedule it re-runs, in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strength: Option<f64>,
    /// Continue an existing video (kind `t2v`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extend: Option<ExtendSpec>,
    /// How much noise a strength-1 condition (a keyframe, an extension's
    /// frames) is re-noised with each step, in 0..=1 (LTX-Video's
    /// `image_cond_noise_scale`, default 0.15; 0 holds the condition's
    /// latents exactly). Only with `conditions` or `extend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_cond_noise_scale: Option<f64>,
    /// A LoRA adapter to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSpec>,
}

impl JobSpec {
    /// A minimal spec with every optional field unset.
    pub fn new(
        tenant: impl Into<String>,
        tier: Tier,
        kind: JobKind,
        prompt: impl Into<String>,
        resolution: impl Into<String>,
    ) -> JobSpec {
        JobSpec {
            job_id: None,
            tenant: tenant.into(),
            tier,
            kind,
            prompt: prompt.into(),
            negative_prompt: None,
            image: None,
            resolution: resolution.into(),
            seconds: None,
            frames: None,
            fps: None,
            mode: Mode::default(),
            steps: None,
            guidance: None,
            seed: None,
            model: None,
            audio: false,
            conditions: Vec::new(),
            video: None,
            strength: None,
            extend: None,
            image_cond_noise_scale: None,
            lora: None,
        }
    }

    /// Parses JSON. A type error names the field it is in (`-5` for
    /// `steps` gives `Invalid { field: "steps", value: "-5", .. }`), an
    /// unknown or missing field names that field.
    pub fn from_json(text: &str) -> Result<JobSpec, JobError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| JobError::Invalid {
                field: "(body)".into(),
                value: display_value(text),
                reason: format!("not valid JSON: {e}"),
            })?;
        Self::from_json_value(value)
    }

    /// As [`JobSpec::from_json`], from an already parsed value.
    pub fn from_json_value(value: serde_json::Value) -> Result<JobSpec, JobError> {
        if !value.is_object() {
            return Err(JobError::Invalid {
                field: "(body)".into(),
                value: display_value(&value.to_string()),
                reason: "a job spec is a JSON object".into(),
            });
        }
        deserialize_named(&value)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("JobSpec serialises")
    }

    /// Gives the spec a generated job id if it has none, and returns the id.
    /// Intake calls this before enqueueing, so every redelivery of the job
    /// carries the same id (and so the same default seed).
    pub fn ensure_job_id(&mut self) -> &str {
        self.job_id.get_or_insert_with(generate_job_id)
    }
}

/// serde_json appends " at line L column C", meaningless for a `Value`.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn lookup<'a>(root: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    if path == "." {
        return Some(root);
    }
    let mut v = root;
    for part in path.split('.') {
        v = match part.parse::<usize>() {
            Ok(i) if v.is_array() => v.get(i)?,
            _ => v.get(part)?,
        };
    }
    Some(v)
}

/// Deserializes `value` into `T`, naming the field at fault the way job
/// specs do (`conditions[0].frame_index`, or the unknown/missing field's
/// own name): every front door that takes JSON reports errors alike.
pub fn deserialize_named<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
) -> Result<T, JobError> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = strip_position(&inner.to_string());
            // Unknown/missing fields are reported at the parent path;
            // the field's name is in the message between backticks.
            let named = msg
                .strip_prefix("unknown field `")
                .or_else(|| msg.strip_prefix("missing field `"))
                .and_then(|rest| rest.split('`').next())
                .map(str::to_string);
            let field = match named {
                Some(name) if path == "." => name,
                Some(name) if path == name || path.ends_with(&format!(".{name}")) => path.clone(),
                Some(name) => format!("{path}.{name}"),
                None => path.clone(),
            };
            let value = lookup(value, &path)
                .map(|v| display_value(&v.to_string()))
                .filter(|_| path != ".")
                .unwrap_or_else(|| "-".to_string());
            Err(JobError::Invalid {
                field,
                value,
                reason: msg,
            })
        }
    }
}
