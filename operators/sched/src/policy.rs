//! The scheduler: which waiting job starts in which pool, and which running
//! job yields at its next step boundary.
//!
//! It is plain, deterministic state: the caller tells it what happened
//! (`submit`, `finished`, `yielded`) and asks [`Scheduler::decide`] what to
//! do now; equal inputs give equal decisions (ordered sets, integer
//! microsecond keys, the job id as the last tie-break). The same code runs
//! in `vidflow serve` (one pool, its slots) and in the fleet simulator
//! (pools of GPUs).
//!
//! Three policies share the bookkeeping:
//! - [`Policy::Fifo`]: submission order, no tiers.
//! - [`Policy::StrictPriority`]: tier first, then submission order; what a
//!   priority queue does today.
//! - [`Policy::Slack`]: earliest deadline first, where a job's deadline is
//!   its submission time plus its tier's queue-wait target plus the time
//!   it has already run (a preempted job's waiting budget is what is left
//!   of its target). Because a free job's deadline stays fixed while new
//!   premium jobs arrive with later ones, waiting ages it: it goes ahead
//!   of every job whose deadline is later, whatever the tier. A job that
//!   can join a running batch gains `batch_affinity_s` of deadline. When
//!   the job at the front cannot fit, later jobs that fit may start
//!   (backfill), unless the front job is already late.
//!
//! Preemption (only under `Slack`, when enabled): a waiting job whose slack
//! (deadline − now) is under `preempt_below_s`, that does not fit, and
//! that no predicted completion would seat within `preempt_wait_s` (or its
//! slack, if shorter), asks the running job of a lower tier with the most
//! slack (its tier's target minus the time it has waited so far) to yield,
//! provided that victim has `preempt_margin_s` more slack than it. The
//! victim keeps its slot until the caller reports [`Scheduler::yielded`]
//! (its checkpoint written at the step boundary).
//!
//! The baselines (`Fifo`, `StrictPriority`) dispatch strictly in order:
//! when the front job does not fit, the pool waits for it, as a message
//! queue delivers in order.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use vidflow_job::Tier;

pub type JobId = u64;
pub type PoolId = usize;
pub type ClassId = usize;

/// Which ordering the scheduler uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    Fifo,
    StrictPriority,
    Slack,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Fifo => "fifo",
            Policy::StrictPriority => "strict_priority",
            Policy::Slack => "slack",
        }
    }
}

/// Queue-wait targets per tier, seconds (the spec's p95 promises).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    pub premium_s: f64,
    pub standard_s: f64,
    pub free_s: f64,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            premium_s: 30.0,
            standard_s: 300.0,
            free_s: 900.0,
        }
    }
}

impl Targets {
    pub fn of(&self, t: Tier) -> f64 {
        match t {
            Tier::Premium => self.premium_s,
            Tier::Standard => self.standard_s,
            Tier::Free => self.free_s,
        }
    }
}

/// The scheduler's knobs (`[scheduler]` in `configs/vidflow.toml` and
/// `configs/fleet.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedConfig {
    pub policy: Policy,
    pub targets: Targets,
    /// Whether running jobs may be asked to yield (only under `slack`).
    pub preempt: bool,
    /// A waiting job may cause a preemption once its slack is below this.
    /// 60 s: a premium arrival (30 s of slack) qualifies at once; a standard
    /// or free job only when it is close to its target.
    pub preempt_below_s: f64,
    /// No preemption when a running job is predicted to free enough room
    /// within this many seconds (or the waiting job's slack, if shorter).
    pub preempt_wait_s: f64,
    /// A victim must have this much more slack than the job it yields to.
    pub preempt_margin_s: f64,
    /// Deadline credit of a job that can join a running batch (same model
    /// and latent grid), so compatible jobs step together.
    pub batch_affinity_s: f64,
    /// How many waiting jobs past one that does not fit a pool looks at.
    pub lookahead: usize,
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            policy: Policy::Slack,
            targets: Targets::default(),
            preempt: true,
            preempt_below_s: 60.0,
            preempt_wait_s: 5.0,
            preempt_margin_s: 60.0,
            batch_affinity_s: 2.0,
            lookahead: 64,
        }
    }
}

