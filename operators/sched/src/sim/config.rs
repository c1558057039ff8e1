//! `configs/fleet.toml`: the workload, the fleet and the policies a
//! simulation compares. Every field has a default taken from the spec or
//! documented next to it, so an empty file is a valid config.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cost::{Accelerator, Arch};
use crate::policy::{Policy, SchedConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    pub workload: Workload,
    pub fleet: Fleet,
    /// Our policy's knobs; each entry of `policies` picks the ordering.
    pub scheduler: SchedConfig,
    pub policies: Vec<PolicyRun>,
    pub search: Search,
    pub sweep: Sweep,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            workload: Workload::default(),
            fleet: Fleet::default(),
            scheduler: SchedConfig::default(),
            policies: vec![
                PolicyRun::new("fifo", Policy::Fifo, false, false),
                PolicyRun::new("strict_priority", Policy::StrictPriority, false, false),
                PolicyRun::new("slack_routed_preempt", Policy::Slack, true, true),
            ],
            search: Search::default(),
            sweep: Sweep::default(),
        }
    }
}

/// Arrivals: Poisson with a daily cosine curve, or a recorded trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    pub seed: u64,
    /// The spec's peak: 350 jobs/s.
    pub peak_jobs_per_s: f64,
    /// The daily low as a fraction of the peak (0.35: a consumer service's
    /// night trough is roughly a third of its evening peak).
    pub trough_fraction: f64,
    /// Hour of the day the curve peaks.
    pub peak_hour: f64,
    /// Start of the measured window, hours from the peak (-0.5: the hour
    /// centred on the peak).
    pub window_start_h: f64,
    /// Length of the measured window, hours.
    pub hours: f64,
    /// Simulated seconds before the window whose jobs load the fleet but
    /// are not measured.
    pub warmup_s: f64,
    pub tiers: TierMix,
    pub classes: Vec<Class>,
    /// A recorded trace (CSV `t_s,tier,class[,service_s]`) instead of the
    /// synthetic arrivals; times are seconds from the window's start.
    pub trace: Option<PathBuf>,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            seed: 7,
            peak_jobs_per_s: 350.0,
            trough_fraction: 0.35,
            peak_hour: 20.0,
            window_start_h: -0.5,
            hours: 1.0,
            warmup_s: 900.0,
            tiers: TierMix::default(),
            classes: default_classes(),
            trace: None,
        }
    }
}

/// Shares of jobs per tier (normalised).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierMix {
    pub premium: f64,
    pub standard: f64,
    pub free: f64,
}

impl Default for TierMix {
    fn default() -> Self {
        // Most jobs of a freemium service are free; paying tiers are fewer.
        TierMix {
            premium: 0.10,
            standard: 0.30,
            free: 0.60,
        }
    }
}

/// How a class's service time is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceDist {
    /// The cost model's prediction (or `service_s`), the same every time.
    #[default]
    Fixed,
    /// Exponential with that mean (for checks against queueing theory).
    Exponential,
}

/// One kind of job: a mode at a resolution and length.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Class {
    pub name: String,
    pub share: f64,
    pub width: u32,
    pub height: u32,
    pub seconds: f64,
    pub fps: f64,
    pub steps: u32,
    pub cfg: bool,
    /// GPUs one job of this class holds (sequence-parallel to meet its
    /// mode's latency).
    pub gpus: u32,
    /// Service seconds on its GPUs instead of the cost model's.
    pub service_s: Option<f64>,
    pub service_dist: ServiceDist,
}

impl Default for Class {
    fn default() -> Self {
        Class {
            name: "standard-768".into(),
            share: 1.0,
            width: 768,
            height: 512,
            seconds: 5.0,
            fps: 24.0,
            steps: 30,
            cfg: true,
            gpus: 1,
            service_s: None,
            service_dist: ServiceDist::Fixed,
        }
    }
}

impl Class {
    /// Frames: the smallest 8n+1 covering the duration.
    pub fn frames(&self) -> u32 {
        let f = (self.seconds * self.fps).round().max(1.0) as u32;
        (f.saturating_sub(1)).div_ceil(8) * 8 + 1
    }
}

