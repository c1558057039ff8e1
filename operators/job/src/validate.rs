//! Validation: a [`JobSpec`] becomes a [`ValidatedJob`] (every default
//! filled in, every size checked against LTX-Video's compression and the
//! service limits, inline images decoded, VRAM admitted) or a [`JobError`]
//! naming the field, the value and what is allowed.

use std::io::Cursor;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use image::imageops::FilterType;
use image::ImageFormat;
use vidflow_gpu::pipeline::RgbImage;

use crate::config::AdmissionConfig;
use crate::error::JobError;
use crate::id::{default_seed, generate_job_id, is_safe_id};
use crate::spec::{ImageSource, JobKind, JobSpec, Mode, Tier};

pub use crate::limits::*;
/// Prompt and negative prompt length limit, in characters.
pub const MAX_PROMPT_CHARS: usize = 2000;
/// Largest encoded first frame (inline, or read from the store by key),
/// bytes.
pub const MAX_INLINE_IMAGE_BYTES: usize = 32 << 20;
/// Largest first frame, per side and in pixels, as its header declares
/// it: checked before any pixel is decoded, so a small file that declares
/// a huge image (a decompression bomb) costs nothing. A 4K video's frame
/// is 3840x2176; a larger source would only be scaled down.
pub const MAX_IMAGE_SIDE: u32 = 8192;
pub const MAX_IMAGE_PIXELS: u64 = 4096 * 4096;
/// Most memory the decoder may allocate for one first frame.
pub const MAX_IMAGE_DECODE_BYTES: u64 = 256 << 20;
/// Largest object-store key, bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// The `resolution` that asks for a demo-world model's own trained size.
pub const NATIVE: &str = "native";

/// Resolution presets, `(name, width, height)`: the common names rounded
/// up (or, for 480p's width, to the nearest) to multiples of 32.
pub const PRESETS: &[(&str, u32, u32)] = &[
    ("480p", 832, 480),
    ("720p", 1280, 704),
    ("768p", 1344, 768),
    ("1080p", 1920, 1088),
    ("4k", 3840, 2176),
];

/// The first frame of an image-to-video job, still encoded: [`validate`]
/// checks its header (format, declared size) but decodes no pixel, so the
/// one decode of a job happens on the admission stage's own thread
/// ([`decode_image`]), never on an async runtime or the timely worker.
/// Serialisable because validated jobs cross timely's exchange (encoded
/// bytes are also far smaller than the frame).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ImageInput {
    /// An object-store key under the tenant's own prefix (`<tenant>/...`),
    /// not fetched by [`validate`]: admission reads it (at most
    /// [`MAX_INLINE_IMAGE_BYTES`]) and decodes it like an inline image.
    Key(String),
    /// PNG or JPEG bytes whose header passed [`image_header`].
    Inline(Vec<u8>),
}

/// A job with every default applied and every limit checked: what the
/// pipeline consumes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ValidatedJob {
    pub job_id: String,
    pub tenant: String,
    pub tier: Tier,
    pub kind: JobKind,
    pub prompt: String,
    /// Empty when the spec gave none.
    pub negative_prompt: String,
    /// `Some` exactly for image-to-video.
    pub image: Option<ImageInput>,
    pub width: u32,
    pub height: u32,
    /// 8n+1.
    pub num_frames: u32,
    pub fps: f64,
    pub steps: u32,
    pub guidance: f64,
    pub seed: u64,
    pub model_id: String,
    pub mode: Mode,
    /// The runtime's VRAM estimate for this job alone (admitted: at most
    /// the worker limit).
    pub estimated_vram_bytes: u64,
    /// Unix ms the job was submitted, when its carrier says (the AMQP
    /// header); the scheduler counts its queue wait from there.
    pub submitted_ms: Option<u64>,
    /// Keyframe conditions, a v2v source or a video to extend.
    #[serde(default)]
    pub media: crate::media::JobMedia,
}

