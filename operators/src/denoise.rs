//! Denoising with step-level continuous batching, as decisions over the
//! jobs this worker holds: which may run at all (the scheduler of
//! `vidflow-sched`: at most `slots` at once, started in its order, and a
//! running job of a lower tier yields its slot at a step boundary when a
//! more urgent job would otherwise miss its wait target), which running
//! jobs step together (same model, latent grid and RoPE scale; the group
//! of the running job with the earliest deadline goes next), each job's
//! share of a batched step's time, ETAs, cancels between steps, and
//! checkpoints. Batching never changes a job's bits (see `vidflow_gpu`
//! `velocity_batched`), and neither does yielding: a preempted job keeps
//! its latents here (its checkpoint is written too, so a crash while it
//! waits loses nothing) and resumes from the same step. Where the loop
//! runs and how replies travel is the caller's: `R` is whatever it needs
//! to answer a job.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use vidflow_job::event::{now_ms, JobEvent, Stage};
use vidflow_job::result::Failure;
use vidflow_sched::{Accelerator, Decision, JobInfo, PoolSpec, SchedConfig, Scheduler};

use crate::faults::{self, Fault};
use crate::{DenoisedJob, EncodedJob, Msg, StageCtx, StageError};

/// Jobs that can share a forward pass: same model, latent grid and RoPE
/// (for conditioned jobs, the same token coordinates: keyframes at later
/// frames add tokens at their own positions).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BatchKey {
    pub model_id: String,
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    rope_scale: [u64; 3],
    positions: u64,
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
            positions: j.state.positions_key(),
        }
    }

    fn id(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// How a worker's denoiser schedules the jobs it holds (`[scheduler]` in
/// `configs/vidflow.toml`; docs/SCHEDULING.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scheduling {
    /// Jobs denoising at once; held jobs beyond wait in the scheduler's
    /// order. 0 = the batch limit.
    pub slots: usize,
    /// Ordering, wait targets and preemption.
    pub policy: SchedConfig,
    /// The accelerator's rate for predicted step times (until a shape's
    /// steps have been measured here).
    pub accelerator: Accelerator,
}

impl Default for Scheduling {
    fn default() -> Self {
        Scheduling {
            slots: 0,
            policy: SchedConfig::default(),
            accelerator: crate::cost::cpu_measured(),
        }
    }
}

struct Held<R> {
    id: u64,
    job: EncodedJob,
    reply: R,
    /// First start (the denoise stage's timing runs from there).
    started: Option<Instant>,
    /// Submission + the tier's wait target, seconds: the earliest goes first
    /// among running jobs.
    deadline_s: f64,
}

/// The jobs of one denoiser: running (`active`) and held but waiting.
pub struct Batcher<R> {
    active: Vec<Held<R>>,
    waiting: BTreeMap<u64, Held<R>>,
    sched: Scheduler,
    next_id: u64,
    /// Exponentially averaged seconds per step, per batch key, for ETAs.
    step_time: HashMap<BatchKey, f64>,
    max_batch: usize,
    plan: Scheduling,
}

fn now_s() -> f64 {
    now_ms() as f64 / 1e3
}

impl<R> Batcher<R> {
    pub fn new(max_batch: usize, plan: Scheduling) -> Self {
        let max_batch = max_batch.max(1);
        let slots = if plan.slots == 0 {
            max_batch
        } else {
            plan.slots
        };
        let pools = [PoolSpec {
            name: "slots".into(),
            capacity: slots as u32,
        }];
        Batcher {
            active: Vec::new(),
            waiting: BTreeMap::new(),
            sched: Scheduler::new(plan.policy.clone(), &pools, vec![0]),
            next_id: 0,
            step_time: HashMap::new(),
            max_batch,
            plan,
        }
    }

    pub fn is_idle(&self) -> bool {
        self.active.is_empty() && self.waiting.is_empty()
    }

    /// Preemptions asked so far.
    pub fn preemptions(&self) -> u64 {
        self.sched.preemptions()
    }

    /// Seconds one step of the job is expected to take: as measured here
    /// for its shape, else the cost model's prediction.
    fn step_s(&self, ctx: &StageCtx, j: &EncodedJob) -> f64 {
        if let Some(&t) = self.step_time.get(&BatchKey::of(j)) {
            return t;
        }
        match ctx.model(&j.meta.model_id) {
            Ok(m) => crate::cost::step_seconds(
                &crate::cost::arch_of_model(m),
                &self.plan.accelerator,
                m.tokens(&j.state),
                j.state.guidance_scale > 1.0,
            ),
            Err(_) => 0.0,
        }
    }

