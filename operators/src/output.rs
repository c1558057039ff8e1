//! Output: frames to an H.264 MP4, stored atomically under
//! `tenant/yyyy-mm-dd/job_id.mp4`, announced with `completed`.

use std::borrow::Cow;
use std::time::Instant;

use vidflow_connectors::mp4::{encode_mp4, MAX_DIM, MAX_SHORT_DIM};
use vidflow_connectors::store::{output_key, OutputStore};
use vidflow_gpu::pipeline::Video;
use vidflow_job::event::{JobEvent, Stage};
use vidflow_job::result::{Failure, JobMeta, JobResult, StoredVideo};

use crate::faults::{self, Fault};
use crate::{DecodedJob, Msg, StageCtx, StageError};

pub fn output(ctx: &StageCtx, store: &OutputStore, job: DecodedJob) -> Msg<JobResult> {
    let t0 = Instant::now();
    let DecodedJob { meta, video } = job;
    let (rgb, w, h) = crop_to_encoder_limits(&video);
    match encode_mp4(&rgb, w as u32, h as u32, video.frames as u32, video.fps) {
        Ok(mp4) => store_video(ctx, store, meta, mp4, video.untrained, t0),
        Err(e) => Err(Failure::new(meta, Stage::Output, StageError::from(e))),
    }
}

/// Stores a finished job's MP4 at its key and announces `completed`: the
/// one way a video is delivered (one clip, or a chain's joined segments).
/// `t0` is when the output stage began (its timing).
pub fn store_video(
    ctx: &StageCtx,
    store: &OutputStore,
    mut meta: JobMeta,
    mp4: Vec<u8>,
    untrained: bool,
    t0: Instant,
) -> Msg<JobResult> {
    let stored = (|| -> Result<_, StageError> {
        let key = output_key(&meta.tenant, meta.date, &meta.job_id)?;
        faults::point(Fault::OutputWrite);
        Ok(store.put_atomic_blocking(&key, mp4)?)
    })();
    match stored {
        Ok(obj) => {
            meta.timings
                .push((Stage::Output, t0.elapsed().as_secs_f64()));
            let stored = StoredVideo {
                key: obj.key.to_string(),
                size: obj.size,
                sha256: obj.sha256_hex,
            };
            ctx.events.emit(
                &meta.tenant,
                JobEvent::Completed {
                    job_id: meta.job_id.clone(),
                    key: stored.key.clone(),
                    size: stored.size,
                    sha256: stored.sha256.clone(),
                    untrained,
                },
            );
            Ok(JobResult::completed(meta, stored, untrained))
        }
        Err(e) => Err(Failure::new(meta, Stage::Output, e)),
    }
}

/// LTX generates sizes in multiples of 32, so "4K" is generated at
/// 3840x2176; H.264 encoders stop at 3840x2160. Such frames are centre-cropped
/// to the limit (8 rows off top and bottom for 4K) rather than failing a job
/// that has already been paid for in compute.
pub fn crop_to_encoder_limits(v: &Video) -> (Cow<'_, [u8]>, usize, usize) {
    let (long, short) = (MAX_DIM as usize, MAX_SHORT_DIM as usize);
    let (mw, mh) = if v.width >= v.height {
        (long, short)
    } else {
        (short, long)
    };
    let (tw, th) = (v.width.min(mw) & !1, v.height.min(mh) & !1);
    if (tw, th) == (v.width, v.height) {
        return (Cow::Borrowed(&v.rgb), tw, th);
    }
    let (x0, y0) = ((v.width - tw) / 2, (v.height - th) / 2);
    let mut out = Vec::with_capacity(v.frames * tw * th * 3);
    for f in 0..v.frames {
        for y in 0..th {
            let row = (f * v.height + y0 + y) * v.width + x0;
            out.extend_from_slice(&v.rgb[row * 3..(row + tw) * 3]);
        }
    }
    (Cow::Owned(out), tw, th)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use vidflow_job::result::JobMeta;

    fn decoded(tenant: &str, id: &str, w: usize, h: usize) -> DecodedJob {
        let mut meta = JobMeta::new(
            id.into(),
            tenant.into(),
            "ltx-tiny".into(),
            vidflow_job::Tier::Standard,
            crate::testkit::date(),
        );
        meta.timings.push((Stage::Decode, 0.5));
        DecodedJob {
            meta,
            video: Arc::new(Video {
                width: w,
                height: h,
                frames: 3,
                fps: 24.0,
                rgb: (0..w * h * 9).map(|i| (i % 251) as u8).collect(),
                untrained: true,
            }),
        }
    }

    #[test]
    fn a_video_is_stored_as_mp4_under_its_tenant_date_and_id() {
        let (ctx, events) = crate::testkit::ctx();
        let store = crate::testkit::memory_store();
        let r = output(&ctx, &store, decoded("acme", "o1", 64, 48)).unwrap();
        assert_eq!(r.status, vidflow_job::JobStatus::Completed);
        assert_eq!(r.key.as_deref(), Some("acme/2026-12-03/o1.mp4"));
        let bytes = store
            .get_blocking(&"acme/2026-12-03/o1.mp4".into())
            .unwrap();
        assert_eq!(r.size, Some(bytes.len() as u64));
        assert_eq!(
            r.sha256.as_deref(),
            Some(vidflow_connectors::store::sha256_hex(&bytes).as_str())
        );
        assert_eq!(&bytes[4..8], b"ftyp");
        assert!(r.untrained);
        assert_eq!(r.accel_s, 0.5);
        match events.try_recv().unwrap() {
            JobEvent::Completed { job_id, key, .. } => {
                assert_eq!(
                    (job_id.as_str(), key.as_str()),
                    ("o1", "acme/2026-12-03/o1.mp4")
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unstorable_job_fails_the_output_stage_and_stores_nothing() {
        let (ctx, events) = crate::testkit::ctx();
        let store = crate::testkit::memory_store();
        // Frames under the encoder's 16 px are refused, naming the field.
        let f = output(&ctx, &store, decoded("acme", "o2", 8, 8))
            .err()
            .unwrap();
        assert_eq!(f.stage, Stage::Output);
        assert!(f.error.contains("width"), "{}", f.error);
        assert!(events.try_recv().is_err());
        assert!(!store
            .exists_blocking(&"acme/2026-12-03/o2.mp4".into())
            .unwrap());
    }

    #[test]
    fn four_k_is_cropped_to_the_encoder_limit_centred() {
        let (w, h, f) = (3840usize, 2176usize, 1usize);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| ((i / 3 / w) % 251) as u8).collect();
        let v = Video {
            width: w,
            height: h,
            frames: f,
            fps: 24.0,
            rgb,
            untrained: true,
        };
        let (out, tw, th) = crop_to_encoder_limits(&v);
        assert_eq!((tw, th), (3840, 2160));
        assert_eq!(out.len(), tw * th * 3);
        // First output row is input row 8.
        assert_eq!(out[0], 8);
        let small = Video {
            width: 256,
            height: 256,
            frames: 1,
            fps: 24.0,
            rgb: vec![1; 256 * 256 * 3],
            untrained: true,
        };
        assert!(matches!(crop_to_encoder_limits(&small).0, Cow::Borrowed(_)));
    }
}