/// Checks a spec against the limits and `cfg`, fills in defaults and decodes
/// an inline image. A spec without `job_id` gets a generated one (intake
/// should call [`JobSpec::ensure_job_id`] first, so redeliveries keep it).
pub fn validate(spec: &JobSpec, cfg: &AdmissionConfig) -> Result<ValidatedJob, JobError> {
    let job_id = match &spec.job_id {
        Some(id) => {
            check_id("job_id", id)?;
            id.clone()
        }
        None => generate_job_id(),
    };
    check_id("tenant", &spec.tenant)?;
    if !crate::id::is_tenant_name(&spec.tenant) {
        return Err(JobError::invalid(
            "tenant",
            format!("{:?}", spec.tenant),
            format!(
                "is reserved for the service's own storage ({})",
                crate::id::RESERVED_TENANTS.join(", ")
            ),
        ));
    }
    if spec.audio {
        return Err(JobError::Unsupported {
            field: "audio".into(),
            reason: "audio is not supported yet".into(),
        });
    }
    check_prompt("prompt", &spec.prompt, false)?;
    if let Some(n) = &spec.negative_prompt {
        check_prompt("negative_prompt", n, true)?;
    }
    match (spec.kind, &spec.image) {
        (JobKind::I2v, None) => {
            return Err(JobError::invalid(
                "image",
                "null",
                "kind \"i2v\" requires an image ({\"key\": ...} or {\"inline_base64\": ...})",
            ))
        }
        (JobKind::T2v | JobKind::V2v, Some(_)) => {
            return Err(JobError::invalid(
                "image",
                "(given)",
                format!(
                    "kind {:?} takes no image (use kind \"i2v\" for image-to-video, or a condition at frame 0)",
                    spec.kind.as_str()
                ),
            ))
        }
        _ => {}
    }
    let model_id = spec
        .model
        .clone()
        .unwrap_or_else(|| cfg.default_model.clone());
    let Some(model) = cfg.model(&model_id) else {
        return Err(JobError::UnknownModel {
            model: model_id,
            known: cfg.model_ids(),
        });
    };
    // A demo-world model is trained at one size, rate and length; its own
    // settings replace the service defaults (a job may still name others).
    let native = model.demo.as_ref();
    let (width, height) = if spec.resolution.trim().eq_ignore_ascii_case(NATIVE) {
        let Some(d) = native else {
            return Err(JobError::invalid(
                "resolution",
                format!("{:?}", spec.resolution),
                format!(
                    "model {model_id:?} has no native size: give a preset or WxH \
                     (\"native\" is for the demo model)"
                ),
            ));
        };
        (d.width as u32, d.height as u32)
    } else {
        parse_resolution(&spec.resolution)?
    };
    let fps = spec.fps.or(native.map(|d| d.fps)).unwrap_or(DEFAULT_FPS);
    if !(fps.is_finite() && (MIN_FPS..=MAX_FPS).contains(&fps)) {
        return Err(JobError::invalid(
            "fps",
            fps,
            format!("must be in {MIN_FPS}..={MAX_FPS}"),
        ));
    }
    let defaults = cfg.modes.get(spec.mode);
    let num_frames = match (spec.seconds, spec.frames, native) {
        (Some(s), Some(f), _) => {
            return Err(JobError::invalid(
                "frames",
                f,
                format!("give either seconds ({s}) or frames, not both"),
            ))
        }
        (None, Some(f), _) => check_frames(f)?,
        (Some(s), None, _) => seconds_to_frames("seconds", s, fps)?,
        (None, None, Some(d)) => check_frames(d.num_frames as u32)?,
        (None, None, None) => seconds_to_frames("seconds", defaults.seconds, fps)?,
    };
    let steps = spec
        .steps
        .or(native.map(|d| d.steps as u32))
        .unwrap_or(defaults.steps);
    if !(1..=MAX_STEPS).contains(&steps) {
        return Err(JobError::invalid(
            "steps",
            steps,
            format!("must be in 1..={MAX_STEPS}"),
        ));
    }
    let guidance = spec
        .guidance
        .or(native.map(|d| d.guidance_scale))
        .unwrap_or(defaults.guidance);
    if !(guidance.is_finite() && (0.0..=MAX_GUIDANCE).contains(&guidance)) {
        return Err(JobError::invalid(
            "guidance",
            guidance,
            format!("must be a number in 0..={MAX_GUIDANCE}"),
        ));
    }
    let est = model.estimate(width, height, num_frames, guidance);
    if est.total_bytes > cfg.worker_vram_bytes {
        return Err(JobError::TooLarge {
            needed_bytes: est.total_bytes,
            limit_bytes: cfg.worker_vram_bytes,
            model: model_id,
            width,
            height,
            num_frames,
        });
    }
    let host = crate::limits::host_frame_bytes(width, height, num_frames);
    if host > cfg.worker_host_bytes {
        return Err(JobError::HostMemory {
            needed_bytes: host,
            limit_bytes: cfg.worker_host_bytes,
            width,
            height,
            num_frames,
        });
    }
    let image = match &spec.image {
        None => None,
        Some(ImageSource::Key(key)) => {
            check_key("image", key, &spec.tenant)?;
            Some(ImageInput::Key(key.clone()))
        }
        Some(ImageSource::InlineBase64(b64)) => {
            let bytes = decode_base64(b64)?;
            image_header(&bytes).map_err(|e| match e {
                JobError::Invalid { field, reason, .. } => JobError::Invalid {
                    field,
                    value: crate::error::display_value(b64),
                    reason,
                },
                other => other,
            })?;
            Some(ImageInput::Inline(bytes))
        }
    };
    let media = crate::media::validate_media(spec, num_frames)?;
    let seed = spec.seed.unwrap_or_else(|| default_seed(&job_id));
    Ok(ValidatedJob {
        job_id,
        tenant: spec.tenant.clone(),
        tier: spec.tier,
        kind: spec.kind,
        prompt: spec.prompt.clone(),
        negative_prompt: spec.negative_prompt.clone().unwrap_or_default(),
        image,
        width,
        height,
        num_frames,
        fps,
        steps,
        guidance,
        seed,
        model_id,
        mode: spec.mode,
        estimated_vram_bytes: est.total_bytes,
        submitted_ms: None,
        media,
    })
}

