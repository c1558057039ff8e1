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
            _ => return Err(enum_error("kind", p.kind, "JOB_KIND_T2V, JOB_KIND_I2V")),
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
        })
    }
}