/// A pool of capacity units (GPUs in the fleet, slots in `vidflow serve`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolSpec {
    pub name: String,
    pub capacity: u32,
}

/// What the scheduler knows of a job when it is submitted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JobInfo {
    pub tier: Tier,
    /// Routes the job to a pool (see [`Scheduler::new`]).
    pub class: ClassId,
    /// Seconds on the caller's clock.
    pub submitted_s: f64,
    /// Capacity units the job holds while it runs.
    pub units: u32,
    /// Predicted seconds of running (the cost model's).
    pub predicted_s: f64,
    /// Jobs with equal keys can share a denoising step.
    pub batch: Option<u64>,
}

/// What the caller should do now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    /// Run the job in the pool. `waited_s`: its queue wait so far, every
    /// waiting period included.
    Start {
        job: JobId,
        pool: PoolId,
        waited_s: f64,
    },
    /// Stop the running job at its next step boundary (checkpoint it) and
    /// report [`Scheduler::yielded`].
    Preempt { job: JobId, pool: PoolId },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Yielding,
}

#[derive(Clone, Debug)]
struct Job {
    info: JobInfo,
    pool: PoolId,
    state: State,
    /// Wait accumulated in finished waiting periods.
    waited_s: f64,
    /// Start of the current period (waiting or running).
    since_s: f64,
    /// Run time so far (previous runs).
    ran_s: f64,
    remaining_s: f64,
    key: Key,
    /// While running: slack (µs) and predicted end (µs) as indexed.
    slack_us: i64,
    end_us: i64,
}

/// What one look at a pool has promised so far.
struct Pass {
    /// Predicted completions already counted on by a waiting job.
    ends_used: usize,
    /// Units being handed back by yielding jobs not yet counted on.
    incoming_left: u32,
}

/// The order of waiting jobs: smallest first.
type Key = (i64, i64, JobId);

#[derive(Default, Clone, Debug)]
struct Pool {
    capacity: u32,
    free: u32,
    /// Units that preempted jobs will hand back.
    incoming: u32,
    waiting: BTreeSet<Key>,
    /// Running jobs by tier rank: (slack µs, id), for victims.
    victims: [BTreeSet<(i64, JobId)>; 3],
    /// Running jobs by predicted end: (end µs, id).
    ends: BTreeSet<(i64, JobId)>,
    /// Running jobs per batch key.
    batches: HashMap<u64, u32>,
    uses_batches: bool,
    dirty: bool,
}

fn us(s: f64) -> i64 {
    (s * 1e6).round() as i64
}

fn rank(t: Tier) -> usize {
    match t {
        Tier::Premium => 0,
        Tier::Standard => 1,
        Tier::Free => 2,
    }
}

/// The scheduler over a set of pools.
pub struct Scheduler {
    cfg: SchedConfig,
    pools: Vec<Pool>,
    names: Vec<String>,
    route: Vec<PoolId>,
    jobs: HashMap<JobId, Job>,
    preemptions: u64,
}

/// A call the scheduler cannot take (a caller's bug, reported not panicked).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SchedError {
    #[error("job {0} is already known to the scheduler")]
    Duplicate(JobId),
    #[error("job {0} is not known to the scheduler")]
    Unknown(JobId),
    #[error("job {job} is {state}, not {expected}")]
    WrongState {
        job: JobId,
        state: &'static str,
        expected: &'static str,
    },
    #[error("class {class} has no pool (routes: {routes})")]
    NoRoute { class: ClassId, routes: usize },
    #[error("job {job} needs {units} units; pool {pool:?} has {capacity}")]
    TooBig {
        job: JobId,
        units: u32,
        pool: String,
        capacity: u32,
    },
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Running => "running",
            State::Yielding => "yielding",
        }
    }
}