/// The spec's modes; shares chosen so that, with the cost model, Little's
/// law gives about the spec's 15,750 concurrent generations at 350 jobs/s
/// (see docs/SCHEDULING.md).
fn default_classes() -> Vec<Class> {
    vec![
        Class {
            name: "realtime-768".into(),
            share: 0.40,
            steps: 8,
            cfg: false,
            ..Class::default()
        },
        Class {
            name: "standard-768".into(),
            share: 0.4058,
            ..Class::default()
        },
        Class {
            name: "standard-1080p".into(),
            share: 0.194,
            width: 1920,
            height: 1088,
            seconds: 10.0,
            gpus: 4,
            ..Class::default()
        },
        Class {
            name: "cinema-4k".into(),
            share: 0.0002,
            width: 3840,
            height: 2176,
            seconds: 60.0,
            steps: 50,
            gpus: 96,
            ..Class::default()
        },
    ]
}

/// The fleet the jobs run on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fleet {
    /// The spec's fleet.
    pub gpus: u32,
    pub arch: Arch,
    pub accelerator: Accelerator,
    /// Speed-up per GPU of a job spread over several (sequence parallel).
    pub parallel_efficiency: f64,
    /// Seconds a preempted job spends writing its checkpoint.
    pub checkpoint_write_s: f64,
    /// Seconds a resumed job spends loading it.
    pub resume_s: f64,
    /// Pools for routed policies: which classes each serves. GPUs are
    /// split in proportion to the pools' offered work.
    pub pools: Vec<PoolCfg>,
    /// When set, each pool is one worker's denoiser rather than GPUs that
    /// each run a job: its running jobs (all of one shape) share every
    /// step, whose time depends on how many there are. Off by default (the
    /// fleet's GPUs run a job each).
    pub batched_step: Option<BatchedStep>,
}

/// Step times of a batched denoiser, as measured (docs/SCHEDULING.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchedStep {
    /// Seconds of one step of 1, 2, … jobs; larger batches continue the
    /// last increase.
    pub by_size_s: Vec<f64>,
}

impl BatchedStep {
    /// Seconds of one step of `n` jobs.
    pub fn step_s(&self, n: usize) -> f64 {
        let t = &self.by_size_s;
        match (n, t.len()) {
            (_, 0) => 0.0,
            (0, _) => t[0],
            (n, len) if n <= len => t[n - 1],
            (n, 1) => t[0] * n as f64,
            (n, len) => t[len - 1] + (t[len - 1] - t[len - 2]) * (n - len) as f64,
        }
    }
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            gpus: 19_000,
            arch: Arch::ltx_2b(),
            accelerator: Accelerator::h100_assumed(),
            parallel_efficiency: 0.9,
            checkpoint_write_s: 2.0,
            resume_s: 1.0,
            pools: vec![
                PoolCfg {
                    name: "interactive".into(),
                    classes: vec!["realtime-768".into(), "standard-768".into()],
                },
                PoolCfg {
                    name: "hd".into(),
                    classes: vec!["standard-1080p".into()],
                },
                PoolCfg {
                    name: "cinema".into(),
                    classes: vec!["cinema-4k".into()],
                },
            ],
            batched_step: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolCfg {
    pub name: String,
    pub classes: Vec<String>,
}

/// One policy to compare.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRun {
    pub name: String,
    pub policy: Policy,
    /// Classes go to their pools (`fleet.pools`); else one shared pool.
    pub routed: bool,
    pub preempt: bool,
}

impl PolicyRun {
    pub fn new(name: &str, policy: Policy, routed: bool, preempt: bool) -> Self {
        PolicyRun {
            name: name.into(),
            policy,
            routed,
            preempt,
        }
    }
}

/// The search for the smallest fleet meeting every tier's p95 target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Search {
    pub enabled: bool,
    /// Stop when the bracket is this fraction of the fleet or less.
    pub tolerance: f64,
}

impl Default for Search {
    fn default() -> Self {
        Search {
            enabled: true,
            tolerance: 0.002,
        }
    }
}

/// p95 wait per tier against load, at the configured fleet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sweep {
    /// Arrival rates as fractions of the peak.
    pub loads: Vec<f64>,
    /// Hours simulated per point (shorter than the main run).
    pub hours: f64,
}

impl Default for Sweep {
    fn default() -> Self {
        Sweep {
            loads: vec![0.6, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1],
            hours: 0.25,
        }
    }
}