fn check_id(field: &str, id: &str) -> Result<(), JobError> {
    if is_safe_id(id) {
        Ok(())
    } else {
        Err(JobError::invalid(
            field,
            format!("{id:?}"),
            "must be 1 to 64 characters of A-Z a-z 0-9 _ - (no paths)",
        ))
    }
}

fn check_prompt(field: &str, text: &str, may_be_empty: bool) -> Result<(), JobError> {
    let n = text.chars().count();
    if (!may_be_empty && text.trim().is_empty()) || n > MAX_PROMPT_CHARS {
        let min = if may_be_empty { 0 } else { 1 };
        return Err(JobError::invalid(
            field,
            format!("{text:?}"),
            format!(
                "must be {min} to {MAX_PROMPT_CHARS} characters{} (got {n})",
                if may_be_empty { "" } else { ", not blank" }
            ),
        ));
    }
    Ok(())
}

/// Parses a preset name (case-insensitive) or `WxH` and checks the size.
pub fn parse_resolution(res: &str) -> Result<(u32, u32), JobError> {
    let value = format!("{res:?}");
    let lower = res.trim().to_ascii_lowercase();
    if let Some((_, w, h)) = PRESETS.iter().find(|(n, _, _)| *n == lower) {
        return Ok((*w, *h));
    }
    let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
    let bad_format = || {
        JobError::invalid(
            "resolution",
            &value,
            format!(
                "must be a preset ({}) or WxH, e.g. 1280x704",
                names.join(", ")
            ),
        )
    };
    let (w, h) = lower.split_once('x').ok_or_else(bad_format)?;
    let w: u32 = w.trim().parse().map_err(|_| bad_format())?;
    let h: u32 = h.trim().parse().map_err(|_| bad_format())?;
    for (side, v) in [("width", w), ("height", h)] {
        let near = nearest_list(&nearest_multiples(v, SIZE_MULTIPLE, MIN_SIDE, MAX_SIDE));
        if !v.is_multiple_of(SIZE_MULTIPLE) {
            return Err(JobError::invalid(
                "resolution",
                &value,
                format!("{side} {v} must be a multiple of {SIZE_MULTIPLE} (nearest: {near})"),
            ));
        }
        if !(MIN_SIDE..=MAX_SIDE).contains(&v) {
            return Err(JobError::invalid(
                "resolution",
                &value,
                format!("{side} {v} must be in {MIN_SIDE}..={MAX_SIDE} (nearest: {near})"),
            ));
        }
    }
    let pixels = w as u64 * h as u64;
    if pixels > MAX_PIXELS {
        return Err(JobError::invalid(
            "resolution",
            &value,
            format!(
                "{w}x{h} = {pixels} pixels exceeds the 4K limit 3840x2176 = {MAX_PIXELS} pixels"
            ),
        ));
    }
    Ok((w, h))
}