impl Scheduler {
    /// `route[class]` is the pool each job class goes to.
    pub fn new(cfg: SchedConfig, pools: &[PoolSpec], route: Vec<PoolId>) -> Scheduler {
        Scheduler {
            pools: pools
                .iter()
                .map(|p| Pool {
                    capacity: p.capacity,
                    free: p.capacity,
                    ..Pool::default()
                })
                .collect(),
            names: pools.iter().map(|p| p.name.clone()).collect(),
            route,
            cfg,
            jobs: HashMap::new(),
            preemptions: 0,
        }
    }

    pub fn config(&self) -> &SchedConfig {
        &self.cfg
    }

    /// Preemptions asked so far.
    pub fn preemptions(&self) -> u64 {
        self.preemptions
    }

    pub fn waiting(&self) -> usize {
        self.pools.iter().map(|p| p.waiting.len()).sum()
    }

    /// Units free in a pool now.
    pub fn free(&self, pool: PoolId) -> u32 {
        self.pools[pool].free
    }

    fn key(&self, j: &JobInfo, id: JobId, ran_s: f64) -> Key {
        match self.cfg.policy {
            Policy::Fifo => (0, us(j.submitted_s), id),
            Policy::StrictPriority => (rank(j.tier) as i64, us(j.submitted_s), id),
            Policy::Slack => (
                0,
                us(j.submitted_s + self.cfg.targets.of(j.tier) + ran_s),
                id,
            ),
        }
    }

    /// A job arrives (or comes back after a restart) and waits.
    pub fn submit(&mut self, id: JobId, info: JobInfo, now_s: f64) -> Result<(), SchedError> {
        if self.jobs.contains_key(&id) {
            return Err(SchedError::Duplicate(id));
        }
        let pool = *self.route.get(info.class).ok_or(SchedError::NoRoute {
            class: info.class,
            routes: self.route.len(),
        })?;
        if info.units > self.pools[pool].capacity {
            return Err(SchedError::TooBig {
                job: id,
                units: info.units,
                pool: self.names[pool].clone(),
                capacity: self.pools[pool].capacity,
            });
        }
        let key = self.key(&info, id, 0.0);
        let p = &mut self.pools[pool];
        p.waiting.insert(key);
        p.dirty = true;
        p.uses_batches |= info.batch.is_some();
        self.jobs.insert(
            id,
            Job {
                info,
                pool,
                state: State::Waiting,
                // Time between submission and arrival here counts as waiting.
                waited_s: (now_s - info.submitted_s).max(0.0),
                since_s: now_s,
                ran_s: 0.0,
                remaining_s: info.predicted_s,
                key,
                slack_us: 0,
                end_us: 0,
            },
        );
        Ok(())
    }

    /// A running (or yielding) job ended: finished, failed or cancelled.
    /// A waiting job that is cancelled leaves too.
    pub fn finished(&mut self, id: JobId, _now_s: f64) -> Result<(), SchedError> {
        let j = self.jobs.remove(&id).ok_or(SchedError::Unknown(id))?;
        let p = &mut self.pools[j.pool];
        match j.state {
            State::Waiting => {
                p.waiting.remove(&j.key);
            }
            State::Running | State::Yielding => {
                Self::unindex(p, &j, id);
                p.free += j.info.units;
                if j.state == State::Yielding {
                    p.incoming -= j.info.units;
                }
            }
        }
        p.dirty = true;
        Ok(())
    }

