//! Validation of a job's input media beyond the i2v first frame: keyframe
//! conditions (images or videos at frame indices), a video-to-video source
//! and a video to extend. Like the first frame, nothing here decodes a
//! pixel: keys are confined to the tenant's prefix, inline files are capped
//! before their base64 is decoded and their header is checked (an image's
//! declared size; a video's `ftyp` box). Decoding, and conversion to the
//! job's size, happen once at admission.

use crate::error::JobError;
use crate::source::{check_key, decode_base64_capped, image_header, ImageInput};
use crate::spec::{ImageSource, JobKind, JobSpec};

/// Most conditions one job may carry.
pub const MAX_CONDITIONS: usize = 8;
/// Largest input video (inline, or read from the store by key), bytes.
pub const MAX_INPUT_VIDEO_BYTES: usize = 64 << 20;
/// Frames of the source an extension conditions on by default.
pub const DEFAULT_OVERLAP_FRAMES: u32 = 9;

/// Whether an input is an image (PNG/JPEG) or a video (MP4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MediaKind {
    Image,
    Video,
}

/// An input file whose header passed (or a key to read at admission).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MediaInput {
    pub kind: MediaKind,
    pub source: ImageInput,
}

/// A validated condition.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ConditionInput {
    pub media: MediaInput,
    pub frame_index: u32,
    pub strength: f64,
}

/// The media a validated job carries beyond its first frame.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct JobMedia {
    pub conditions: Vec<ConditionInput>,
    /// A `v2v` job's source and strength.
    pub v2v: Option<(MediaInput, f64)>,
    /// The video to extend and how many of its last frames to keep.
    pub extend: Option<(MediaInput, u32)>,
    /// `image_cond_noise_scale`, when the job sets it.
    pub noise_scale: Option<f64>,
}

impl JobMedia {
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty() && self.v2v.is_none() && self.extend.is_none()
    }
}

