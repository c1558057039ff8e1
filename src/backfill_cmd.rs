//! `vidflow backfill`: many job specs through the graph, resumable, and
//! shareable by several timely processes (see `dataflow/README.md`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use vidflow_dataflow::{read_hostfile, run_backfill, BackfillConfig};
use vidflow_operators::AdmissionConfig;

#[derive(Args)]
pub struct BackfillArgs {
    /// Job file: JSONL (one JobSpec JSON per line) or Parquet (a string
    /// column `spec` holding one JobSpec JSON per row).
    pub jobs: PathBuf,
    /// Output folder: videos/, done/, results/part-*.parquet, events-*.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    /// timely worker threads in this process.
    #[arg(short = 'w', long, default_value_t = 1)]
    pub workers: usize,
    /// Configuration folder (modes.toml, models.toml); default: built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Most jobs denoised together in one step.
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// Processes in the timely cluster (timely's -n); >1 needs --hostfile.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub processes: usize,
    /// This process's index, 0..processes (timely's -p).
    #[arg(short = 'p', long, default_value_t = 0)]
    pub process: usize,
    /// Hosts file: one host:port per line, process 0 first (timely's -h).
    #[arg(long)]
    pub hostfile: Option<PathBuf>,
    #[command(flatten)]
    pub safety: crate::safety_cmd::SafetyArgs,
}

pub fn run(a: BackfillArgs) -> Result<i32> {
    let admission = match &a.config {
        Some(dir) => AdmissionConfig::load(dir)?,
        None => AdmissionConfig::builtin_default()?,
    };
    if a.process >= a.processes.max(1) {
        bail!(
            "--process {} is out of range for --processes {}",
            a.process,
            a.processes
        );
    }
    let addresses = match (&a.hostfile, a.processes) {
        (_, 0 | 1) => Vec::new(),
        (Some(h), n) => read_hostfile(h, n)?,
        (None, n) => bail!("--processes {n} needs --hostfile (one host:port per process)"),
    };
    let r = run_backfill(&BackfillConfig {
        input: a.jobs.clone(),
        out: a.out.clone(),
        admission,
        max_batch: a.max_batch,
        threads: a.workers,
        process: a.process,
        addresses,
        safety: a.safety.config(),
    })?;
    println!(
        "backfill process {}: {} jobs in input, {} owned here, {} already done, {} completed, {} failed, {} recovered",
        a.process, r.total, r.owned, r.skipped, r.completed, r.failed, r.recovered
    );
    for p in &r.parts {
        println!("results {}", p.display());
    }
    println!("events {}", r.events.display());
    Ok(if r.failed > 0 { 2 } else { 0 })
}
