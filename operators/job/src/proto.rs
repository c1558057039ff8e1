//! The protobuf form of the job spec: `operators/job/proto/job.proto`
//! (package `vidflow.v1`), generated at build time (`build.rs`: protox +
//! prost-build, no protoc), and its conversions to and from the JSON form.
//!
//! Inline images travel as raw bytes here and as base64 in JSON; the
//! conversions translate. `MODE_UNSPECIFIED` means the default mode;
//! unspecified tier or kind is an error naming the field.

use base64::Engine;

use crate::error::JobError;
use crate::spec;

include!(concat!(env!("OUT_DIR"), "/vidflow.v1.rs"));

impl From<spec::Tier> for Tier {
    fn from(t: spec::Tier) -> Self {
        match t {
            spec::Tier::Premium => Tier::Premium,
            spec::Tier::Standard => Tier::Standard,
            spec::Tier::Free => Tier::Free,
        }
    }
}

impl From<spec::JobKind> for JobKind {
    fn from(k: spec::JobKind) -> Self {
        match k {
            spec::JobKind::T2v => JobKind::T2v,
            spec::JobKind::I2v => JobKind::I2v,
            spec::JobKind::V2v => JobKind::V2v,
        }
    }
}

impl From<spec::Mode> for Mode {
    fn from(m: spec::Mode) -> Self {
        match m {
            spec::Mode::Realtime => Mode::Realtime,
            spec::Mode::Standard => Mode::Standard,
            spec::Mode::Cinema => Mode::Cinema,
        }
    }
}

fn enum_error(field: &str, v: i32, allowed: &str) -> JobError {
    JobError::invalid(field, v, format!("must be one of {allowed}"))
}

/// A JSON-form source as protobuf (inline base64 decoded, capped at `cap`).
fn source_to_proto(
    field: &str,
    s: &spec::ImageSource,
    cap: usize,
) -> Result<ImageSource, JobError> {
    Ok(ImageSource {
        source: Some(match s {
            spec::ImageSource::Key(k) => image_source::Source::Key(k.clone()),
            spec::ImageSource::InlineBase64(b) => image_source::Source::Inline(
                crate::validate::decode_base64_capped(field, b, cap, "file")?,
            ),
        }),
    })
}

/// A protobuf source in the JSON form (inline bytes as base64).
fn source_from_proto(field: &str, s: ImageSource) -> Result<spec::ImageSource, JobError> {
    match s.source {
        None => Err(JobError::invalid(
            field,
            "{}",
            "ImageSource must set key or inline",
        )),
        Some(image_source::Source::Key(k)) => Ok(spec::ImageSource::Key(k)),
        Some(image_source::Source::Inline(b)) => Ok(spec::ImageSource::InlineBase64(
            base64::engine::general_purpose::STANDARD.encode(b),
        )),
    }
}

const VIDEO_CAP: usize = crate::media::MAX_INPUT_VIDEO_BYTES;
const IMAGE_CAP: usize = crate::validate::MAX_INLINE_IMAGE_BYTES;

/// JSON form to protobuf form. Fails only on an `inline_base64` that is
/// not valid base64 (error naming `image`).
impl TryFrom<&spec::JobSpec> for JobSpec {
    type Error = JobError;

    fn try_from(s: &spec::JobSpec) -> Result<Self, JobError> {
        let image = match &s.image {
            None => None,
            Some(spec::ImageSource::Key(k)) => Some(ImageSource {
                source: Some(image_source::Source::Key(k.clone())),
            }),
            Some(spec::ImageSource::InlineBase64(b)) => {
                let bytes = crate::validate::decode_base64(b)?;
                Some(ImageSource {
                    source: Some(image_source::Source::Inline(bytes)),
                })
            }
        };
        let conditions = s
            .conditions
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let f = format!("conditions[{i}]");
                Ok(Condition {
                    image: c
                        .image
                        .as_ref()
                        .map(|x| source_to_proto(&format!("{f}.image"), x, IMAGE_CAP))
                        .transpose()?,
                    video: c
                        .video
                        .as_ref()
                        .map(|x| source_to_proto(&format!("{f}.video"), x, VIDEO_CAP))
                        .transpose()?,
                    frame_index: c.frame_index,
                    strength: c.strength,
                })
            })
            .collect::<Result<Vec<_>, JobError>>()?;
        let video = s
            .video
            .as_ref()
            .map(|x| source_to_proto("video", x, VIDEO_CAP))
            .transpose()?;
        let extend = s
            .extend
            .as_ref()
            .map(|e| {
                Ok::<_, JobError>(Extend {
                    video: Some(source_to_proto("extend.video", &e.video, VIDEO_CAP)?),
                    overlap_frames: e.overlap_frames,
                })
            })
            .transpose()?;
        Ok(JobSpec {
            job_id: s.job_id.clone(),
            tenant: s.tenant.clone(),
            tier: Tier::from(s.tier) as i32,
            kind: JobKind::from(s.kind) as i32,
            prompt: s.prompt.clone(),
            negative_prompt: s.negative_prompt.clone(),
            image,
            resolution: s.resolution.clone(),
            seconds: s.seconds,
            frames: s.frames,
            fps: s.fps,
            mode: Mode::from(s.mode) as i32,
            steps: s.steps,
            guidance: s.guidance,
            seed: s.seed,
            model: s.model.clone(),
            audio: s.audio,
            conditions,
            video,
            strength: s.strength,
            extend,
            image_cond_noise_scale: s.image_cond_noise_scale,
            lora: s.lora.as_ref().map(|l| Lora {
                key: l.key.clone(),
                id: l.id.clone(),
                strength: l.strength,
            }),
        })
    }
}