    /// A running job's new prediction of the work it has left (after a
    /// step, when its measured step time replaces the cost model's guess):
    /// moves its predicted end, which preemption decisions consult.
    pub fn progress(&mut self, id: JobId, now_s: f64, remaining_s: f64) -> Result<(), SchedError> {
        let j = self.jobs.get_mut(&id).ok_or(SchedError::Unknown(id))?;
        j.remaining_s = remaining_s.max(0.0);
        if j.state != State::Running {
            return Ok(());
        }
        let p = &mut self.pools[j.pool];
        p.ends.remove(&(j.end_us, id));
        j.end_us = us(now_s + j.remaining_s);
        p.ends.insert((j.end_us, id));
        Ok(())
    }

    /// A preempted job stopped at a step boundary with `remaining_s` of
    /// predicted work left; it waits again.
    pub fn yielded(&mut self, id: JobId, now_s: f64, remaining_s: f64) -> Result<(), SchedError> {
        let ran_s;
        let key;
        {
            let j = self.jobs.get(&id).ok_or(SchedError::Unknown(id))?;
            if j.state != State::Yielding {
                return Err(SchedError::WrongState {
                    job: id,
                    state: j.state.name(),
                    expected: "yielding",
                });
            }
            ran_s = j.ran_s + (now_s - j.since_s).max(0.0);
            key = self.key(&j.info, id, ran_s);
        }
        let j = self.jobs.get_mut(&id).expect("checked above");
        let p = &mut self.pools[j.pool];
        Self::unindex(p, j, id);
        p.free += j.info.units;
        p.incoming -= j.info.units;
        p.waiting.insert(key);
        p.dirty = true;
        j.state = State::Waiting;
        j.ran_s = ran_s;
        j.since_s = now_s;
        j.remaining_s = remaining_s.max(0.0);
        j.key = key;
        Ok(())
    }

    fn unindex(p: &mut Pool, j: &Job, id: JobId) {
        p.victims[rank(j.info.tier)].remove(&(j.slack_us, id));
        p.ends.remove(&(j.end_us, id));
        if let Some(b) = j.info.batch {
            if let Some(n) = p.batches.get_mut(&b) {
                *n -= 1;
                if *n == 0 {
                    p.batches.remove(&b);
                }
            }
        }
    }

    /// What to start and what to preempt now. Only pools where something
    /// changed since the last call are looked at.
    pub fn decide(&mut self, now_s: f64) -> Vec<Decision> {
        let mut out = Vec::new();
        for pool in 0..self.pools.len() {
            if self.pools[pool].dirty {
                self.pools[pool].dirty = false;
                self.decide_pool(pool, now_s, &mut out);
            }
        }
        out
    }

    /// Marks every pool for a look at the next `decide` (deadlines move
    /// with time even when nothing happens).
    pub fn touch(&mut self) {
        for p in &mut self.pools {
            p.dirty = true;
        }
    }

    fn decide_pool(&mut self, pool: PoolId, now_s: f64, out: &mut Vec<Decision>) {
        let now = us(now_s);
        let in_order = self.cfg.policy != Policy::Slack;
        // Candidates in order; with batching, a job that can join a running
        // batch moves up by the affinity credit.
        let mut misses = 0usize;
        let mut cursor: Option<Key> = None;
        let mut pass = Pass {
            ends_used: 0,
            incoming_left: self.pools[pool].incoming,
        };
        loop {
            let p = &self.pools[pool];
            if p.waiting.is_empty() {
                break;
            }
            let next = match cursor {
                None => self.pick_first(pool),
                Some(c) => p
                    .waiting
                    .range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                    .next()
                    .copied(),
            };
            let Some(k) = next else { break };
            let id = k.2;
            let (units, tier, slack_us) = {
                let j = &self.jobs[&id];
                (j.info.units, j.info.tier, j.key.1 - now)
            };
            if self.pools[pool].free >= units {
                self.start(pool, id, now_s, out);
                cursor = None;
                misses = 0;
                continue;
            }
            if in_order {
                break;
            }
            if self.cfg.preempt && (slack_us as f64) < self.cfg.preempt_below_s * 1e6 {
                self.maybe_preempt(pool, tier, units, slack_us, now, &mut pass, out);
            }
            if slack_us < 0 {
                // Late: hold the pool for it rather than let it starve
                // behind smaller jobs.
                break;
            }
            misses += 1;
            if misses > self.cfg.lookahead {
                break;
            }
            cursor = Some(k);
        }
    }

