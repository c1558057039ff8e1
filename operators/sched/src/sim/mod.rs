//! A discrete-event simulation of a fleet running the [`Scheduler`]: the
//! same code `vidflow serve` uses, fed a trace instead of a broker.
//!
//! Time is simulated: arrivals come from the trace, each started job
//! finishes after its service time, and a preempted job runs on to its
//! next step boundary, writes its checkpoint (`checkpoint_write_s`), hands
//! its GPUs back and later resumes with `resume_s` of extra work. A job's
//! queue wait is all the time it spent not running before it finished
//! (waiting after a preemption counts). Only jobs that arrive inside the
//! measured window count; the warm-up before it loads the fleet.

mod batched;
pub mod config;
pub mod erlang;
pub mod report;
pub mod trace;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use vidflow_job::Tier;

use crate::policy::{Decision, PoolSpec, Scheduler, Targets};
pub use config::{FleetConfig, PolicyRun};
pub use trace::TraceJob;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("trace {path} line {line}: {why}")]
    Trace {
        path: String,
        line: usize,
        why: String,
    },
    #[error("fleet config: {0}")]
    Config(String),
    #[error("scheduler refused a call: {0}")]
    Sched(#[from] crate::policy::SchedError),
}

/// Queue-wait statistics of one tier.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TierStats {
    pub jobs: u64,
    pub mean_s: f64,
    pub p50_s: f64,
    pub p95_s: f64,
    pub p99_s: f64,
    pub max_s: f64,
    /// Fraction of jobs whose wait met the tier's target.
    pub attainment: f64,
    pub target_s: f64,
}

impl TierStats {
    fn of(mut w: Vec<f32>, target_s: f64) -> TierStats {
        if w.is_empty() {
            return TierStats {
                target_s,
                attainment: 1.0,
                ..TierStats::default()
            };
        }
        w.sort_by(|a, b| a.total_cmp(b));
        let n = w.len();
        let q = |p: f64| w[((p * n as f64).ceil() as usize).clamp(1, n) - 1] as f64;
        let met = w.iter().filter(|&&x| (x as f64) <= target_s).count();
        TierStats {
            jobs: n as u64,
            mean_s: w.iter().map(|&x| x as f64).sum::<f64>() / n as f64,
            p50_s: q(0.50),
            p95_s: q(0.95),
            p99_s: q(0.99),
            max_s: w[n - 1] as f64,
            attainment: met as f64 / n as f64,
            target_s,
        }
    }

    pub fn meets(&self) -> bool {
        self.p95_s <= self.target_s
    }
}

/// One simulation's outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimResult {
    pub policy: String,
    pub gpus: u32,
    pub load: f64,
    pub jobs: u64,
    pub premium: TierStats,
    pub standard: TierStats,
    pub free: TierStats,
    pub preemptions: u64,
    /// Busy GPU-seconds over available GPU-seconds in the window.
    pub utilisation: f64,
    /// Jobs that arrived in the window but had not started when the
    /// simulation gave up (counted as waiting until then).
    pub unfinished: u64,
    pub pools: Vec<(String, u32)>,
    /// Wall-clock seconds the simulation took.
    pub wall_s: f64,
    /// Scheduler events processed.
    pub events: u64,
}

impl SimResult {
    pub fn tier(&self, t: Tier) -> &TierStats {
        match t {
            Tier::Premium => &self.premium,
            Tier::Standard => &self.standard,
            Tier::Free => &self.free,
        }
    }

    /// Every tier's p95 within its target.
    pub fn meets_all(&self) -> bool {
        self.premium.meets() && self.standard.meets() && self.free.meets()
    }
}