    /// Seconds the job still needs; a chain segment counts the steps of
    /// the chain's later segments too (at this segment's rate), so the
    /// scheduler weighs a long video by what it will still cost.
    fn remaining_s(&self, ctx: &StageCtx, j: &EncodedJob) -> f64 {
        let (step, total) = j.meta.progress(j.state.step, j.state.schedule.steps());
        total.saturating_sub(step) as f64 * self.step_s(ctx, j)
    }

    /// A job arrives; it waits until the scheduler starts it (at once when
    /// a slot is free).
    pub fn join(&mut self, ctx: &StageCtx, mut job: EncodedJob, reply: R) {
        let now = now_s();
        let id = self.next_id;
        self.next_id += 1;
        let submitted_s = job
            .meta
            .submitted_ms
            .map(|ms| ms as f64 / 1e3)
            .unwrap_or(now)
            .min(now);
        let predicted_s = self.remaining_s(ctx, &job);
        job.meta.predicted_accel_s = predicted_s;
        let info = JobInfo {
            tier: job.meta.tier,
            class: 0,
            submitted_s,
            units: 1,
            predicted_s,
            batch: Some(BatchKey::of(&job).id()),
        };
        if let Err(e) = self.sched.submit(id, info, now) {
            // Ids are this batcher's own counter: a refusal is a bug here.
            tracing::error!(job_id = %job.meta.job_id, error = %e, "scheduler refused a job");
        }
        let st = &job.state;
        let (step, total) = job.meta.progress(st.step, st.schedule.steps());
        ctx.events.emit(
            &job.meta.tenant,
            JobEvent::Progress {
                job_id: job.meta.job_id.clone(),
                stage: Stage::Queued,
                step,
                total,
                // The cost model's denoising time; the wait is not known yet.
                eta_s: Some(predicted_s),
                batch: 0,
            },
        );
        let deadline_s = submitted_s + self.plan.policy.targets.of(job.meta.tier);
        self.waiting.insert(
            id,
            Held {
                id,
                job,
                reply,
                started: None,
                deadline_s,
            },
        );
    }

    /// Applies the scheduler's decisions between steps: starts jobs, and
    /// stops the ones it preempts here (a step boundary): checkpoint,
    /// `queued` event, back to waiting with their latents.
    pub fn schedule(&mut self, ctx: &StageCtx) {
        let now = now_s();
        // Deadlines move with the clock even when no job comes or goes.
        self.sched.touch();
        loop {
            let decisions = self.sched.decide(now);
            if decisions.is_empty() {
                return;
            }
            for d in decisions {
                match d {
                    Decision::Start { job, waited_s, .. } => {
                        if let Some(mut h) = self.waiting.remove(&job) {
                            h.job.meta.queue_wait_s = waited_s;
                            h.started.get_or_insert_with(Instant::now);
                            self.active.push(h);
                        }
                    }
                    Decision::Preempt { job, .. } => self.preempt(ctx, job, now),
                }
            }
        }
    }

    fn preempt(&mut self, ctx: &StageCtx, id: u64, now: f64) {
        let Some(i) = self.active.iter().position(|h| h.id == id) else {
            return;
        };
        let mut h = self.active.remove(i);
        let m = &h.job.meta;
        let st = &h.job.state;
        if let Some(ck) = &ctx.checkpoints {
            if let Err(e) = ck.save(&m.tenant, &m.job_id, &h.job.req, st) {
                // Its latents stay here; only a crash before it resumes
                // would cost the steps since its last checkpoint.
                tracing::warn!(job_id = %m.job_id, step = st.step, error = %e, "checkpoint at preemption failed");
            }
        }
        tracing::info!(tenant = %m.tenant, job_id = %m.job_id, step = st.step, tier = m.tier.as_str(), "preempted at a step boundary");
        let remaining = self.remaining_s(ctx, &h.job);
        let (step, total) = m.progress(st.step, st.schedule.steps());
        ctx.events.emit(
            &m.tenant,
            JobEvent::Progress {
                job_id: m.job_id.clone(),
                stage: Stage::Queued,
                step,
                total,
                eta_s: Some(remaining),
                batch: 0,
            },
        );
        h.job.meta.preemptions += 1;
        if let Err(e) = self.sched.yielded(id, now, remaining) {
            tracing::error!(job_id = %h.job.meta.job_id, error = %e, "scheduler lost a preempted job");
        }
        self.waiting.insert(id, h);
    }

