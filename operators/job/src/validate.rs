//! Validation: a [`JobSpec`] becomes a [`ValidatedJob`] (every default
//! filled in, every size checked against its model's rules and the service
//! limits, inline images decoded, VRAM admitted) or a [`JobError`] naming
//! the field, the value and what is allowed.

use crate::config::{AdmissionConfig, Architecture};
use crate::error::JobError;
use crate::id::{default_seed, generate_job_id, is_safe_id};
use crate::spec::{ImageSource, JobKind, JobSpec, Mode, Tier};

pub use crate::limits::*;
pub use crate::source::*;
/// Prompt and negative prompt length limit, in characters.
pub const MAX_PROMPT_CHARS: usize = 2000;

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
    /// The LoRA adapter the job applies: a key under the tenant's prefix,
    /// or a registry adapter of the job's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraInput>,
}

/// Where a job's adapter comes from, checked.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraSource {
    /// An object key under the tenant's prefix.
    Key(String),
    /// A `[[lora]]` of the registry, its file resolved.
    Registry {
        id: String,
        path: std::path::PathBuf,
    },
}

/// A job's adapter and the strength it applies it with.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraInput {
    pub source: LoraSource,
    pub strength: f64,
}

/// Checks a job's `lora` against the tenant and the model's registry
/// adapters.
fn check_lora(
    spec: &JobSpec,
    cfg: &AdmissionConfig,
    model_id: &str,
) -> Result<Option<LoraInput>, JobError> {
    let Some(l) = &spec.lora else {
        return Ok(None);
    };
    let strength = l.strength.unwrap_or(1.0);
    if !(strength.is_finite() && strength > 0.0 && strength <= 2.0) {
        return Err(JobError::invalid(
            "lora.strength",
            strength,
            "must be in (0, 2]",
        ));
    }
    let source = match (&l.key, &l.id) {
        (Some(key), None) => {
            check_key("lora.key", key, &spec.tenant)?;
            LoraSource::Key(key.clone())
        }
        (None, Some(id)) => {
            let Some(e) = cfg
                .loras
                .iter()
                .find(|e| &e.id == id && e.model == model_id)
            else {
                let known: Vec<&str> = cfg
                    .loras
                    .iter()
                    .filter(|e| e.model == model_id)
                    .map(|e| e.id.as_str())
                    .collect();
                return Err(JobError::invalid(
                    "lora.id",
                    id,
                    format!(
                        "is not an adapter of model {model_id:?} (its adapters: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            };
            LoraSource::Registry {
                id: id.clone(),
                path: e.path.clone(),
            }
        }
        _ => {
            return Err(JobError::invalid(
                "lora",
                "(given)",
                "give exactly one of key (an object key) and id (a registry adapter)",
            ))
        }
    };
    Ok(Some(LoraInput { source, strength }))
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
    let rules = model.rules;
    if !model.kinds.contains(&spec.kind) {
        let kinds: Vec<&str> = model.kinds.iter().map(|k| k.as_str()).collect();
        return Err(JobError::invalid(
            "kind",
            spec.kind.as_str(),
            format!("model {model_id:?} serves {}", kinds.join(", ")),
        ));
    }
    if model.architecture != Architecture::Ltx {
        let field = if spec.extend.is_some() {
            Some("extend")
        } else if !spec.conditions.is_empty() {
            Some("conditions")
        } else {
            None
        };
        if let Some(field) = field {
            return Err(JobError::invalid(
                field,
                "(given)",
                format!(
                    "model {model_id:?} ({}) takes no keyframes or extension: those are LTX-Video features",
                    model.architecture.as_str()
                ),
            ));
        }
    }
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
        parse_resolution_in(&spec.resolution, rules.size_multiple)?
    };
    let fps = spec
        .fps
        .or(native.map(|d| d.fps))
        .or(rules.fps)
        .unwrap_or(DEFAULT_FPS);
    if !(fps.is_finite() && (MIN_FPS..=MAX_FPS).contains(&fps)) {
        return Err(JobError::invalid(
            "fps",
            fps,
            format!("must be in {MIN_FPS}..={MAX_FPS}"),
        ));
    }
    if let Some(own) = rules.fps.filter(|own| *own != fps) {
        return Err(JobError::invalid(
            "fps",
            fps,
            format!("model {model_id:?} generates {own} fps only"),
        ));
    }
    let frames = FrameRule {
        multiple: rules.frame_multiple,
        max: rules.max_frames,
    };
    let defaults = cfg.modes.get(spec.mode);
    let num_frames = match (spec.seconds, spec.frames, native) {
        (Some(s), Some(f), _) => {
            return Err(JobError::invalid(
                "frames",
                f,
                format!("give either seconds ({s}) or frames, not both"),
            ))
        }
        (None, Some(f), _) => frames.check(f)?,
        (Some(s), None, _) => frames.from_seconds("seconds", s, fps)?,
        (None, None, Some(d)) => frames.check(d.num_frames as u32)?,
        (None, None, None) => frames.from_seconds("seconds", defaults.seconds, fps)?,
    };
    let steps = spec
        .steps
        .or(native.map(|d| d.steps as u32))
        .or(model.steps)
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
    // A video longer than one pass is generated segment by segment: a
    // worker holds one segment's latents and frames at a time.
    let pass_frames = if model.chains() {
        cfg.chain.pass_frames(num_frames)
    } else {
        num_frames
    };
    let est = model.estimate(width, height, pass_frames, guidance);
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
    let host = crate::limits::host_frame_bytes(width, height, pass_frames);
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
    let media = crate::media::validate_media(spec, num_frames, pass_frames)?;
    let lora = check_lora(spec, cfg, &model_id)?;
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
        lora,
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

/// Parses a preset name (case-insensitive) or `WxH` and checks the size
/// against LTX-Video's rules.
pub fn parse_resolution(res: &str) -> Result<(u32, u32), JobError> {
    parse_resolution_in(res, SIZE_MULTIPLE)
}

/// Parses a preset name (case-insensitive) or `WxH` and checks the size,
/// sides multiples of `multiple` (the model's).
pub fn parse_resolution_in(res: &str, multiple: u32) -> Result<(u32, u32), JobError> {
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
        let near = nearest_list(&nearest_multiples(v, multiple, MIN_SIDE, MAX_SIDE));
        if !v.is_multiple_of(multiple) {
            return Err(JobError::invalid(
                "resolution",
                &value,
                format!("{side} {v} must be a multiple of {multiple} (nearest: {near})"),
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

/// A model's frame rule: `multiple * n + 1` frames, at most `max`.
#[derive(Debug, Clone, Copy)]
pub struct FrameRule {
    pub multiple: u32,
    pub max: u32,
}

impl FrameRule {
    /// LTX-Video's: 8n+1 up to [`MAX_FRAMES`] (longer than a pass goes in
    /// chained segments).
    pub const LTX: FrameRule = FrameRule {
        multiple: FRAME_MULTIPLE,
        max: MAX_FRAMES,
    };

    /// Checks a frame count, naming the nearest valid ones.
    pub fn check(self, n: u32) -> Result<u32, JobError> {
        let (m, max) = (self.multiple, self.max);
        if (1..=max).contains(&n) && (n - 1).is_multiple_of(m) {
            return Ok(n);
        }
        let near: Vec<u32> = if n == 0 {
            vec![1]
        } else {
            let lo = ((n - 1) / m * m + 1).min((max - 1) / m * m + 1);
            let mut out: Vec<u32> = Vec::new();
            for c in [lo, lo.saturating_add(m)] {
                if c <= max && !out.contains(&c) {
                    out.push(c);
                }
            }
            out
        };
        Err(JobError::invalid(
            "frames",
            n,
            format!(
                "must be {m}n+1 in 1..={max} (1, {}, {}, ..., {max}) (nearest: {})",
                1 + m,
                1 + 2 * m,
                nearest_list(&near)
            ),
        ))
    }

    /// Seconds to frames: the smallest `multiple * n + 1` >=
    /// round(seconds * fps).
    pub fn from_seconds(self, field: &str, seconds: f64, fps: f64) -> Result<u32, JobError> {
        let (m, max) = (self.multiple, self.max);
        let max_s = max as f64 / fps;
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(JobError::invalid(
                field,
                seconds,
                format!("must be > 0 and at most {max_s:.2} s at {fps} fps ({max} frames)"),
            ));
        }
        let raw = (seconds * fps).round().max(1.0);
        let n = if raw > max as f64 {
            u32::MAX
        } else {
            let raw = raw as u32;
            (raw - 1).div_ceil(m) * m + 1
        };
        if n > max {
            return Err(JobError::invalid(
                field,
                seconds,
                format!("must be at most {max_s:.2} s at {fps} fps ({max} frames)"),
            ));
        }
        Ok(n)
    }
}

/// Checks a frame count against LTX-Video's rule ([`FrameRule::LTX`]).
pub fn check_frames(n: u32) -> Result<u32, JobError> {
    FrameRule::LTX.check(n)
}

/// Seconds to frames under LTX-Video's rule ([`FrameRule::LTX`]).
pub fn seconds_to_frames(field: &str, seconds: f64, fps: f64) -> Result<u32, JobError> {
    FrameRule::LTX.from_seconds(field, seconds, fps)
}