/// Checks `spec`'s conditions, `video`/`strength` and `extend` for a job of
/// `num_frames` frames whose first pass holds `pass_frames` of them (all of
/// them unless the video is a chain of segments), naming the field at
/// fault. A chain's later segments are conditioned on the segment before,
/// so a chained job's own conditions must fall in its first segment.
pub fn validate_media(
    spec: &JobSpec,
    num_frames: u32,
    pass_frames: u32,
) -> Result<JobMedia, JobError> {
    let tenant = &spec.tenant;
    let mut out = JobMedia::default();
    let t2v_only = |field: &str| {
        JobError::invalid(
            field,
            "(given)",
            format!(
                "is for kind \"t2v\" jobs (this one is {:?})",
                spec.kind.as_str()
            ),
        )
    };
    if !spec.conditions.is_empty() && spec.kind != JobKind::T2v {
        return Err(t2v_only("conditions"));
    }
    if spec.extend.is_some() && spec.kind != JobKind::T2v {
        return Err(t2v_only("extend"));
    }
    if spec.extend.is_some() && !spec.conditions.is_empty() {
        return Err(JobError::invalid(
            "extend",
            "(given)",
            "give either extend or conditions, not both",
        ));
    }
    if spec.conditions.len() > MAX_CONDITIONS {
        return Err(JobError::invalid(
            "conditions",
            format!("{} conditions", spec.conditions.len()),
            format!("at most {MAX_CONDITIONS}"),
        ));
    }
    for (i, c) in spec.conditions.iter().enumerate() {
        let field = format!("conditions[{i}]");
        let media = match (&c.image, &c.video) {
            (Some(src), None) => media(&format!("{field}.image"), src, MediaKind::Image, tenant)?,
            (None, Some(src)) => media(&format!("{field}.video"), src, MediaKind::Video, tenant)?,
            _ => {
                return Err(JobError::invalid(
                    field,
                    "(condition)",
                    "needs exactly one of image and video",
                ))
            }
        };
        if c.frame_index >= num_frames {
            return Err(JobError::invalid(
                format!("{field}.frame_index"),
                c.frame_index,
                format!("is past the video's last frame {}", num_frames - 1),
            ));
        }
        if c.frame_index >= pass_frames {
            return Err(JobError::invalid(
                format!("{field}.frame_index"),
                c.frame_index,
                format!(
                    "is past the first segment (frames 0..{pass_frames}) of a video generated \
                     in segments: a long video takes conditions in its first segment only"
                ),
            ));
        }
        let strength = c.strength.unwrap_or(1.0);
        if !(strength.is_finite() && (0.0..=1.0).contains(&strength)) {
            return Err(JobError::invalid(
                format!("{field}.strength"),
                strength,
                "must be a number in 0..=1",
            ));
        }
        out.conditions.push(ConditionInput {
            media,
            frame_index: c.frame_index,
            strength,
        });
    }
    match (spec.kind, &spec.video, spec.strength) {
        (JobKind::V2v, Some(_), Some(_)) if num_frames > pass_frames => {
            return Err(JobError::invalid(
                "frames",
                num_frames,
                format!(
                    "video-to-video takes at most {pass_frames} frames (one segment); \
                     longer videos are generated in segments"
                ),
            ))
        }
        (JobKind::V2v, Some(src), Some(s)) => {
            if !(s.is_finite() && s > 0.0 && s <= 1.0) {
                return Err(JobError::invalid(
                    "strength",
                    s,
                    "must be a number in (0, 1]: the share of the schedule re-run",
                ));
            }
            out.v2v = Some((media("video", src, MediaKind::Video, tenant)?, s));
        }
        (JobKind::V2v, None, _) => {
            return Err(JobError::invalid(
                "video",
                "null",
                "kind \"v2v\" requires a source video ({\"key\": ...} or {\"inline_base64\": ...})",
            ))
        }
        (JobKind::V2v, Some(_), None) => {
            return Err(JobError::invalid(
                "strength",
                "null",
                "kind \"v2v\" requires a strength in (0, 1]",
            ))
        }
        (_, Some(_), _) => {
            return Err(JobError::invalid(
                "video",
                "(given)",
                "only kind \"v2v\" takes a source video (use conditions or extend)",
            ))
        }
        (_, None, Some(s)) => {
            return Err(JobError::invalid(
                "strength",
                s,
                "only kind \"v2v\" takes a strength (conditions have their own)",
            ))
        }
        _ => {}
    }
    if let Some(n) = spec.image_cond_noise_scale {
        if !(n.is_finite() && (0.0..=1.0).contains(&n)) {
            return Err(JobError::invalid(
                "image_cond_noise_scale",
                n,
                "must be a number in 0..=1",
            ));
        }
        if spec.conditions.is_empty() && spec.extend.is_none() {
            return Err(JobError::invalid(
                "image_cond_noise_scale",
                n,
                "only applies to jobs with conditions or extend",
            ));
        }
        out.noise_scale = Some(n);
    }
    if let Some(e) = &spec.extend {
        let overlap = e.overlap_frames.unwrap_or(DEFAULT_OVERLAP_FRAMES);
        if overlap == 0 || (overlap - 1) % 8 != 0 || overlap >= num_frames {
            return Err(JobError::invalid(
                "extend.overlap_frames",
                overlap,
                format!("must be 8k+1 (9, 17, ...) and fewer than the job's {num_frames} frames"),
            ));
        }
        out.extend = Some((
            media("extend.video", &e.video, MediaKind::Video, tenant)?,
            overlap,
        ));
    }
    Ok(out)
}

/// One input file's checks: key confinement, or the inline bytes' cap and
/// header.
fn media(
    field: &str,
    src: &ImageSource,
    kind: MediaKind,
    tenant: &str,
) -> Result<MediaInput, JobError> {
    let source = match src {
        ImageSource::Key(key) => {
            check_key(field, key, tenant)?;
            ImageInput::Key(key.clone())
        }
        ImageSource::InlineBase64(b64) => {
            let (cap, what) = match kind {
                MediaKind::Image => (crate::source::MAX_INLINE_IMAGE_BYTES, "image"),
                MediaKind::Video => (MAX_INPUT_VIDEO_BYTES, "video"),
            };
            let bytes = decode_base64_capped(field, b64, cap, what)?;
            let rename = |e: JobError| match e {
                JobError::Invalid { reason, .. } => JobError::Invalid {
                    field: field.to_string(),
                    value: crate::error::display_value(b64),
                    reason,
                },
                other => other,
            };
            match kind {
                MediaKind::Image => {
                    image_header(&bytes).map_err(rename)?;
                }
                MediaKind::Video => check_mp4_header(field, &bytes)?,
            }
            ImageInput::Inline(bytes)
        }
    };
    Ok(MediaInput { kind, source })
}

/// An MP4 starts with an `ftyp` box (a cheap check: the demuxer at
/// admission checks the rest).
pub fn check_mp4_header(field: &str, bytes: &[u8]) -> Result<(), JobError> {
    if bytes.len() < 12 || &bytes[4..8] != b"ftyp" {
        return Err(JobError::invalid(
            field,
            format!("{} bytes", bytes.len()),
            "is not an MP4 file (no ftyp box at the start; H.264 in MP4 is supported)",
        ));
    }
    Ok(())
}