    fn leave(&mut self, id: u64) {
        if let Err(e) = self.sched.finished(id, now_s()) {
            tracing::error!(error = %e, "scheduler did not know a leaving job");
        }
    }

    /// Removes the jobs asked to stop, running or waiting (announcing
    /// `cancelled`).
    pub fn take_cancelled(&mut self, ctx: &StageCtx) -> Vec<(R, Msg<DenoisedJob>)> {
        let mut gone = Vec::new();
        let mut i = 0;
        while i < self.active.len() {
            if ctx.is_cancelled(&self.active[i].job.meta.key()) {
                gone.push(self.active.remove(i));
            } else {
                i += 1;
            }
        }
        let ids: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, h)| ctx.is_cancelled(&h.job.meta.key()))
            .map(|(&id, _)| id)
            .collect();
        gone.extend(ids.into_iter().filter_map(|id| self.waiting.remove(&id)));
        let mut out = Vec::new();
        for h in gone {
            self.leave(h.id);
            let step = h.job.state.step;
            ctx.events.emit(
                &h.job.meta.tenant,
                JobEvent::Cancelled {
                    job_id: h.job.meta.job_id.clone(),
                    step,
                },
            );
            out.push((h.reply, Err(Failure::cancelled(h.job.meta, step))));
        }
        out
    }

    /// The running jobs (indices into the active set) that step next: up
    /// to `max_batch` of the group of the job with the earliest deadline
    /// (then the longest running).
    pub fn next_batch(&self) -> Vec<usize> {
        let Some(first) = self
            .active
            .iter()
            .enumerate()
            .min_by(|a, b| {
                a.1.deadline_s
                    .total_cmp(&b.1.deadline_s)
                    .then(a.0.cmp(&b.0))
            })
            .map(|(i, _)| i)
        else {
            return Vec::new();
        };
        let key = BatchKey::of(&self.active[first].job);
        let mut members = vec![first];
        members.extend(
            (0..self.active.len())
                .filter(|&i| i != first && BatchKey::of(&self.active[i].job) == key)
                .take(self.max_batch - 1),
        );
        members.sort_unstable();
        members
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
                let a = self.active.remove(idx);
                self.leave(a.id);
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
        // The measured step time replaces the prediction for these jobs.
        let now = now_s();
        for &i in &members {
            let a = &self.active[i];
            let left = a
                .job
                .state
                .schedule
                .steps()
                .saturating_sub(a.job.state.step);
            let _ = self.sched.progress(a.id, now, left as f64 * avg);
        }
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
            let (step, all) = a.job.meta.progress(st.step, total);
            ctx.events.emit(
                &a.job.meta.tenant,
                JobEvent::Progress {
                    job_id: a.job.meta.job_id.clone(),
                    stage: Stage::Denoise,
                    step,
                    total: all,
                    eta_s: Some(avg * all.saturating_sub(step) as f64),
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
            let mut a = self.active.remove(idx);
            self.leave(a.id);
            let ran = a.started.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
            a.job.meta.timings.push((Stage::Denoise, ran));
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
                let a = self.active.remove(idx);
                self.leave(a.id);
                (a.reply, Err(Failure::new(a.job.meta, Stage::Denoise, e)))
            })
            .collect()
    }
}

/// Denoises one job on this thread with a batcher of its own (no other
/// job to share steps with): what a caller without a denoiser thread uses
/// (unit tests of the stages that run segments of a job).
pub fn run_alone(ctx: &StageCtx, job: EncodedJob) -> Msg<DenoisedJob> {
    let mut b = Batcher::new(1, Scheduling::default());
    b.join(ctx, job, ());
    loop {
        if let Some(((), out)) = b.take_cancelled(ctx).into_iter().next() {
            return out;
        }
        b.schedule(ctx);
        if let Some(((), out)) = b.step(ctx).into_iter().next() {
            return out;
        }
    }
}

#[cfg(test)]
mod tests;
