//! VAE decode: a denoised job's latents to RGB8 frames.

use std::sync::Arc;
use std::time::Instant;

use vidflow_job::event::{JobEvent, Stage};
use vidflow_job::result::Failure;

use crate::faults::{self, Fault};
use crate::{DecodedJob, DenoisedJob, Msg, StageCtx};

pub fn decode(ctx: &StageCtx, job: DenoisedJob) -> Msg<DecodedJob> {
    faults::point(Fault::Decode);
    let t0 = Instant::now();
    let DenoisedJob {
        mut meta,
        req,
        state,
    } = job;
    let steps = state.schedule.steps();
    let (step, total) = meta.progress(steps, steps);
    ctx.events.emit(
        &meta.tenant,
        JobEvent::Progress {
            job_id: meta.job_id.clone(),
            stage: Stage::Decode,
            step,
            total,
            eta_s: None,
            batch: 0,
        },
    );
    let video = ctx
        .model(&meta.model_id)
        .and_then(|p| Ok(p.decode_video(&state, &req)?));
    match video {
        Ok(video) => {
            meta.timings
                .push((Stage::Decode, t0.elapsed().as_secs_f64()));
            Ok(DecodedJob {
                meta,
                video: Arc::new(video),
            })
        }
        Err(e) => Err(Failure::new(meta, Stage::Decode, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{encode, TextCache};
    use crate::testkit;

    /// A tiny-model job taken through every step (without the batcher).
    fn denoised(ctx: &StageCtx, id: &str) -> DenoisedJob {
        let v = testkit::validated(id, r#""kind": "t2v""#);
        let a = crate::admit::prepare(ctx, &testkit::memory_store(), v, testkit::date()).unwrap();
        let mut e = encode(ctx, &mut TextCache::new(4), a).unwrap();
        let p = ctx.model("ltx-tiny").unwrap();
        while e.state.step < e.state.schedule.steps() {
            let v = p.velocity_batched(&[(&e.state, &e.text)]).unwrap();
            p.apply_velocity(&mut e.state, &v[0]).unwrap();
        }
        DenoisedJob {
            meta: e.meta,
            req: e.req,
            state: e.state,
        }
    }

    #[test]
    fn decoding_gives_rgb8_frames_of_the_requested_size() {
        let (ctx, _) = testkit::ctx();
        let d = decode(&ctx, denoised(&ctx, "d1")).unwrap();
        let v = &d.video;
        assert_eq!((v.width, v.height, v.frames), (256, 256, 9));
        assert_eq!(v.rgb.len(), 256 * 256 * 9 * 3);
        assert!(v.untrained);
        assert_eq!(d.meta.timings.last().unwrap().0, Stage::Decode);
    }

    #[test]
    fn a_model_missing_at_decode_fails_the_decode_stage() {
        let (ctx, _) = testkit::ctx();
        let mut j = denoised(&ctx, "d2");
        j.meta.model_id = "gone".into();
        let f = decode(&ctx, j).err().unwrap();
        assert_eq!(f.stage, Stage::Decode);
        assert!(f.error.contains("`gone`"), "{}", f.error);
    }
}
