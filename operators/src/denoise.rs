//! Denoising with step-level continuous batching, as decisions over a set
//! of running jobs: which jobs step together (same model, latent grid and
//! RoPE scale; the longest-waiting job's group goes next, so none starves),
//! each job's share of a batched step's time, ETAs, cancels between steps,
//! and checkpoints. Batching never changes a job's bits (see
//! `vidflow_gpu` `velocity_batched`). Where the loop runs and how replies
//! travel is the caller's: `R` is whatever it needs to answer a job.

use std::collections::HashMap;
use std::time::Instant;

use vidflow_job::event::{JobEvent, Stage};
use vidflow_job::result::Failure;

use crate::faults::{self, Fault};
use crate::{DenoisedJob, EncodedJob, Msg, StageCtx, StageError};

/// Jobs that can share a forward pass: same model, latent grid and RoPE.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BatchKey {
    pub model_id: String,
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    rope_scale: [u64; 3],
}

impl BatchKey {
    pub fn of(j: &EncodedJob) -> BatchKey {
        let g = &j.state.grid;
        BatchKey {
            model_id: j.meta.model_id.clone(),
            frames: g.frames,
            height: g.height,
            width: g.width,
            rope_scale: g.rope_scale.map(f64::to_bits),
        }
    }
}

struct Active<R> {
    job: EncodedJob,
    reply: R,
    started: Instant,
}

/// The running jobs of one denoiser.
pub struct Batcher<R> {
    active: Vec<Active<R>>,
    /// Exponentially averaged seconds per step, per batch key, for ETAs.
    step_time: HashMap<BatchKey, f64>,
    max_batch: usize,
}

impl<R> Batcher<R> {
    pub fn new(max_batch: usize) -> Self {
        Batcher {
            active: Vec::new(),
            step_time: HashMap::new(),
            max_batch: max_batch.max(1),
        }
    }

    pub fn is_idle(&self) -> bool {
        self.active.is_empty()
    }

    /// A job joins; it takes its first step with the next batch of its group.
    pub fn join(&mut self, job: EncodedJob, reply: R) {
        self.active.push(Active {
            job,
            reply,
            started: Instant::now(),
        });
    }

