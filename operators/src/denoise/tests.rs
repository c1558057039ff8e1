use super::*;
use crate::encode::{encode, TextCache};
use crate::testkit;

fn encoded(ctx: &StageCtx, id: &str, extra: &str) -> EncodedJob {
    let v = testkit::validated(id, extra);
    let a = crate::admit::prepare(ctx, &testkit::memory_store(), v, testkit::date()).unwrap();
    encode(ctx, &mut TextCache::new(4), a).unwrap()
}

/// Runs the batcher until every job has left; (reply, result) in order.
fn run(ctx: &StageCtx, b: &mut Batcher<&'static str>) -> Vec<(&'static str, Msg<DenoisedJob>)> {
    let mut out = b.take_cancelled(ctx);
    while !b.is_idle() {
        b.schedule(ctx);
        out.extend(b.step(ctx));
        out.extend(b.take_cancelled(ctx));
    }
    out
}

#[test]
fn jobs_of_one_shape_step_together_up_to_the_batch_limit() {
    let (ctx, _) = testkit::ctx();
    let mut b = Batcher::new(2, Scheduling::default());
    for id in ["a", "b", "c"] {
        b.join(&ctx, encoded(&ctx, id, r#""kind": "t2v""#), id);
    }
    b.schedule(&ctx);
    assert_eq!(b.next_batch(), vec![0, 1]);
    let out = run(&ctx, &mut b);
    assert_eq!(out.len(), 3);
    for (id, r) in &out {
        let d = r.as_ref().unwrap_or_else(|f| panic!("{id}: {}", f.error));
        assert_eq!(d.state.step, 2);
        assert_eq!(d.meta.timings.last().unwrap().0, Stage::Denoise);
        assert!(d.meta.denoise_accel_s > 0.0);
    }
    let sizes = |id: &str| {
        out.iter()
            .find(|(r, _)| *r == id)
            .and_then(|(_, d)| d.as_ref().ok())
            .map(|d| d.meta.batch_sizes.clone())
            .unwrap()
    };
    assert_eq!(sizes("a"), vec![2, 2]);
    assert_eq!(sizes("b"), vec![2, 2]);
    assert_eq!(sizes("c"), vec![1, 1]);
}

#[test]
fn different_shapes_never_share_a_step() {
    let (ctx, _) = testkit::ctx();
    let mut b = Batcher::new(8, Scheduling::default());
    b.join(&ctx, encoded(&ctx, "small", r#""kind": "t2v""#), "small");
    b.join(
        &ctx,
        encoded(&ctx, "wide", r#""kind": "t2v", "resolution": "320x256""#),
        "wide",
    );
    b.schedule(&ctx);
    assert_eq!(b.next_batch(), vec![0]);
    for (_, r) in run(&ctx, &mut b) {
        assert_eq!(r.unwrap().meta.batch_sizes, vec![1, 1]);
    }
}

#[test]
fn a_cancel_takes_effect_between_steps() {
    let (ctx, events) = testkit::ctx();
    let mut b = Batcher::new(4, Scheduling::default());
    b.join(&ctx, encoded(&ctx, "x", r#""kind": "t2v""#), "x");
    b.schedule(&ctx);
    b.step(&ctx);
    // Another tenant's job with the same id is not this job.
    ctx.cancel(&vidflow_job::JobKey::new("globex", "x"));
    assert!(b.take_cancelled(&ctx).is_empty());
    ctx.cancel(&vidflow_job::JobKey::new("acme", "x"));
    let out = b.take_cancelled(&ctx);
    assert!(b.is_idle());
    let f = out.into_iter().next().unwrap().1.err().unwrap();
    assert_eq!(f.cancelled_at, Some(1));
    assert_eq!(f.error, "cancelled at step 1");
    let evs: Vec<JobEvent> = events.try_iter().collect();
    assert!(evs.contains(&JobEvent::Cancelled {
        job_id: "x".into(),
        step: 1
    }));
}

#[test]
fn a_missing_model_fails_the_whole_batch_at_denoise() {
    let (ctx, _) = testkit::ctx();
    let mut b = Batcher::new(4, Scheduling::default());
    for id in ["m1", "m2"] {
        let mut j = encoded(&ctx, id, r#""kind": "t2v""#);
        j.meta.model_id = "gone".into();
        b.join(&ctx, j, id);
    }
    b.schedule(&ctx);
    let out = b.step(&ctx);
    assert_eq!(out.len(), 2);
    assert!(b.is_idle());
    for (_, r) in out {
        let f = r.err().unwrap();
        assert_eq!(f.stage, Stage::Denoise);
        assert_eq!(f.error, "model `gone` is not loaded in this worker");
    }
}

fn encoded_as(ctx: &StageCtx, id: &str, tier: vidflow_job::Tier, steps: u32) -> EncodedJob {
    let mut v = testkit::validated(id, r#""kind": "t2v""#);
    v.tier = tier;
    v.steps = steps;
    let a = crate::admit::prepare(ctx, &testkit::memory_store(), v, testkit::date()).unwrap();
    encode(ctx, &mut TextCache::new(4), a).unwrap()
}

#[test]
fn a_premium_arrival_takes_the_only_slot_and_the_free_job_resumes_bit_identical() {
    use vidflow_job::Tier;
    let (ctx, events) = testkit::ctx();
    let mut plan = Scheduling {
        slots: 1,
        ..Scheduling::default()
    };
    // The tiny model's steps take milliseconds: preempt even then.
    plan.policy.preempt_wait_s = 0.0;
    let mut b = Batcher::new(4, plan.clone());
    b.join(&ctx, encoded_as(&ctx, "free", Tier::Free, 6), "free");
    b.schedule(&ctx);
    assert!(b.step(&ctx).is_empty());
    assert!(b.step(&ctx).is_empty());
    b.join(&ctx, encoded_as(&ctx, "vip", Tier::Premium, 3), "vip");
    b.schedule(&ctx);
    assert_eq!(b.preemptions(), 1);
    // Only the premium job runs now; it finishes first.
    assert_eq!(b.active.len(), 1);
    assert_eq!(b.active[0].job.meta.job_id, "vip");
    let out = run(&ctx, &mut b);
    let order: Vec<&str> = out.iter().map(|(r, _)| *r).collect();
    assert_eq!(order, vec!["vip", "free"]);
    let free = out
        .into_iter()
        .find(|(r, _)| *r == "free")
        .unwrap()
        .1
        .unwrap();
    assert_eq!(free.meta.preemptions, 1);
    assert_eq!(free.state.step, 6);
    assert!(free.meta.queue_wait_s > 0.0);
    let evs: Vec<JobEvent> = events.try_iter().collect();
    let queued_at_2 = evs.iter().any(|e| {
        matches!(e, JobEvent::Progress { job_id, stage: Stage::Queued, step: 2, .. } if job_id == "free")
    });
    assert!(queued_at_2, "the preempted job is told it waits again");
    // The same job never preempted: the same latents, bit for bit.
    let mut alone = Batcher::new(4, plan);
    alone.join(&ctx, encoded_as(&ctx, "free", Tier::Free, 6), "free");
    let solo = run(&ctx, &mut alone).pop().unwrap().1.unwrap();
    let bits = |d: &DenoisedJob| {
        d.state
            .latents
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f32::to_bits)
            .collect::<Vec<u32>>()
    };
    assert_eq!(bits(&free), bits(&solo));
}

#[test]
fn jobs_beyond_the_slots_wait_and_start_in_deadline_order() {
    use vidflow_job::Tier;
    let (ctx, _) = testkit::ctx();
    let plan = Scheduling {
        slots: 1,
        ..Scheduling::default()
    };
    let mut b = Batcher::new(4, plan);
    for (id, tier) in [
        ("f", Tier::Free),
        ("s", Tier::Standard),
        ("p", Tier::Premium),
    ] {
        b.join(&ctx, encoded_as(&ctx, id, tier, 2), id);
    }
    let order: Vec<&str> = run(&ctx, &mut b).into_iter().map(|(r, _)| r).collect();
    assert_eq!(order, vec!["p", "s", "f"]);
}