impl TryFrom<spec::JobSpec> for JobSpec {
    type Error = JobError;

    fn try_from(s: spec::JobSpec) -> Result<Self, JobError> {
        JobSpec::try_from(&s)
    }
}

/// Protobuf form to JSON form. Fails on unspecified or unknown tier/kind,
/// an unknown mode, or an `ImageSource` with neither field set.
impl TryFrom<JobSpec> for spec::JobSpec {
    type Error = JobError;

    fn try_from(p: JobSpec) -> Result<Self, JobError> {
        let tier = match Tier::try_from(p.tier) {
            Ok(Tier::Premium) => spec::Tier::Premium,
            Ok(Tier::Standard) => spec::Tier::Standard,
            Ok(Tier::Free) => spec::Tier::Free,
            _ => {
                return Err(enum_error(
                    "tier",
                    p.tier,
                    "TIER_PREMIUM, TIER_STANDARD, TIER_FREE",
                ))
            }
        };
        let kind = match JobKind::try_from(p.kind) {
            Ok(JobKind::T2v) => spec::JobKind::T2v,
            Ok(JobKind::I2v) => spec::JobKind::I2v,
            Ok(JobKind::V2v) => spec::JobKind::V2v,
            _ => {
                return Err(enum_error(
                    "kind",
                    p.kind,
                    "JOB_KIND_T2V, JOB_KIND_I2V, JOB_KIND_V2V",
                ))
            }
        };
        let mode = match Mode::try_from(p.mode) {
            Ok(Mode::Realtime) => spec::Mode::Realtime,
            Ok(Mode::Standard | Mode::Unspecified) => spec::Mode::Standard,
            Ok(Mode::Cinema) => spec::Mode::Cinema,
            Err(_) => {
                return Err(enum_error(
                    "mode",
                    p.mode,
                    "MODE_UNSPECIFIED, MODE_REALTIME, MODE_STANDARD, MODE_CINEMA",
                ))
            }
        };
        let image = match p.image {
            None => None,
            Some(ImageSource { source: None }) => {
                return Err(JobError::invalid(
                    "image",
                    "{}",
                    "ImageSource must set key or inline",
                ))
            }
            Some(ImageSource {
                source: Some(image_source::Source::Key(k)),
            }) => Some(spec::ImageSource::Key(k)),
            Some(ImageSource {
                source: Some(image_source::Source::Inline(b)),
            }) => Some(spec::ImageSource::InlineBase64(
                base64::engine::general_purpose::STANDARD.encode(b),
            )),
        };
        let conditions = p
            .conditions
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let f = format!("conditions[{i}]");
                Ok(spec::ConditionSpec {
                    image: c
                        .image
                        .map(|x| source_from_proto(&format!("{f}.image"), x))
                        .transpose()?,
                    video: c
                        .video
                        .map(|x| source_from_proto(&format!("{f}.video"), x))
                        .transpose()?,
                    frame_index: c.frame_index,
                    strength: c.strength,
                })
            })
            .collect::<Result<Vec<_>, JobError>>()?;
        let video = p.video.map(|x| source_from_proto("video", x)).transpose()?;
        let extend = match p.extend {
            None => None,
            Some(e) => Some(spec::ExtendSpec {
                video: source_from_proto(
                    "extend.video",
                    e.video.unwrap_or(ImageSource { source: None }),
                )?,
                overlap_frames: e.overlap_frames,
            }),
        };
        Ok(spec::JobSpec {
            job_id: p.job_id,
            tenant: p.tenant,
            tier,
            kind,
            prompt: p.prompt,
            negative_prompt: p.negative_prompt,
            image,
            resolution: p.resolution,
            seconds: p.seconds,
            frames: p.frames,
            fps: p.fps,
            mode,
            steps: p.steps,
            guidance: p.guidance,
            seed: p.seed,
            model: p.model,
            audio: p.audio,
            conditions,
            video,
            strength: p.strength,
            extend,
            image_cond_noise_scale: p.image_cond_noise_scale,
            lora: p.lora.map(|l| spec::LoraSpec {
                key: l.key,
                id: l.id,
                strength: l.strength,
            }),
        })
    }
}
