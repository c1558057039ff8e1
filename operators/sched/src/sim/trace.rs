//! The jobs a simulation replays: synthetic (Poisson arrivals thinned to a
//! daily cosine, tiers and classes drawn from their shares) or read from a
//! recorded CSV.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vidflow_job::Tier;

use super::config::{FleetConfig, ServiceDist, Workload};
use super::SimError;
use crate::cost::{CostModel, JobShape};

/// One job of a trace. Times are seconds of simulated time (0 = start of
/// the warm-up).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TraceJob {
    /// When it reaches the scheduler.
    pub t: f64,
    /// When it was submitted: its wait and its deadline count from here.
    /// Earlier than `t` where it spent time in intake first (a measured
    /// trace); equal to `t` otherwise.
    pub submitted: f64,
    pub tier: Tier,
    pub class: u16,
    /// Seconds on its GPUs.
    pub service_s: f64,
    /// Step boundaries it can yield at.
    pub steps: u32,
    pub units: u32,
    /// Counted in the results (arrived inside the window).
    pub measured: bool,
}

/// Per class: seconds on its GPUs and GPU-seconds of work.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassCost {
    pub service_s: f64,
    pub gpu_s: f64,
    pub steps: u32,
    pub units: u32,
}

/// What each class costs under the fleet's cost model.
pub fn class_costs(cfg: &FleetConfig) -> Vec<ClassCost> {
    let model = CostModel {
        arch: cfg.fleet.arch.clone(),
        accel: cfg.fleet.accelerator.clone(),
    };
    cfg.workload
        .classes
        .iter()
        .map(|c| {
            let units = c.gpus.max(1);
            let eff = if units > 1 {
                cfg.fleet.parallel_efficiency
            } else {
                1.0
            };
            let cost = model.predict(&JobShape {
                width: c.width,
                height: c.height,
                frames: c.frames(),
                steps: c.steps,
                cfg: c.cfg,
            });
            let service_s = c.service_s.unwrap_or(cost.total_s / (units as f64 * eff));
            ClassCost {
                service_s,
                gpu_s: service_s * units as f64,
                steps: (c.steps * cost.segments).max(1),
                units,
            }
        })
        .collect()
}

/// The arrival rate at `t` seconds from the start of the warm-up.
pub fn rate_at(w: &Workload, t: f64) -> f64 {
    let h = w.peak_hour + w.window_start_h + (t - w.warmup_s) / 3600.0;
    let phase = 2.0 * std::f64::consts::PI * (h - w.peak_hour) / 24.0;
    w.peak_jobs_per_s * (w.trough_fraction + (1.0 - w.trough_fraction) * (1.0 + phase.cos()) / 2.0)
}

fn tier_of(w: &Workload, u: f64) -> Tier {
    let m = &w.tiers;
    let total = m.premium + m.standard + m.free;
    if u * total < m.premium {
        Tier::Premium
    } else if u * total < m.premium + m.standard {
        Tier::Standard
    } else {
        Tier::Free
    }
}

/// Synthetic arrivals over the warm-up plus `hours`, at `scale` × the
/// configured rates.
pub fn synthetic(cfg: &FleetConfig, hours: f64, scale: f64) -> Vec<TraceJob> {
    let w = &cfg.workload;
    let costs = class_costs(cfg);
    let shares: Vec<f64> = w.classes.iter().map(|c| c.share.max(0.0)).collect();
    let share_sum: f64 = shares.iter().sum();
    let mut rng = ChaCha8Rng::seed_from_u64(w.seed);
    let end = w.warmup_s + hours * 3600.0;
    let lmax = w.peak_jobs_per_s * scale;
    let mut out = Vec::with_capacity((lmax * end) as usize + 16);
    let mut t = 0.0;
    loop {
        t += -(1.0 - rng.random::<f64>()).ln() / lmax;
        if t >= end {
            break;
        }
        if rng.random::<f64>() * lmax > rate_at(w, t) * scale {
            continue;
        }
        let tier = tier_of(w, rng.random::<f64>());
        let mut u = rng.random::<f64>() * share_sum;
        let mut class = shares.len() - 1;
        for (i, s) in shares.iter().enumerate() {
            if u < *s {
                class = i;
                break;
            }
            u -= s;
        }
        let c = &costs[class];
        let service_s = match w.classes[class].service_dist {
            ServiceDist::Fixed => c.service_s,
            ServiceDist::Exponential => -(1.0 - rng.random::<f64>()).ln() * c.service_s,
        };
        out.push(TraceJob {
            t,
            submitted: t,
            tier,
            class: class as u16,
            service_s,
            steps: c.steps,
            units: c.units,
            measured: t >= w.warmup_s,
        });
    }
    out
}

/// A recorded trace: CSV lines `t_s,tier,class[,service_s]` (a header
/// line starting with `t_s` is skipped); `class` names a configured class.
pub fn read_csv(cfg: &FleetConfig, path: &Path) -> Result<Vec<TraceJob>, SimError> {
    let text = std::fs::read_to_string(path).map_err(|e| SimError::Trace {
        path: path.display().to_string(),
        line: 0,
        why: e.to_string(),
    })?;
    let costs = class_costs(cfg);
    let bad = |line: usize, why: String| SimError::Trace {
        path: path.display().to_string(),
        line,
        why,
    };
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with("t_s") || l.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = l.split(',').map(str::trim).collect();
        if f.len() < 3 {
            return Err(bad(
                i + 1,
                format!("want t_s,tier,class[,service_s], got {l:?}"),
            ));
        }
        let t: f64 = f[0]
            .parse()
            .map_err(|e| bad(i + 1, format!("t_s {:?}: {e}", f[0])))?;
        let tier = match f[1] {
            "premium" => Tier::Premium,
            "standard" => Tier::Standard,
            "free" => Tier::Free,
            o => {
                return Err(bad(
                    i + 1,
                    format!("tier {o:?}: want premium, standard or free"),
                ))
            }
        };
        let class = cfg
            .workload
            .classes
            .iter()
            .position(|c| c.name == f[2])
            .ok_or_else(|| bad(i + 1, format!("class {:?} is not configured", f[2])))?;
        let c = &costs[class];
        let service_s = match f.get(3) {
            Some(s) => s
                .parse()
                .map_err(|e| bad(i + 1, format!("service_s {s:?}: {e}")))?,
            None => c.service_s,
        };
        out.push(TraceJob {
            t: t + cfg.workload.warmup_s,
            submitted: t + cfg.workload.warmup_s,
            tier,
            class: class as u16,
            service_s,
            steps: c.steps,
            units: c.units,
            measured: true,
        });
    }
    out.sort_by(|a, b| a.t.total_cmp(&b.t));
    Ok(out)
}
