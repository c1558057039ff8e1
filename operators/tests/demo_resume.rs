//! A job of the demo model (trained: its picture can be judged) interrupted
//! after a checkpoint and resumed from it in a fresh pipeline gives the same
//! video, byte for byte, as the uninterrupted run, and that video shows what
//! the prompt asked for (its colour on its background: what the shipped model
//! draws reliably today).

use std::sync::Arc;

use vidflow_connectors::store::OutputStore;
use vidflow_gpu::demo::{self, judge};
use vidflow_gpu::pipeline::{Flow, GenerateRequest, LtxPipeline, Video};
use vidflow_operators::checkpoint::Checkpoints;

fn request() -> GenerateRequest {
    demo::info(demo::default_dir())
        .unwrap()
        .unwrap()
        .request("a green square moving up on a navy background", 11)
}

fn pipeline() -> LtxPipeline {
    demo::verify(demo::default_dir()).unwrap();
    LtxPipeline::from_dir(demo::default_dir()).unwrap()
}

fn judged(v: &Video) -> judge::Judgement {
    let world = demo::World::load(demo::default_dir()).unwrap();
    judge::judge(
        &world,
        judge::Frames {
            width: v.width,
            height: v.height,
            frames: v.frames,
            rgb: &v.rgb,
        },
    )
}

#[test]
fn a_resumed_demo_job_equals_the_uninterrupted_one() {
    let req = request();
    let whole = pipeline().generate(&req, &mut |_| Flow::Continue).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let ck = Checkpoints {
        store: Arc::new(OutputStore::local(tmp.path()).unwrap()),
        every: 10,
        per_tier: Default::default(),
        keep: 2,
    };
    // First run: checkpoints every 10 steps, killed after step 12.
    {
        let p = pipeline();
        let mut st = p.prepare(&req).unwrap();
        let pos = p.encode_prompt(&req.prompt).unwrap();
        let neg = p.encode_prompt(&req.negative_prompt).unwrap();
        let text = p
            .text_condition(&pos, Some(&neg), req.guidance_scale)
            .unwrap();
        while st.step < 12 {
            p.step(&mut st, &text).unwrap();
            if ck.due(vidflow_operators::Tier::Standard, st.step, req.steps) {
                ck.save("acme", "job-1", &req, &st).unwrap();
            }
        }
    }
    // Second run: a fresh pipeline picks up the step-10 checkpoint.
    let p = pipeline();
    let mut st = p.prepare(&req).unwrap();
    let r = ck.resume("acme", "job-1", &req, &mut st).unwrap();
    assert_eq!((r.step, st.step), (10, 10));
    assert!(r.rejected.is_empty());
    let pos = p.encode_prompt(&req.prompt).unwrap();
    let neg = p.encode_prompt(&req.negative_prompt).unwrap();
    let text = p
        .text_condition(&pos, Some(&neg), req.guidance_scale)
        .unwrap();
    p.denoise(&mut st, &text, &mut |_| Flow::Continue).unwrap();
    let resumed = p.decode_video(&st, &req).unwrap();
    assert!(resumed.rgb == whole.rgb, "resumed video differs");

    let seen = judged(&whole);
    let o = &seen.objects[0];
    assert_eq!(
        (seen.background.as_str(), o.colour.as_str()),
        ("navy", "green"),
        "{seen:?}"
    );
}
