//! Step-level continuous batching: the denoise stage's own thread. Jobs
//! whose latents share model, grid and fps are denoised in one forward per
//! step; a job joins between steps and leaves when its schedule ends.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vidflow_gpu::pipeline::DenoiseState;
use vidflow_gpu::transformer::TextCond;

use crate::events::{JobEvent, Stage};
use crate::offload::{Executor, Reply};
use crate::stages::{secs, DenoisedJob, EncodedJob, Failure, Msg, StageCtx};

/// One job inside the denoiser.
struct Active {
    job: EncodedJob,
    reply: Reply<Msg<DenoisedJob>>,
    started: Instant,
}

/// Step-level continuous batching: jobs whose latents share model, grid and
/// fps are denoised in one forward per step; a job joins between steps and
/// leaves when its schedule ends. Batching never changes a job's bits (see
/// `vidflow_gpu` `velocity_batched`).
pub struct Denoiser {
    tx: Mutex<Sender<(EncodedJob, Reply<Msg<DenoisedJob>>)>>,
}

/// Batch key: same model, same latent grid, same RoPE (fps).
fn batch_key(j: &EncodedJob) -> (String, usize, usize, usize, [u64; 3]) {
    let g = &j.state.grid;
    (
        j.meta.model_id.clone(),
        g.frames,
        g.height,
        g.width,
        g.rope_scale.map(f64::to_bits),
    )
}

impl Denoiser {
    pub fn spawn(ctx: StageCtx, max_batch: usize) -> Self {
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("vidflow-denoise".into())
            .spawn(move || denoise_loop(ctx, rx, max_batch.max(1)))
            .expect("spawning the denoiser");
        Denoiser { tx: Mutex::new(tx) }
    }
}

impl Executor<Msg<EncodedJob>, Msg<DenoisedJob>> for Denoiser {
    fn submit(&self, item: Msg<EncodedJob>, reply: Reply<Msg<DenoisedJob>>) {
        match item {
            Err(f) => reply.send(Err(f)),
            Ok(j) => {
                if let Ok(tx) = self.tx.lock() {
                    let _ = tx.send((j, reply));
                }
            }
        }
    }
}

fn denoise_loop(
    ctx: StageCtx,
    rx: Receiver<(EncodedJob, Reply<Msg<DenoisedJob>>)>,
    max_batch: usize,
) {
    let mut active: Vec<Active> = Vec::new();
    // Exponentially averaged seconds per step, per batch key, for ETAs.
    let mut step_time: HashMap<(String, usize, usize, usize, [u64; 3]), f64> = HashMap::new();
    loop {
        // Admit new jobs between steps; block only when idle.
        let first = if active.is_empty() {
            match rx.recv() {
                Ok(x) => Some(x),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(Duration::from_millis(0)) {
                Ok(x) => Some(x),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    if active.is_empty() {
                        return;
                    }
                    None
                }
            }
        };
        for (job, reply) in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            active.push(Active {
                job,
                reply,
                started: Instant::now(),
            });
        }
        // Cancellation takes effect here, between steps.
        let mut i = 0;
        while i < active.len() {
            let id = active[i].job.meta.job_id.clone();
            if ctx.is_cancelled(&id) {
                let a = active.swap_remove(i);
                let step = a.job.state.step;
                ctx.events.emit(JobEvent::Cancelled { job_id: id, step });
                a.reply.send(Err(Failure {
                    meta: a.job.meta,
                    stage: Stage::Denoise,
                    error: format!("cancelled at step {step}"),
                    cancelled_at: Some(step),
                }));
            } else {
                i += 1;
            }
        }
        if active.is_empty() {
            continue;
        }
        // The group of the longest-waiting job goes next (no starvation).
        let key = batch_key(&active[0].job);
        let members: Vec<usize> = (0..active.len())
            .filter(|&i| batch_key(&active[i].job) == key)
            .take(max_batch)
            .collect();
        let model = match ctx.model(&key.0) {
            Ok(m) => m.clone(),
            Err(e) => {
                for idx in members.into_iter().rev() {
                    let a = active.swap_remove(idx);
                    a.reply
                        .send(Err(ctx.fail(a.job.meta, Stage::Denoise, e.clone())));
                }
                continue;
            }
        };
        let t0 = Instant::now();
        let result = {
            let pairs: Vec<(&DenoiseState, &TextCond)> = members
                .iter()
                .map(|&i| (&active[i].job.state, &*active[i].job.text))
                .collect();
            model.velocity_batched(&pairs)
        };
        let n = members.len();
        match result {
            Err(e) => {
                let msg = e.to_string();
                for idx in members.into_iter().rev() {
                    let a = active.swap_remove(idx);
                    a.reply
                        .send(Err(ctx.fail(a.job.meta, Stage::Denoise, msg.clone())));
                }
                continue;
            }
            Ok(vs) => {
                let mut apply_err = Vec::new();
                for (&idx, v) in members.iter().zip(vs) {
                    let a = &mut active[idx];
                    if let Err(e) = model.apply_velocity(&mut a.job.state, &v) {
                        apply_err.push((idx, e.to_string()));
                    }
                    a.job.meta.batch_sizes.push(n);
                }
                if !apply_err.is_empty() {
                    // Indices shift as jobs leave: fail them and start over.
                    for (idx, e) in apply_err.into_iter().rev() {
                        let a = active.swap_remove(idx);
                        a.reply.send(Err(ctx.fail(a.job.meta, Stage::Denoise, e)));
                    }
                    continue;
                }
            }
        }
        let dt = secs(t0);
        // A batched step's time is split evenly over its jobs: each pays
        // for the share of the accelerator it used.
        for &i in &members {
            active[i].job.meta.denoise_accel_s += dt / n as f64;
        }
        let avg = step_time.entry(key.clone()).or_insert(dt);
        *avg = 0.7 * *avg + 0.3 * dt;
        let avg = *avg;
        crate::faults::point("mid_step");
        // Progress for the jobs just stepped; the event sink's heartbeat
        // covers jobs waiting for their group's turn.
        let mut done = Vec::new();
        for &i in &members {
            let a = &active[i];
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
            ctx.events.emit(JobEvent::Progress {
                job_id: a.job.meta.job_id.clone(),
                stage: Stage::Denoise,
                step: st.step,
                total,
                eta_s: Some(avg * (total - st.step) as f64),
                batch: n,
            });
            if st.step >= total {
                done.push(i);
            }
        }
        done.sort_unstable();
        for idx in done.into_iter().rev() {
            let mut a = active.swap_remove(idx);
            a.job.meta.timings.push((Stage::Denoise, secs(a.started)));
            let EncodedJob {
                meta, req, state, ..
            } = a.job;
            a.reply.send(Ok(DenoisedJob { meta, req, state }));
        }
    }
}
