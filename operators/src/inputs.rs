//! Admission's reading of a job's input media beyond the first frame:
//! keyframe conditions, a video-to-video source and a video to extend. Each
//! file is read once (by key, size-capped, or inline), decoded once, and
//! every frame converted to the job's size as the first frame is
//! ([`vidflow_job::fit_rgb8`]). Videos stream frame by frame, so memory is
//! bounded by the frames the job keeps, never by the file's length.

use std::collections::VecDeque;

use vidflow_connectors::mp4::{decode_frames, VideoLimits};
use vidflow_connectors::store::OutputStore;
use vidflow_gpu::pipeline::{ConditionInput, GenerateRequest, RgbFrames, VideoToVideo};
use vidflow_job::media::{MediaInput, MediaKind, MAX_INPUT_VIDEO_BYTES};
use vidflow_job::validate::{MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MAX_INLINE_IMAGE_BYTES};
use vidflow_job::{ImageInput, ValidatedJob};

use crate::error::{ImageKeyError, StageError};

/// Most frames of an input video ever decoded (the longest job's length).
const MAX_INPUT_FRAMES: u32 = vidflow_job::limits::MAX_FRAMES;

fn bad(field: &str, reason: impl Into<String>) -> StageError {
    StageError::Media {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// The file's bytes: inline, or read from the store (capped by kind).
fn read(field: &str, m: &MediaInput, store: &OutputStore) -> Result<Vec<u8>, StageError> {
    match &m.source {
        ImageInput::Inline(b) => Ok(b.clone()),
        ImageInput::Key(k) => {
            let cap = match m.kind {
                MediaKind::Image => MAX_INLINE_IMAGE_BYTES,
                MediaKind::Video => MAX_INPUT_VIDEO_BYTES,
            } as u64;
            let key_err = |source: ImageKeyError| StageError::MediaKey {
                field: field.to_string(),
                key: k.clone(),
                source,
            };
            let path = object_store::path::Path::parse(k).map_err(|e| key_err(e.into()))?;
            store
                .get_capped_blocking(&path, cap)
                .map_err(|e| key_err(e.into()))
        }
    }
}

/// Streams a video's frames, each fitted to `w` x `h`, to `keep`.
fn video_frames(
    field: &str,
    bytes: &[u8],
    w: u32,
    h: u32,
    keep: &mut dyn FnMut(Vec<u8>) -> bool,
) -> Result<u32, StageError> {
    let limits = VideoLimits {
        max_side: MAX_IMAGE_SIDE,
        max_pixels: MAX_IMAGE_PIXELS,
        max_frames: MAX_INPUT_FRAMES,
    };
    let mut on =
        |sw: u32, sh: u32, rgb: &[u8]| match vidflow_job::fit_rgb8(rgb.to_vec(), sw, sh, w, h) {
            Some(f) => keep(f),
            None => false,
        };
    let info = decode_frames(bytes, limits, &mut on).map_err(|e| bad(field, e.to_string()))?;
    Ok(info.total_frames)
}

fn frames_of(w: u32, h: u32, list: Vec<Vec<u8>>) -> RgbFrames {
    RgbFrames {
        width: w as usize,
        height: h as usize,
        frames: list.len(),
        data: list.concat(),
    }
}

/// Adds the job's conditions, v2v source and extension to `req`.
pub fn add_media(
    v: &ValidatedJob,
    store: &OutputStore,
    req: &mut GenerateRequest,
) -> Result<(), StageError> {
    let (w, h, n) = (v.width, v.height, v.num_frames);
    for (i, c) in v.media.conditions.iter().enumerate() {
        let field = match c.media.kind {
            MediaKind::Image => format!("conditions[{i}].image"),
            MediaKind::Video => format!("conditions[{i}].video"),
        };
        let bytes = read(&field, &c.media, store)?;
        let frames = match c.media.kind {
            MediaKind::Image => {
                let img = vidflow_job::decode_image(&bytes, w, h)
                    .map_err(|e| bad(&field, reason_of(e)))?;
                RgbFrames {
                    width: img.width,
                    height: img.height,
                    frames: 1,
                    data: img.data,
                }
            }
            MediaKind::Video => {
                let room = n - c.frame_index;
                let mut kept = Vec::new();
                let total = video_frames(&field, &bytes, w, h, &mut |f| {
                    kept.push(f);
                    (kept.len() as u32) < room
                })?;
                let used = kept.len() as u32;
                if (used - 1) % 8 != 0 {
                    return Err(bad(
                        &field,
                        format!(
                            "{used} of its {total} frames fit from frame {}: a condition video must give 8k+1 frames (1, 9, 17, ...); trim it",
                            c.frame_index
                        ),
                    ));
                }
                frames_of(w, h, kept)
            }
        };
        req.conditions.push(ConditionInput {
            frames,
            frame_index: c.frame_index as usize,
            strength: c.strength,
        });
    }
    if let Some((m, strength)) = &v.media.v2v {
        let bytes = read("video", m, store)?;
        let mut kept = Vec::new();
        let total = video_frames("video", &bytes, w, h, &mut |f| {
            kept.push(f);
            (kept.len() as u32) < n
        })?;
        if (kept.len() as u32) < n {
            return Err(bad(
                "video",
                format!("has {total} frames, the job makes {n}: ask for at most {total} frames"),
            ));
        }
        req.video_to_video = Some(VideoToVideo {
            frames: frames_of(w, h, kept),
            strength: *strength,
        });
    }
    if let Some((m, overlap)) = &v.media.extend {
        let bytes = read("extend.video", m, store)?;
        let k = *overlap as usize;
        let mut tail: VecDeque<Vec<u8>> = VecDeque::with_capacity(k + 1);
        let total = video_frames("extend.video", &bytes, w, h, &mut |f| {
            tail.push_back(f);
            if tail.len() > k {
                tail.pop_front();
            }
            true
        })?;
        if tail.len() < k {
            return Err(bad(
                "extend.video",
                format!("has {total} frames, fewer than overlap_frames {k}"),
            ));
        }
        req.conditions.push(ConditionInput {
            frames: frames_of(w, h, tail.into()),
            frame_index: 0,
            strength: 1.0,
        });
    }
    if let Some(n) = v.media.noise_scale {
        req.image_cond_noise_scale = n;
    }
    Ok(())
}

/// A decode error's reason without its `image` field name (the caller
/// names the field).
fn reason_of(e: vidflow_job::JobError) -> String {
    match e {
        vidflow_job::JobError::Invalid { reason, .. } => reason,
        other => other.to_string(),
    }
}