/// Pools and routes for a policy at a fleet size: one shared pool, or the
/// configured pools sized in proportion to their offered work (each at
/// least one job of its largest class).
pub fn pools_for(
    cfg: &FleetConfig,
    run: &PolicyRun,
    gpus: u32,
) -> Result<(Vec<PoolSpec>, Vec<usize>), SimError> {
    let classes = &cfg.workload.classes;
    let costs = trace::class_costs(cfg);
    if !run.routed {
        return Ok((
            vec![PoolSpec {
                name: "shared".into(),
                capacity: gpus,
            }],
            vec![0; classes.len()],
        ));
    }
    let mut route = vec![usize::MAX; classes.len()];
    for (p, pool) in cfg.fleet.pools.iter().enumerate() {
        for name in &pool.classes {
            let c = classes
                .iter()
                .position(|c| &c.name == name)
                .ok_or_else(|| {
                    SimError::Config(format!("pool {:?} names unknown class {name:?}", pool.name))
                })?;
            route[c] = p;
        }
    }
    if let Some(c) = route.iter().position(|&r| r == usize::MAX) {
        return Err(SimError::Config(format!(
            "class {:?} is in no pool",
            classes[c].name
        )));
    }
    let share_sum: f64 = classes.iter().map(|c| c.share).sum();
    let mut work = vec![0.0; cfg.fleet.pools.len()];
    let mut min = vec![1u32; cfg.fleet.pools.len()];
    for (c, class) in classes.iter().enumerate() {
        work[route[c]] += class.share / share_sum * costs[c].gpu_s;
        min[route[c]] = min[route[c]].max(costs[c].units);
    }
    let total: f64 = work.iter().sum();
    let mut caps: Vec<u32> = work
        .iter()
        .zip(&min)
        .map(|(w, &m)| ((w / total * gpus as f64).floor() as u32).max(m))
        .collect();
    // Hand out what rounding left, largest remainder first.
    let used: u32 = caps.iter().sum();
    let mut order: Vec<usize> = (0..caps.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = work[a] / total * gpus as f64 - caps[a] as f64;
        let fb = work[b] / total * gpus as f64 - caps[b] as f64;
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for i in 0..gpus.saturating_sub(used) as usize {
        caps[order[i % order.len()]] += 1;
    }
    Ok((
        cfg.fleet
            .pools
            .iter()
            .zip(caps)
            .map(|(p, c)| PoolSpec {
                name: p.name.clone(),
                capacity: c,
            })
            .collect(),
        route,
    ))
}

/// (time µs, sequence, kind, job, epoch), earliest first.
type Event = (i64, u64, u8, u32, u32);

const ARRIVE: u8 = 0;
const FINISH: u8 = 1;
const YIELD: u8 = 2;

#[derive(Clone, Copy, Default)]
struct Live {
    started_at: f64,
    remaining_s: f64,
    step_s: f64,
    epoch: u32,
    waited_s: f32,
    done: bool,
    started: bool,
}

/// Runs one policy on `gpus` GPUs over a trace.
pub fn simulate(
    cfg: &FleetConfig,
    run: &PolicyRun,
    gpus: u32,
    trace: &[TraceJob],
    load: f64,
) -> Result<SimResult, SimError> {
    if let Some(b) = &cfg.fleet.batched_step {
        return batched::simulate(cfg, run, gpus, trace, load, b);
    }
    let t0 = Instant::now();
    let (pools, route) = pools_for(cfg, run, gpus)?;
    let mut sc = cfg.scheduler.clone();
    sc.policy = run.policy;
    sc.preempt = run.preempt;
    let targets: Targets = sc.targets;
    let mut s = Scheduler::new(sc, &pools, route);
    let w = &cfg.workload;
    let window = (w.warmup_s, w.warmup_s + w.hours * 3600.0);
    let (ckpt, resume) = (cfg.fleet.checkpoint_write_s, cfg.fleet.resume_s);
    let mut live = vec![Live::default(); trace.len()];
    // (time µs, sequence, kind, job, epoch)
    let mut heap: BinaryHeap<Reverse<Event>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |heap: &mut BinaryHeap<_>, t: f64, kind: u8, job: u32, epoch: u32| {
        seq += 1;
        heap.push(Reverse(((t * 1e6).round() as i64, seq, kind, job, epoch)));
    };
    let mut next = 0usize;
    let mut busy = 0u64;
    let mut busy_area = 0.0;
    let mut last_t = 0.0f64;
    let mut events = 0u64;
    loop {
        let arr = trace.get(next).map(|j| (j.t * 1e6).round() as i64);
        let ev = heap.peek().map(|Reverse(e)| e.0);
        let (now_us, kind, job, epoch) = match (arr, ev) {
            (None, None) => break,
            (Some(a), Some(e)) if e < a => {
                let Reverse(e) = heap.pop().expect("peeked");
                (e.0, e.2, e.3, e.4)
            }
            (Some(a), _) => {
                next += 1;
                (a, ARRIVE, (next - 1) as u32, 0)
            }
            (None, Some(_)) => {
                let Reverse(e) = heap.pop().expect("peeked");
                (e.0, e.2, e.3, e.4)
            }
        };
        let now = now_us as f64 / 1e6;
        // Busy GPU-time inside the window.
        let (a, b) = (last_t.max(window.0), now.min(window.1));
        if b > a {
            busy_area += busy as f64 * (b - a);
        }
        last_t = now;
        events += 1;
        let tj = &trace[job as usize];
        match kind {
            ARRIVE => {
                let l = &mut live[job as usize];
                l.remaining_s = tj.service_s;
                l.step_s = tj.service_s / tj.steps.max(1) as f64;
                s.submit(
                    job as u64,
                    crate::policy::JobInfo {
                        tier: tj.tier,
                        class: tj.class as usize,
                        submitted_s: tj.submitted,
                        units: tj.units,
                        predicted_s: tj.service_s,
                        batch: None,
                    },
                    now,
                )?;
            }
            FINISH => {
                if live[job as usize].epoch != epoch {
                    continue; // preempted since
                }
                live[job as usize].done = true;
                busy -= tj.units as u64;
                s.finished(job as u64, now)?;
            }
            _ => {
                busy -= tj.units as u64;
                let rem = live[job as usize].remaining_s;
                s.yielded(job as u64, now, rem)?;
            }
        }
        for d in s.decide(now) {
            match d {
                Decision::Start { job, waited_s, .. } => {
                    let l = &mut live[job as usize];
                    l.started_at = now;
                    l.waited_s = waited_s as f32;
                    l.started = true;
                    busy += trace[job as usize].units as u64;
                    push(&mut heap, now + l.remaining_s, FINISH, job as u32, l.epoch);
                }
                Decision::Preempt { job, .. } => {
                    let l = &mut live[job as usize];
                    let ran = now - l.started_at;
                    let boundary = (ran / l.step_s).ceil() * l.step_s;
                    if boundary >= l.remaining_s {
                        // It ends at this boundary anyway: the finish
                        // already queued stands.
                        continue;
                    }
                    l.epoch += 1;
                    l.remaining_s = l.remaining_s - boundary + resume;
                    // Its GPUs stay busy through the checkpoint write.
                    push(
                        &mut heap,
                        l.started_at + boundary + ckpt,
                        YIELD,
                        job as u32,
                        l.epoch,
                    );
                }
            }
        }
    }
    let outcome: Vec<(f32, bool)> = live.iter().map(|l| (l.waited_s, l.done)).collect();
    Ok(summarise(
        run,
        (gpus, load),
        trace,
        &outcome,
        window,
        &targets,
        s.preemptions(),
        busy_area,
        &pools,
        (t0, events),
    ))
}

/// The result of a run from each job's (wait, finished).
#[allow(clippy::too_many_arguments)]
fn summarise(
    run: &PolicyRun,
    (gpus, load): (u32, f64),
    trace: &[TraceJob],
    outcome: &[(f32, bool)],
    window: (f64, f64),
    targets: &Targets,
    preemptions: u64,
    busy_area: f64,
    pools: &[PoolSpec],
    (t0, events): (Instant, u64),
) -> SimResult {
    let mut waits: [Vec<f32>; 3] = Default::default();
    let mut unfinished = 0;
    for (tj, &(waited, done)) in trace.iter().zip(outcome) {
        if !tj.measured || tj.t >= window.1 {
            continue;
        }
        if !done {
            unfinished += 1;
        }
        let i = match tj.tier {
            Tier::Premium => 0,
            Tier::Standard => 1,
            Tier::Free => 2,
        };
        waits[i].push(waited);
    }
    let [wp, ws, wf] = waits;
    let jobs = (wp.len() + ws.len() + wf.len()) as u64;
    SimResult {
        policy: run.name.clone(),
        gpus,
        load,
        jobs,
        premium: TierStats::of(wp, targets.premium_s),
        standard: TierStats::of(ws, targets.standard_s),
        free: TierStats::of(wf, targets.free_s),
        preemptions,
        utilisation: busy_area / (gpus as f64 * (window.1 - window.0).max(1e-9)),
        unfinished,
        pools: pools.iter().map(|p| (p.name.clone(), p.capacity)).collect(),
        wall_s: t0.elapsed().as_secs_f64(),
        events,
    }
}

/// GPU-seconds per second the trace offers inside the window: the fleet
/// size at which utilisation would be 100%.
pub fn offered_gpus(cfg: &FleetConfig, trace: &[TraceJob]) -> f64 {
    let w = &cfg.workload;
    let (a, b) = (w.warmup_s, w.warmup_s + w.hours * 3600.0);
    trace
        .iter()
        .filter(|j| j.t >= a && j.t < b)
        .map(|j| j.service_s * j.units as f64)
        .sum::<f64>()
        / (b - a)
}

/// The smallest fleet (within the search tolerance) at which the policy
/// meets every tier's p95 target on the trace, with the run at that size.
///
/// The search starts at the offered work (the GPUs the window's jobs keep
/// busy): a smaller fleet falls behind by a fixed amount every second the
/// peak lasts, so whatever a window of limited length shows, its queue
/// grows without bound.
pub fn smallest_fleet(
    cfg: &FleetConfig,
    run: &PolicyRun,
    trace: &[TraceJob],
) -> Result<(u32, SimResult), SimError> {
    let offered = offered_gpus(cfg, trace);
    let lo0 = offered.ceil().max(1.0) as u32;
    let first = simulate(cfg, run, lo0, trace, 1.0)?;
    if first.meets_all() {
        return Ok((lo0, first));
    }
    let mut lo = lo0;
    let mut hi = (offered * 1.1).ceil() as u32 + 1;
    let mut best = simulate(cfg, run, hi, trace, 1.0)?;
    while !best.meets_all() {
        lo = hi;
        hi = hi.saturating_mul(2);
        if hi > 64 * lo0.max(64) {
            return Err(SimError::Config(format!(
                "{}: no fleet up to {hi} GPUs meets every tier's target",
                run.name
            )));
        }
        best = simulate(cfg, run, hi, trace, 1.0)?;
    }
    while hi - lo > ((hi as f64 * cfg.search.tolerance) as u32).max(1) {
        let mid = lo + (hi - lo) / 2;
        let r = simulate(cfg, run, mid, trace, 1.0)?;
        if r.meets_all() {
            hi = mid;
            best = r;
        } else {
            lo = mid;
        }
    }
    Ok((hi, best))
}

#[cfg(test)]
mod tests;