    /// The first job in order, with the batch credit applied among the
    /// first `lookahead` when the pool batches.
    fn pick_first(&self, pool: PoolId) -> Option<Key> {
        let p = &self.pools[pool];
        let first = *p.waiting.first()?;
        if !p.uses_batches || p.batches.is_empty() || self.cfg.policy != Policy::Slack {
            return Some(first);
        }
        let credit = us(self.cfg.batch_affinity_s);
        p.waiting
            .iter()
            .take(self.cfg.lookahead.max(1))
            .min_by_key(|k| {
                let j = &self.jobs[&k.2];
                let joins = j.info.batch.is_some_and(|b| p.batches.contains_key(&b));
                (k.1 - if joins { credit } else { 0 }, k.2)
            })
            .copied()
    }

    fn start(&mut self, pool: PoolId, id: JobId, now_s: f64, out: &mut Vec<Decision>) {
        let targets = self.cfg.targets;
        let j = self.jobs.get_mut(&id).expect("waiting job is known");
        let p = &mut self.pools[pool];
        p.waiting.remove(&j.key);
        p.free -= j.info.units;
        j.waited_s += (now_s - j.since_s).max(0.0);
        j.since_s = now_s;
        j.state = State::Running;
        j.slack_us = us(targets.of(j.info.tier) - j.waited_s);
        j.end_us = us(now_s + j.remaining_s);
        p.victims[rank(j.info.tier)].insert((j.slack_us, id));
        p.ends.insert((j.end_us, id));
        if let Some(b) = j.info.batch {
            *p.batches.entry(b).or_insert(0) += 1;
        }
        out.push(Decision::Start {
            job: id,
            pool,
            waited_s: j.waited_s,
        });
    }

    #[allow(clippy::too_many_arguments)] // one call site, all of the waiting job's facts
    fn maybe_preempt(
        &mut self,
        pool: PoolId,
        tier: Tier,
        units: u32,
        slack_us: i64,
        now: i64,
        pass: &mut Pass,
        out: &mut Vec<Decision>,
    ) {
        let p = &self.pools[pool];
        if p.free + pass.incoming_left >= units {
            // Room a yielding job hands back is on its way to this one.
            pass.incoming_left -= units.saturating_sub(p.free);
            return;
        }
        // Would a predicted completion seat it soon enough anyway?
        let horizon = now + slack_us.min(us(self.cfg.preempt_wait_s)).max(0);
        if let Some(&(end, _)) = p.ends.iter().nth(pass.ends_used) {
            if end <= horizon {
                pass.ends_used += 1;
                return;
            }
        }
        // The lower-tier running job with the most slack.
        let margin = us(self.cfg.preempt_margin_s);
        let victim = p.victims[rank(tier) + 1..]
            .iter()
            .filter_map(|s| s.last().copied())
            .filter(|&(s, v)| s >= slack_us + margin && self.jobs[&v].info.units >= units)
            .max();
        let Some((vs, v)) = victim else { return };
        let j = self.jobs.get_mut(&v).expect("victim is known");
        let p = &mut self.pools[pool];
        p.victims[rank(j.info.tier)].remove(&(vs, v));
        p.ends.remove(&(j.end_us, v));
        j.state = State::Yielding;
        p.incoming += j.info.units;
        // The victim's units go to this job; what is over stays on offer.
        pass.incoming_left += j.info.units.saturating_sub(units);
        self.preemptions += 1;
        out.push(Decision::Preempt { job: v, pool });
    }
}

#[cfg(test)]
mod tests;
