//! `vidflow fleet simulate`: every configured policy on the same trace at
//! the configured fleet, the smallest fleet each needs, and p95 wait
//! against load, as one serialisable report.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::config::FleetConfig;
use super::trace::{self, class_costs};
use super::{offered_gpus, simulate, smallest_fleet, SimError, SimResult};

/// What a class costs, for the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassRow {
    pub name: String,
    pub share: f64,
    pub gpus: u32,
    pub service_s: f64,
    pub gpu_s: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FleetNeed {
    pub policy: String,
    pub gpus: u32,
    /// This fleet over the spec's (the configured) fleet.
    pub vs_configured: f64,
    pub run: SimResult,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub config: FleetConfig,
    pub classes: Vec<ClassRow>,
    /// Mean GPU-seconds per job and the concurrency Little's law gives.
    pub mean_gpu_s: f64,
    pub jobs_in_window: u64,
    /// GPUs the window's work keeps busy on average (100% utilisation).
    pub offered_gpus: f64,
    /// Every policy at the configured fleet on the same trace.
    pub at_configured: Vec<SimResult>,
    pub needed: Vec<FleetNeed>,
    /// Our policy's needs over strict priority's (the first policy named
    /// `strict_priority` against the last in the list).
    pub ours_over_strict: Option<f64>,
    pub sweep: Vec<SimResult>,
    pub wall_s: f64,
}

/// Runs the whole comparison. `progress` hears each finished simulation.
pub fn run(cfg: &FleetConfig, mut progress: impl FnMut(&SimResult)) -> Result<Report, SimError> {
    let t0 = Instant::now();
    let w = &cfg.workload;
    let tr = match &w.trace {
        Some(p) => trace::read_csv(cfg, p)?,
        None => trace::synthetic(cfg, w.hours, 1.0),
    };
    let costs = class_costs(cfg);
    let share_sum: f64 = w.classes.iter().map(|c| c.share).sum();
    let classes: Vec<ClassRow> = w
        .classes
        .iter()
        .zip(&costs)
        .map(|(c, k)| ClassRow {
            name: c.name.clone(),
            share: c.share / share_sum,
            gpus: k.units,
            service_s: k.service_s,
            gpu_s: k.gpu_s,
        })
        .collect();
    let mean_gpu_s = classes.iter().map(|c| c.share * c.gpu_s).sum();
    let mut at_configured = Vec::new();
    for p in &cfg.policies {
        let r = simulate(cfg, p, cfg.fleet.gpus, &tr, 1.0)?;
        progress(&r);
        at_configured.push(r);
    }
    let mut needed = Vec::new();
    if cfg.search.enabled {
        for p in &cfg.policies {
            let (n, r) = smallest_fleet(cfg, p, &tr)?;
            progress(&r);
            needed.push(FleetNeed {
                policy: p.name.clone(),
                gpus: n,
                vs_configured: n as f64 / cfg.fleet.gpus as f64,
                run: r,
            });
        }
    }
    let ours_over_strict = match (
        needed.iter().find(|n| n.policy == "strict_priority"),
        needed.last(),
    ) {
        (Some(s), Some(o)) => Some(o.gpus as f64 / s.gpus as f64),
        _ => None,
    };
    let mut sweep = Vec::new();
    if w.trace.is_none() {
        for &load in &cfg.sweep.loads {
            let mut c = cfg.clone();
            c.workload.hours = cfg.sweep.hours;
            let tr = trace::synthetic(&c, c.workload.hours, load);
            for p in &cfg.policies {
                let r = simulate(&c, p, cfg.fleet.gpus, &tr, load)?;
                progress(&r);
                sweep.push(r);
            }
        }
    }
    Ok(Report {
        config: cfg.clone(),
        classes,
        mean_gpu_s,
        jobs_in_window: at_configured.first().map(|r| r.jobs).unwrap_or(0),
        offered_gpus: offered_gpus(cfg, &tr),
        at_configured,
        needed,
        ours_over_strict,
        sweep,
        wall_s: t0.elapsed().as_secs_f64(),
    })
}
