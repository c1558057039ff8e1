//! `vidflow serve`: AMQP intake + gRPC and HTTP APIs + the dataflow workers, until
//! SIGTERM (drain) or SIGKILL (the broker redelivers what was unacked).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use vidflow_dataflow::serve::{run_serve, ServeConfig};

#[derive(Args)]
pub struct ServeArgs {
    /// Service configuration (broker, API, keys, engine).
    #[arg(long, default_value = "configs/vidflow.toml")]
    pub config: PathBuf,
    /// Override `[grpc] listen` (port 0 picks a free port).
    #[arg(long)]
    pub grpc_listen: Option<String>,
    /// Override `[http] listen` (port 0 picks a free port).
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Override `[engine] out_dir`.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

pub fn run(a: ServeArgs) -> Result<i32> {
    let mut cfg = ServeConfig::load(&a.config)?;
    if let Some(l) = a.grpc_listen {
        cfg.grpc.listen = l;
    }
    if let Some(l) = a.http_listen {
        cfg.http.listen = l;
    }
    if let Some(o) = a.out_dir {
        cfg.engine.out_dir = o;
    }
    let queue = cfg.amqp.topology().jobs;
    run_serve(
        cfg,
        Box::new(move |ready| {
            // One line on stdout that scripts (and tests) wait for.
            let api = ready
                .grpc
                .map(|a| format!("; gRPC API on {a}"))
                .unwrap_or_default();
            let http = ready
                .http
                .map(|a| format!("; HTTP API on http://{a} (console http://{a}/console/)"))
                .unwrap_or_default();
            let metrics = ready
                .metrics
                .map(|a| format!("; metrics on http://{a}/metrics"))
                .unwrap_or_default();
            println!("vidflow serve: ready, consuming {queue}{api}{http}{metrics}");
            let _ = std::io::stdout().flush();
        }),
    )
    .context("vidflow serve")?;
    println!("vidflow serve: stopped");
    Ok(0)
}