/// The valid values either side of `v` (multiples of `step` in
/// `min..=max`), deduplicated.
fn nearest_multiples(v: u32, step: u32, min: u32, max: u32) -> Vec<u32> {
    let lo = v / step * step;
    let mut out: Vec<u32> = Vec::new();
    for c in [lo, lo.saturating_add(step)] {
        let c = c.clamp(min, max);
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

fn nearest_list(v: &[u32]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Checks a frame count: 8n+1 in 1..=1441.
pub fn check_frames(n: u32) -> Result<u32, JobError> {
    if (1..=MAX_FRAMES).contains(&n) && (n - 1).is_multiple_of(FRAME_MULTIPLE) {
        return Ok(n);
    }
    let near: Vec<u32> = if n == 0 {
        vec![1]
    } else {
        let lo = (n - 1) / FRAME_MULTIPLE * FRAME_MULTIPLE + 1;
        let mut out: Vec<u32> = Vec::new();
        for c in [lo, lo.saturating_add(FRAME_MULTIPLE)] {
            let c = c.clamp(1, MAX_FRAMES);
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    };
    Err(JobError::invalid(
        "frames",
        n,
        format!(
            "must be 8n+1 in 1..={MAX_FRAMES} (1, 9, 17, ..., 1441) (nearest: {})",
            nearest_list(&near)
        ),
    ))
}

/// Seconds to frames: the smallest 8n+1 >= round(seconds * fps).
pub fn seconds_to_frames(field: &str, seconds: f64, fps: f64) -> Result<u32, JobError> {
    let max_s = MAX_FRAMES as f64 / fps;
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(JobError::invalid(
            field,
            seconds,
            format!("must be > 0 and at most {max_s:.2} s at {fps} fps ({MAX_FRAMES} frames)"),
        ));
    }
    let raw = (seconds * fps).round().max(1.0);
    let n = if raw > MAX_FRAMES as f64 {
        u32::MAX
    } else {
        let raw = raw as u32;
        (raw - 1).div_ceil(FRAME_MULTIPLE) * FRAME_MULTIPLE + 1
    };
    if n > MAX_FRAMES {
        return Err(JobError::invalid(
            field,
            seconds,
            format!("must be at most {max_s:.2} s at {fps} fps ({MAX_FRAMES} frames)"),
        ));
    }
    Ok(n)
}

/// A key is a relative path in the object store, and it must lie under
/// the tenant's own prefix: the store also holds other tenants' inputs and
/// outputs and the service's records, checkpoints and safety decisions.
pub(crate) fn check_key(field: &str, key: &str, tenant: &str) -> Result<(), JobError> {
    let bad = key.is_empty()
        || key.len() > MAX_KEY_LEN
        || key.starts_with('/')
        || key.contains('\\')
        || key.chars().any(char::is_control)
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        return Err(JobError::invalid(
            field,
            format!("{{\"key\": {key:?}}}"),
            format!(
                "key must be a relative object-store key of 1 to {MAX_KEY_LEN} bytes \
                 (segments separated by '/', none empty, '.' or '..')"
            ),
        ));
    }
    if key.split('/').next() != Some(tenant) || !key.contains('/') {
        return Err(JobError::invalid(
            field,
            format!("{{\"key\": {key:?}}}"),
            format!("key must be under the tenant's own prefix `{tenant}/`"),
        ));
    }
    Ok(())
}

/// Decodes an inline image's `inline_base64` (see [`decode_base64_capped`]).
pub(crate) fn decode_base64(b64: &str) -> Result<Vec<u8>, JobError> {
    decode_base64_capped("image", b64, MAX_INLINE_IMAGE_BYTES, "image")
}

/// Decodes `inline_base64` (standard alphabet, padding optional, a
/// `data:...;base64,` prefix and whitespace tolerated), refusing more than
/// `cap` decoded bytes before decoding any.
pub(crate) fn decode_base64_capped(
    field: &str,
    b64: &str,
    cap: usize,
    what: &str,
) -> Result<Vec<u8>, JobError> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    // Tolerate a data URL prefix and line breaks.
    let body = match b64.split_once(";base64,") {
        Some((head, rest)) if head.starts_with("data:") => rest,
        _ => b64,
    };
    let body: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if body.len() / 4 * 3 > cap {
        return Err(JobError::invalid(
            field,
            b64,
            format!(
                "inline {what} larger than {} MiB (upload it and send its key)",
                cap >> 20
            ),
        ));
    }
    ENGINE.decode(body.as_bytes()).map_err(|e| {
        JobError::invalid(
            field,
            b64,
            format!("inline_base64 is not valid base64: {e}"),
        )
    })
}

/// What an image's header says, read without decoding any pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
}

