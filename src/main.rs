//! The `vidflow` binary. `anyhow` lives only here, at the edge; library
//! crates return typed errors.

mod backfill_cmd;
mod eval_cmd;
mod fleet_cmd;
mod fleet_plot;
mod generate_cmd;
mod key_cmd;
mod model_cmd;
mod model_list;
mod report_cmd;
mod safety_cmd;
mod serve_cmd;
mod submit_cmd;
mod tenant_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vidflow",
    version,
    about = "Text/image-to-video serving on LTX-Video"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate one video through the embedded pipeline (no broker; the demo
    /// model unless --model or --model-dir; local storage).
    Generate(generate_cmd::GenerateArgs),
    /// Run a file of job specs (JSONL or Parquet) through the pipeline;
    /// resumable, and shareable by a multi-process timely cluster.
    Backfill(backfill_cmd::BackfillArgs),
    /// Serve jobs from RabbitMQ and the gRPC API until SIGTERM.
    Serve(serve_cmd::ServeArgs),
    /// Submit a job spec (gRPC or AMQP) and optionally follow it.
    Submit(submit_cmd::SubmitArgs),
    /// Reports from the analytics Parquet datasets.
    Report {
        #[command(subcommand)]
        cmd: report_cmd::ReportCmd,
    },
    /// Safety policy evaluation and checks.
    Safety {
        #[command(subcommand)]
        cmd: safety_cmd::SafetyCmd,
    },
    /// Tenants: a broker user and an API key each.
    Tenant {
        #[command(subcommand)]
        cmd: tenant_cmd::TenantCmd,
    },
    /// API keys.
    Key {
        #[command(subcommand)]
        cmd: key_cmd::KeyCmd,
    },
    /// Fleet planning: the scheduler over a simulated fleet.
    Fleet {
        #[command(subcommand)]
        cmd: fleet_cmd::FleetCmd,
    },
    /// Evaluations: prompt-following of the demo model.
    Eval {
        #[command(subcommand)]
        cmd: eval_cmd::EvalCmd,
    },
    /// Model runtime tools: parity checks, checkpoint info, sampling.
    Model {
        #[command(subcommand)]
        cmd: model_cmd::ModelCmd,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: logs in files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    vidflow_connectors::install_crypto_provider();
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Model { cmd } => model_cmd::run(cmd),
        Cmd::Eval { cmd } => eval_cmd::run(cmd),
        Cmd::Fleet { cmd } => fleet_cmd::run(cmd),
        Cmd::Generate(a) => generate_cmd::run(a),
        Cmd::Backfill(a) => backfill_cmd::run(a),
        Cmd::Serve(a) => serve_cmd::run(a),
        Cmd::Submit(a) => submit_cmd::run(a),
        Cmd::Key { cmd } => key_cmd::run(cmd),
        Cmd::Tenant { cmd } => tenant_cmd::run(cmd),
        Cmd::Report { cmd } => report_cmd::run(cmd),
        Cmd::Safety { cmd } => safety_cmd::run(cmd),
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
