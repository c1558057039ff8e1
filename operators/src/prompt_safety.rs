//! Prompt safety, before any compute: the prompt decision (recorded before
//! the job goes on) and, for image-to-video, the first frame through the
//! frame classifier, so an explicit input image is not animated.

use std::time::Instant;

use vidflow_job::event::Stage;
use vidflow_job::result::Failure;

use crate::safety_record::Safety;
use crate::{AdmittedJob, Msg, StageError};

pub fn check_prompt(safety: &Safety, job: AdmittedJob) -> Msg<AdmittedJob> {
    let t0 = Instant::now();
    let AdmittedJob { mut meta, req } = job;
    let prompt = String::from_utf8_lossy(&req.prompt).into_owned();
    let negative = String::from_utf8_lossy(&req.negative_prompt).into_owned();
    let d = match safety.decide_prompt(&meta, &prompt, &negative) {
        Ok(d) => d,
        Err(e) => return Err(Failure::new(meta, Stage::Safety, e)),
    };
    tracing::info!(job_id = %meta.job_id, decision = d.label(), category = ?d.category, policy = %d.policy_version, latency_ms = d.latency_ms, "prompt safety decision");
    meta.safety.push(d.clone());
    if !d.allowed {
        let e = StageError::Blocked {
            decision: Box::new(d),
            input_image: false,
        };
        return Err(Failure::new(meta, Stage::Safety, e));
    }
    // Every input picture the video will show: the first frame, keyframes,
    // a v2v source, the end of a video to extend.
    let mut inputs: Vec<(usize, usize, usize, &[u8])> = Vec::new();
    if let Some(img) = &req.image {
        inputs.push((img.width, img.height, 1, &img.data));
    }
    for c in &req.conditions {
        let f = &c.frames;
        inputs.push((f.width, f.height, f.frames, &f.data));
    }
    if let Some(v) = &req.video_to_video {
        let f = &v.frames;
        inputs.push((f.width, f.height, f.frames, &f.data));
    }
    for (w, h, n, data) in inputs {
        let d = match safety.visual.check(&meta.tenant, w, h, n, data) {
            Ok(d) => d,
            Err(e) => return Err(Failure::new(meta, Stage::Safety, StageError::from(e))),
        };
        if !d.allowed {
            meta.safety.push(d.clone());
            return Err(StageError::blocked(meta, d, true));
        }
    }
    meta.timings
        .push((Stage::Safety, t0.elapsed().as_secs_f64()));
    Ok(AdmittedJob { meta, req })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn admitted(id: &str, prompt: &str) -> AdmittedJob {
        let (ctx, _) = testkit::ctx();
        let mut v = testkit::validated(id, r#""kind": "t2v""#);
        v.prompt = prompt.into();
        crate::admit::prepare(&ctx, &testkit::memory_store(), v, testkit::date()).unwrap()
    }

    #[test]
    fn a_safe_prompt_passes_and_its_decision_is_recorded_once() {
        let (safety, store) = testkit::safety();
        let j = check_prompt(&safety, admitted("p1", "a red fox running through snow")).unwrap();
        assert_eq!(j.meta.safety.len(), 1);
        assert!(j.meta.safety[0].allowed);
        assert_eq!(j.meta.timings[0].0, Stage::Safety);
        let key = safety
            .prompt_record_key("acme", "p1", "a red fox running through snow", "")
            .unwrap();
        assert!(key.as_ref().starts_with("safety/acme/p1/prompt-"), "{key}");
        assert!(store.exists_blocking(&key).unwrap());
    }

    #[test]
    fn a_blocked_prompt_fails_naming_its_category() {
        let (safety, _) = testkit::safety();
        let f = check_prompt(
            &safety,
            admitted("p2", "explicit porn scene in a motel room"),
        )
        .err()
        .unwrap();
        assert_eq!(f.stage, Stage::Safety);
        assert!(
            f.error
                .starts_with("blocked by safety policy (prompt check): category sexual"),
            "{}",
            f.error
        );
        assert!(f.meta.timings.is_empty());
    }

    #[test]
    fn a_recorded_decision_is_reused_and_a_corrupt_one_is_an_error() {
        let (safety, store) = testkit::safety();
        // A decision recorded for this very input is reused.
        let j = admitted("p3", "a red fox");
        let mut d = safety.prompt.check("acme", "a red fox").unwrap();
        d.reason = "recorded earlier".into();
        let key = safety
            .prompt_record_key("acme", "p3", "a red fox", "")
            .unwrap();
        store
            .put_atomic_blocking(&key, serde_json::to_vec(&d).unwrap())
            .unwrap();
        let j = check_prompt(&safety, j).unwrap();
        assert_eq!(j.meta.safety[0].reason, "recorded earlier");
        let j4 = admitted("p4", "a red fox");
        let key = safety
            .prompt_record_key("acme", "p4", "a red fox", "")
            .unwrap();
        store.put_atomic_blocking(&key, b"{trunc".to_vec()).unwrap();
        let f = check_prompt(&safety, j4).err().unwrap();
        assert!(
            f.error.contains(&format!("{key} is corrupt")),
            "{}",
            f.error
        );
    }

    #[test]
    fn an_allow_for_one_prompt_is_not_reused_for_another() {
        // The same (tenant, job id) comes back with an unsafe prompt: the
        // "allow" recorded for the first prompt must not let it through.
        let (safety, _) = testkit::safety();
        let first = check_prompt(&safety, admitted("p5", "a red fox")).unwrap();
        assert!(first.meta.safety[0].allowed);
        let f = check_prompt(
            &safety,
            admitted("p5", "explicit porn scene in a motel room"),
        )
        .err()
        .unwrap();
        assert_eq!(f.stage, Stage::Safety, "{}", f.error);
        assert!(f.error.contains("category sexual"), "{}", f.error);
    }
}