/// Reads and checks an image's header: PNG or JPEG, at most
/// [`MAX_IMAGE_SIDE`] per side and [`MAX_IMAGE_PIXELS`] in all, at most
/// [`MAX_INLINE_IMAGE_BYTES`] encoded. Errors name `image`.
pub fn image_header(bytes: &[u8]) -> Result<ImageHeader, JobError> {
    let value = format!("({} bytes)", bytes.len());
    let err = |reason: String| JobError::invalid("image", &value, reason);
    if bytes.len() > MAX_INLINE_IMAGE_BYTES {
        return Err(err(format!(
            "image larger than {} MiB",
            MAX_INLINE_IMAGE_BYTES >> 20
        )));
    }
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(format!("cannot read image: {e}")))?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => f,
        other => {
            return Err(err(format!(
                "must be a PNG or JPEG image (detected: {})",
                other
                    .map(|f| format!("{f:?}"))
                    .unwrap_or_else(|| "unknown".into())
            )))
        }
    };
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| err(format!("cannot read the {format:?} header: {e}")))?;
    if w == 0 || h == 0 {
        return Err(err("image has no pixels".into()));
    }
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE || w as u64 * h as u64 > MAX_IMAGE_PIXELS {
        return Err(err(format!(
            "image is {w}x{h}: at most {MAX_IMAGE_SIDE} per side and {MAX_IMAGE_PIXELS} pixels \
             (the header is checked before decoding)"
        )));
    }
    Ok(ImageHeader {
        format,
        width: w,
        height: h,
    })
}

/// Decodes PNG or JPEG bytes to RGB8 (alpha dropped, grey expanded) and
/// fits them to `width` x `height`: scaled to cover the frame keeping the
/// aspect ratio, centre-cropped, Lanczos3 resampling. Errors name `image`
/// and carry the decoder's message.
/// An input picture at the job's size: the largest centred region of the
/// job's aspect, scaled (Lanczos). Used for first frames, keyframes and
/// every frame of an input video, so all inputs are converted alike.
pub fn fit_frame(img: image::RgbImage, width: u32, height: u32) -> image::RgbImage {
    let (sw, sh) = img.dimensions();
    if (sw, sh) == (width, height) || sw == 0 || sh == 0 {
        return img;
    }
    let scale = (width as f64 / sw as f64).max(height as f64 / sh as f64);
    let cw = ((width as f64 / scale).round() as u32).clamp(1, sw);
    let ch = ((height as f64 / scale).round() as u32).clamp(1, sh);
    let crop = image::imageops::crop_imm(&img, (sw - cw) / 2, (sh - ch) / 2, cw, ch).to_image();
    image::imageops::resize(&crop, width, height, FilterType::Lanczos3)
}

/// [`fit_frame`] on raw RGB8 bytes of a `sw` x `sh` frame (`None` when the
/// byte count does not match the size).
pub fn fit_rgb8(data: Vec<u8>, sw: u32, sh: u32, width: u32, height: u32) -> Option<Vec<u8>> {
    let img = image::RgbImage::from_raw(sw, sh, data)?;
    Some(fit_frame(img, width, height).into_raw())
}

pub fn decode_image(bytes: &[u8], width: u32, height: u32) -> Result<RgbImage, JobError> {
    let value = format!("({} bytes)", bytes.len());
    let err = |reason: String| JobError::invalid("image", &value, reason);
    let format = image_header(bytes)?.format;
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_DECODE_BYTES);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| err(format!("cannot decode {format:?}: {e}")))?
        .to_rgb8();
    let (sw, sh) = img.dimensions();
    if sw == 0 || sh == 0 {
        return Err(err("image has no pixels".into()));
    }
    let fitted = fit_frame(img, width, height);
    Ok(RgbImage {
        width: width as usize,
        height: height as usize,
        data: fitted.into_raw(),
    })
}
