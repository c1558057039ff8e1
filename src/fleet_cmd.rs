//! `vidflow fleet simulate`: the scheduler over a simulated fleet, with
//! the baselines on the same trace (see docs/SCHEDULING.md).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use vidflow_sched::sim::config::FleetConfig;
use vidflow_sched::sim::report::{self, Report};
use vidflow_sched::sim::SimResult;

use crate::fleet_plot as plot;

#[derive(Subcommand)]
pub enum FleetCmd {
    /// Simulate every configured policy on one synthetic (or recorded)
    /// trace; write summary.json and SVG charts.
    Simulate(SimulateArgs),
}

#[derive(Args)]
pub struct SimulateArgs {
    /// The fleet config (TOML; an empty file means the spec's defaults).
    #[arg(long, default_value = "configs/fleet.toml")]
    config: PathBuf,
    /// Where summary.json and the charts go.
    #[arg(long, default_value = "out/fleet")]
    out: PathBuf,
    /// Skip the smallest-fleet search.
    #[arg(long)]
    no_search: bool,
    /// Skip the load sweep.
    #[arg(long)]
    no_sweep: bool,
}

pub fn run(cmd: FleetCmd) -> Result<i32> {
    match cmd {
        FleetCmd::Simulate(a) => simulate(a).map(|()| 0),
    }
}

fn line(r: &SimResult) -> String {
    format!(
        "{:<22} {:>6} GPUs load {:.2}: p95 wait premium {:>7.1} s, standard {:>7.1} s, free {:>7.1} s; \
         attainment {:.3}/{:.3}/{:.3}; util {:.3}; {} preemptions; {} jobs in {:.2} s",
        r.policy,
        r.gpus,
        r.load,
        r.premium.p95_s,
        r.standard.p95_s,
        r.free.p95_s,
        r.premium.attainment,
        r.standard.attainment,
        r.free.attainment,
        r.utilisation,
        r.preemptions,
        r.jobs,
        r.wall_s
    )
}

fn simulate(a: SimulateArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    let mut cfg: FleetConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", a.config.display()))?;
    if let Some(t) = &cfg.workload.trace {
        // A trace path is relative to the config file.
        if t.is_relative() {
            let base = a.config.parent().unwrap_or(std::path::Path::new("."));
            cfg.workload.trace = Some(base.join(t));
        }
    }
    if a.no_search {
        cfg.search.enabled = false;
    }
    if a.no_sweep {
        cfg.sweep.loads.clear();
    }
    let rep = report::run(&cfg, |r| eprintln!("{}", line(r)))?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let json = a.out.join("summary.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&rep)?)
        .with_context(|| format!("writing {}", json.display()))?;
    if !rep.sweep.is_empty() {
        plot::p95_vs_load(&rep, &a.out.join("p95_wait_vs_load.svg"))?;
    }
    if !rep.needed.is_empty() {
        plot::gpus_needed(&rep, &a.out.join("gpus_needed.svg"))?;
    }
    print_summary(&rep);
    println!("wrote {}", a.out.display());
    Ok(())
}

fn print_summary(rep: &Report) {
    println!(
        "{} jobs in the window; mean {:.1} GPU-s per job; offered work keeps {:.0} GPUs busy \
         (Little's law: {:.0} concurrent GPU-holds at the peak rate)",
        rep.jobs_in_window,
        rep.mean_gpu_s,
        rep.offered_gpus,
        rep.mean_gpu_s * rep.config.workload.peak_jobs_per_s
    );
    println!("at the configured fleet ({} GPUs):", rep.config.fleet.gpus);
    for r in &rep.at_configured {
        println!("  {}", line(r));
    }
    for n in &rep.needed {
        println!(
            "smallest fleet meeting every tier's p95: {:<22} {:>6} GPUs ({:.3}x the configured {})",
            n.policy, n.gpus, n.vs_configured, rep.config.fleet.gpus
        );
    }
    if let Some(x) = rep.ours_over_strict {
        println!("ours / strict priority GPUs needed: {x:.3}");
    }
    println!("simulations took {:.1} s", rep.wall_s);
}