    /// Removes the jobs asked to stop (announcing `cancelled`).
    pub fn take_cancelled(&mut self, ctx: &StageCtx) -> Vec<(R, Msg<DenoisedJob>)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.active.len() {
            if ctx.is_cancelled(&self.active[i].job.meta.key()) {
                let a = self.active.swap_remove(i);
                let step = a.job.state.step;
                ctx.events.emit(
                    &a.job.meta.tenant,
                    JobEvent::Cancelled {
                        job_id: a.job.meta.job_id.clone(),
                        step,
                    },
                );
                out.push((a.reply, Err(Failure::cancelled(a.job.meta, step))));
            } else {
                i += 1;
            }
        }
        out
    }

    /// The jobs (indices into the active set) that step next: up to
    /// `max_batch` of the oldest job's group.
    pub fn next_batch(&self) -> Vec<usize> {
        let Some(first) = self.active.first() else {
            return Vec::new();
        };
        let key = BatchKey::of(&first.job);
        (0..self.active.len())
            .filter(|&i| BatchKey::of(&self.active[i].job) == key)
            .take(self.max_batch)
            .collect()
    }

    /// Takes one denoising step for the next batch and returns the jobs that
    /// left: finished (every step taken) or failed.
    pub fn step(&mut self, ctx: &StageCtx) -> Vec<(R, Msg<DenoisedJob>)> {
        let members = self.next_batch();
        if members.is_empty() {
            return Vec::new();
        }
        let key = BatchKey::of(&self.active[members[0]].job);
        let model = match ctx.model(&key.model_id) {
            Ok(m) => m.clone(),
            Err(e) => return self.fail(members, &e),
        };
        let t0 = Instant::now();
        let velocities = {
            let pairs: Vec<_> = members
                .iter()
                .map(|&i| (&self.active[i].job.state, &*self.active[i].job.text))
                .collect();
            model.velocity_batched(&pairs)
        };
        let n = members.len();
        let vs = match velocities {
            Ok(vs) => vs,
            Err(e) => return self.fail(members, &StageError::from(e)),
        };
        let mut failed = Vec::new();
        for (&idx, v) in members.iter().zip(vs) {
            let a = &mut self.active[idx];
            if let Err(e) = model.apply_velocity(&mut a.job.state, &v) {
                failed.push((idx, StageError::from(e)));
            }
            a.job.meta.batch_sizes.push(n);
        }
        if !failed.is_empty() {
            let mut out = Vec::new();
            for (idx, e) in failed.into_iter().rev() {
                let a = self.active.swap_remove(idx);
                out.push((a.reply, Err(Failure::new(a.job.meta, Stage::Denoise, e))));
            }
            return out;
        }
        let dt = t0.elapsed().as_secs_f64();
        // A batched step's time is split evenly over its jobs: each pays
        // for the share of the accelerator it used.
        for &i in &members {
            self.active[i].job.meta.denoise_accel_s += dt / n as f64;
        }
        let avg = self.step_time.entry(key).or_insert(dt);
        *avg = 0.7 * *avg + 0.3 * dt;
        let avg = *avg;
        faults::point(Fault::MidStep);
        // Progress for the jobs just stepped; the event sink's heartbeat
        // covers jobs waiting for their group's turn.
        let mut done = Vec::new();
        for &i in &members {
            let a = &self.active[i];
            let st = &a.job.state;
            let total = st.schedule.steps();
            if let Some(ck) = ctx
                .checkpoints
                .as_ref()
                .filter(|c| c.due(a.job.meta.tier, st.step, total))
            {
                let m = &a.job.meta;
                if let Err(e) = ck.save(&m.tenant, &m.job_id, &a.job.req, st) {
                    // A lost checkpoint costs recompute on a crash, not the job.
                    tracing::warn!(job_id = %m.job_id, step = st.step, error = %e, "checkpoint write failed; continuing");
                }
            }
            ctx.events.emit(
                &a.job.meta.tenant,
                JobEvent::Progress {
                    job_id: a.job.meta.job_id.clone(),
                    stage: Stage::Denoise,
                    step: st.step,
                    total,
                    eta_s: Some(avg * (total - st.step) as f64),
                    batch: n,
                },
            );
            if st.step >= total {
                done.push(i);
            }
        }
        done.sort_unstable();
        let mut out = Vec::new();
        for idx in done.into_iter().rev() {
            let mut a = self.active.swap_remove(idx);
            a.job
                .meta
                .timings
                .push((Stage::Denoise, a.started.elapsed().as_secs_f64()));
            let EncodedJob {
                meta, req, state, ..
            } = a.job;
            out.push((a.reply, Ok(DenoisedJob { meta, req, state })));
        }
        out
    }

    fn fail(&mut self, mut members: Vec<usize>, e: &StageError) -> Vec<(R, Msg<DenoisedJob>)> {
        members.sort_unstable();
        members
            .into_iter()
            .rev()
            .map(|idx| {
                let a = self.active.swap_remove(idx);
                (a.reply, Err(Failure::new(a.job.meta, Stage::Denoise, e)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
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
            out.extend(b.step(ctx));
            out.extend(b.take_cancelled(ctx));
        }
        out
    }

    #[test]
    fn jobs_of_one_shape_step_together_up_to_the_batch_limit() {
        let (ctx, _) = testkit::ctx();
        let mut b = Batcher::new(2);
        for id in ["a", "b", "c"] {
            b.join(encoded(&ctx, id, r#""kind": "t2v""#), id);
        }
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
        let mut b = Batcher::new(8);
        b.join(encoded(&ctx, "small", r#""kind": "t2v""#), "small");
        b.join(
            encoded(&ctx, "wide", r#""kind": "t2v", "resolution": "320x256""#),
            "wide",
        );
        assert_eq!(b.next_batch(), vec![0]);
        for (_, r) in run(&ctx, &mut b) {
            assert_eq!(r.unwrap().meta.batch_sizes, vec![1, 1]);
        }
    }

    #[test]
    fn a_cancel_takes_effect_between_steps() {
        let (ctx, events) = testkit::ctx();
        let mut b = Batcher::new(4);
        b.join(encoded(&ctx, "x", r#""kind": "t2v""#), "x");
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
        let mut b = Batcher::new(4);
        for id in ["m1", "m2"] {
            let mut j = encoded(&ctx, id, r#""kind": "t2v""#);
            j.meta.model_id = "gone".into();
            b.join(j, id);
        }
        let out = b.step(&ctx);
        assert_eq!(out.len(), 2);
        assert!(b.is_idle());
        for (_, r) in out {
            let f = r.err().unwrap();
            assert_eq!(f.stage, Stage::Denoise);
            assert_eq!(f.error, "model `gone` is not loaded in this worker");
        }
    }
}
