//! The simulator for pools that are batched denoisers (`fleet.batched_step`):
//! what one `vidflow serve` worker does with its slots. Every running job
//! of a pool advances by one step per batched step, and a step of `n` jobs
//! takes the measured time of a batch of `n`, so a job's speed changes whenever
//! another starts or finishes beside it. Jobs' work is counted in steps
//! (the trace's `steps`); their `service_s` is not used.
//!
//! Progress is fluid (a job that starts mid-step joins at once, where the
//! real denoiser waits for the step boundary): at a few milliseconds per
//! step the difference is below what the validation can see.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::config::{BatchedStep, FleetConfig, PolicyRun};
use super::{pools_for, summarise, SimError, SimResult, TraceJob};
use crate::policy::{Decision, JobInfo, Scheduler};

#[derive(Clone, Copy, Default)]
struct Job {
    remaining_steps: f64,
    epoch: u32,
    waited_s: f32,
    done: bool,
}

struct Pool {
    running: Vec<u32>,
    last_t: f64,
}

pub(super) fn simulate(
    cfg: &FleetConfig,
    run: &PolicyRun,
    slots: u32,
    trace: &[TraceJob],
    load: f64,
    step: &BatchedStep,
) -> Result<SimResult, SimError> {
    if run.preempt {
        return Err(SimError::Config(format!(
            "{}: batched pools (fleet.batched_step) do not model preemption",
            run.name
        )));
    }
    let t0 = Instant::now();
    let (specs, route) = pools_for(cfg, run, slots)?;
    let mut sc = cfg.scheduler.clone();
    sc.policy = run.policy;
    sc.preempt = false;
    let targets = sc.targets;
    let mut s = Scheduler::new(sc, &specs, route);
    let w = &cfg.workload;
    let window = (w.warmup_s, w.warmup_s + w.hours * 3600.0);
    let mut jobs = vec![Job::default(); trace.len()];
    let mut pools: Vec<Pool> = specs
        .iter()
        .map(|_| Pool {
            running: Vec::new(),
            last_t: 0.0,
        })
        .collect();
    let mut pool_of = vec![0usize; trace.len()];
    // (finish time µs, sequence, job, epoch): a finish is void once its
    // job's epoch moved on (its speed changed).
    let mut heap: BinaryHeap<Reverse<(i64, u64, u32, u32)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let (mut next, mut events, mut busy_area, mut last_t) = (0usize, 0u64, 0.0f64, 0.0f64);
    loop {
        let arr = trace.get(next).map(|j| (j.t * 1e6).round() as i64);
        let fin = heap.peek().map(|Reverse(e)| e.0);
        let (now_us, finished) = match (arr, fin) {
            (None, None) => break,
            (Some(a), Some(f)) if f < a => {
                let Reverse(e) = heap.pop().expect("peeked");
                if jobs[e.2 as usize].epoch != e.3 {
                    continue;
                }
                (e.0, Some(e.2))
            }
            (Some(a), _) => (a, None),
            (None, Some(_)) => {
                let Reverse(e) = heap.pop().expect("peeked");
                if jobs[e.2 as usize].epoch != e.3 {
                    continue;
                }
                (e.0, Some(e.2))
            }
        };
        let now = now_us as f64 / 1e6;
        let running: usize = pools.iter().map(|p| p.running.len()).sum();
        let (a, b) = (last_t.max(window.0), now.min(window.1));
        if b > a {
            busy_area += running as f64 * (b - a);
        }
        last_t = now;
        events += 1;
        let mut changed = Vec::new();
        match finished {
            Some(j) => {
                let p = pool_of[j as usize];
                advance(&mut pools[p], &mut jobs, now, step);
                pools[p].running.retain(|&r| r != j);
                jobs[j as usize].done = true;
                s.finished(j as u64, now)?;
                changed.push(p);
            }
            None => {
                let tj = &trace[next];
                jobs[next].remaining_steps = tj.steps.max(1) as f64;
                s.submit(
                    next as u64,
                    JobInfo {
                        tier: tj.tier,
                        class: tj.class as usize,
                        submitted_s: tj.submitted,
                        units: tj.units,
                        predicted_s: tj.steps as f64 * step.step_s(1),
                        batch: None,
                    },
                    now,
                )?;
                next += 1;
            }
        }
        for d in s.decide(now) {
            if let Decision::Start {
                job,
                pool,
                waited_s,
                ..
            } = d
            {
                advance(&mut pools[pool], &mut jobs, now, step);
                pools[pool].running.push(job as u32);
                pool_of[job as usize] = pool;
                jobs[job as usize].waited_s = waited_s as f32;
                changed.push(pool);
            }
        }
        changed.sort_unstable();
        changed.dedup();
        for p in changed {
            let n = pools[p].running.len();
            let step_s = step.step_s(n);
            for &j in &pools[p].running {
                let job = &mut jobs[j as usize];
                job.epoch += 1;
                let left = job.remaining_steps * step_s;
                seq += 1;
                heap.push(Reverse((
                    ((now + left) * 1e6).round() as i64,
                    seq,
                    j,
                    job.epoch,
                )));
                s.progress(j as u64, now, left)?;
            }
        }
    }
    let outcome: Vec<(f32, bool)> = jobs.iter().map(|j| (j.waited_s, j.done)).collect();
    Ok(summarise(
        run,
        (slots, load),
        trace,
        &outcome,
        window,
        &targets,
        s.preemptions(),
        busy_area,
        &specs,
        (t0, events),
    ))
}

/// Moves a pool's running jobs on to `now` at the speed of its batch.
fn advance(pool: &mut Pool, jobs: &mut [Job], now: f64, step: &BatchedStep) {
    let n = pool.running.len();
    if n > 0 {
        let steps = (now - pool.last_t) / step.step_s(n);
        for &j in &pool.running {
            let job = &mut jobs[j as usize];
            job.remaining_steps = (job.remaining_steps - steps).max(0.0);
        }
    }
    pool.last_t = now;
}
