//! Frame safety, after decode and before the output is stored: a blocked
//! video never reaches the store. The decision is recorded first.

use std::time::Instant;

use vidflow_job::event::Stage;
use vidflow_job::result::Failure;

use crate::safety_record::Safety;
use crate::{DecodedJob, Msg, StageError};

pub fn check_frames(safety: &Safety, job: DecodedJob) -> Msg<DecodedJob> {
    let t0 = Instant::now();
    let DecodedJob { mut meta, video } = job;
    let d = match safety.decide_video(&meta, &video) {
        Ok(d) => d,
        Err(e) => return Err(Failure::new(meta, Stage::Safety, e)),
    };
    tracing::info!(job_id = %meta.job_id, decision = d.label(), category = ?d.category, latency_ms = d.latency_ms, "visual safety decision");
    meta.safety.push(d.clone());
    if !d.allowed {
        return Err(StageError::blocked(meta, d, false));
    }
    meta.timings
        .push((Stage::Safety, t0.elapsed().as_secs_f64()));
    Ok(DecodedJob { meta, video })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use vidflow_gpu::pipeline::Video;
    use vidflow_job::result::JobMeta;

    fn decoded(id: &str, rgb: u8) -> DecodedJob {
        let (w, h, f) = (64, 64, 3);
        DecodedJob {
            meta: JobMeta::new(
                id.into(),
                "acme".into(),
                "ltx-tiny".into(),
                vidflow_job::Tier::Free,
                crate::testkit::date(),
            ),
            video: Arc::new(Video {
                width: w,
                height: h,
                frames: f,
                fps: 24.0,
                rgb: vec![rgb; w * h * f * 3],
                untrained: true,
            }),
        }
    }

    #[test]
    fn plain_frames_pass_and_the_decision_is_recorded() {
        let (safety, store) = crate::testkit::safety();
        let j = check_frames(&safety, decoded("v1", 40)).unwrap();
        assert_eq!(j.meta.safety.len(), 1);
        assert!(j.meta.safety[0].allowed);
        assert_eq!(j.meta.safety[0].stage, vidflow_job::safety::Check::Visual);
        let key = safety.visual_record_key("acme", "v1").unwrap();
        assert!(store.exists_blocking(&key).unwrap());
    }

    #[test]
    fn a_recorded_block_is_honoured_and_the_job_fails_at_safety() {
        let (safety, store) = crate::testkit::safety();
        let mut d = safety
            .visual
            .check("acme", 64, 64, 1, &[40; 64 * 64 * 3])
            .unwrap();
        d.allowed = false;
        d.category = Some("sexual".into());
        store
            .put_atomic_blocking(
                &safety.visual_record_key("acme", "v2").unwrap(),
                serde_json::to_vec(&d).unwrap(),
            )
            .unwrap();
        let f = check_frames(&safety, decoded("v2", 40)).err().unwrap();
        assert_eq!(f.stage, Stage::Safety);
        assert!(
            f.error
                .starts_with("blocked by safety policy (visual check): category sexual"),
            "{}",
            f.error
        );
        assert_eq!(f.meta.safety.len(), 1);
    }
}
