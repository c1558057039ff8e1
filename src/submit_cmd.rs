//! `vidflow submit`: sends a job spec to a running `vidflow serve`, over
//! the gRPC API (API key) or straight to the intake queue (AMQP), and with
//! `--follow` shows its progress until it finishes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use vidflow_connectors::amqp::{self, Publisher};
use vidflow_connectors::grpc::pb::job_service_client::JobServiceClient;
use vidflow_connectors::grpc::pb::{JobRef, JobState, JobStatus, SubmitRequest};
use vidflow_connectors::tonic;
use vidflow_operators::event::{EventEnvelope, JobEvent};
use vidflow_operators::JobSpec;

#[derive(Clone, Copy, ValueEnum)]
pub enum Via {
    Grpc,
    Amqp,
}

#[derive(Args)]
pub struct SubmitArgs {
    /// A JSON job spec file (`-` reads stdin).
    pub spec: PathBuf,
    /// Through the API (needs a key) or straight onto the intake queue.
    #[arg(long, value_enum, default_value = "grpc")]
    pub via: Via,
    /// API address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub grpc: String,
    /// API key (or VIDFLOW_API_KEY).
    #[arg(long, env = "VIDFLOW_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Idempotency key (gRPC): resubmitting with it never makes a second job.
    #[arg(long)]
    pub client_key: Option<String>,
    /// Broker URL (or VIDFLOW_AMQP_URL).
    #[arg(
        long,
        env = "VIDFLOW_AMQP_URL",
        default_value = "amqp://vidflow:vidflow@127.0.0.1:5679/%2f"
    )]
    pub amqp: String,
    /// Queue/exchange name prefix (`[amqp] prefix`).
    #[arg(long, default_value = "vidflow")]
    pub prefix: String,
    /// Show progress until the job finishes; exit 1 unless it completed.
    #[arg(long)]
    pub follow: bool,
    /// PEM file of the CA that signs the API's certificate (an `https://`
    /// --grpc address) and the broker's (an `amqps://` URL).
    #[arg(long, env = "VIDFLOW_CA_FILE")]
    pub ca: Option<PathBuf>,
}

pub fn run(a: SubmitArgs) -> Result<i32> {
    let text = if a.spec.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the spec from stdin")?
    } else {
        std::fs::read_to_string(&a.spec).with_context(|| format!("reading {}", a.spec.display()))?
    };
    let spec = JobSpec::from_json(&text).with_context(|| format!("{}", a.spec.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match a.via {
            Via::Grpc => via_grpc(&a, spec).await,
            Via::Amqp => via_amqp(&a, spec).await,
        }
    })
}

fn bar() -> ProgressBar {
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:<10} [{bar:30}] {pos}/{len} steps")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn authed<T>(msg: T, key: &str) -> Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}")
            .parse()
            .context("the API key is not valid metadata text")?,
    );
    Ok(r)
}

async fn via_grpc(a: &SubmitArgs, spec: JobSpec) -> Result<i32> {
    let Some(key) = a.key.as_deref() else {
        bail!("--key (or VIDFLOW_API_KEY) is required with --via grpc");
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(a.grpc.clone())
        .with_context(|| format!("API address {}", a.grpc))?;
    if a.grpc.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &a.ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {}", a.grpc))?;
    let mut client = JobServiceClient::new(channel);
    let req = SubmitRequest {
        spec: Some(vidflow_operators::proto::JobSpec::try_from(&spec)?),
        client_key: a.client_key.clone().unwrap_or_default(),
    };
    let reply = client
        .submit(authed(req, key)?)
        .await
        .map_err(|s| anyhow::anyhow!("submit: {}: {}", s.code(), s.message()))?
        .into_inner();
    println!("{}", reply.job_id);
    if reply.duplicate {
        eprintln!("(already submitted with this client key: nothing new was queued)");
    }
    if !a.follow {
        return Ok(0);
    }
    let mut stream = client
        .watch(authed(
            JobRef {
                job_id: reply.job_id.clone(),
            },
            key,
        )?)
        .await
        .map_err(|s| anyhow::anyhow!("watch: {}: {}", s.code(), s.message()))?
        .into_inner();
    let bar = bar();
    let mut last: Option<JobStatus> = None;
    while let Some(s) = stream.next().await {
        let s = s.map_err(|s| anyhow::anyhow!("watch: {}: {}", s.code(), s.message()))?;
        bar.set_length(s.total_steps.max(1) as u64);
        bar.set_position(s.step as u64);
        bar.set_message(match s.state() {
            JobState::Queued => "queued".to_string(),
            JobState::Running => s.stage.clone(),
            other => other
                .as_str_name()
                .trim_start_matches("JOB_STATE_")
                .to_lowercase(),
        });
        last = Some(s);
    }
    bar.finish_and_clear();
    let Some(s) = last else {
        bail!("the watch ended without a status");
    };
    Ok(report(
        s.state() == JobState::Completed,
        &s.job_id,
        &s.output_key,
        &s.error,
        s.untrained,
    ))
}

fn report(ok: bool, job_id: &str, key: &str, error: &str, untrained: bool) -> i32 {
    if ok {
        let note = if untrained {
            " (built-in UNTRAINED model: noise, not a real video)"
        } else {
            ""
        };
        eprintln!("job {job_id} completed: {key}{note}");
        0
    } else {
        eprintln!("job {job_id} did not complete: {error}");
        1
    }
}

async fn via_amqp(a: &SubmitArgs, mut spec: JobSpec) -> Result<i32> {
    if let Some(ca) = &a.ca {
        amqp::trust_ca(ca)?;
    }
    let topo = amqp::Topology::new(&a.prefix);
    let job_id = spec.ensure_job_id().to_string();
    // Publishing as the tenant's own broker user: it may not declare the
    // service's names, and may hear only its own events.
    let as_tenant = amqp::url_user(&a.amqp) == spec.tenant;
    // Bind the follower before publishing so no event is missed.
    let follower = if a.follow {
        let conn = amqp::connect(&a.amqp, "vidflow-submit-follow").await?;
        let ch = conn.create_channel().await?;
        if !as_tenant {
            topo.declare(&ch).await?;
        }
        let binding = vidflow_operators::event::routing_key(&spec.tenant, &job_id, "*");
        let q = topo.bind_events(&ch, &binding).await?;
        let consumer = amqp::consume_auto_ack(&ch, &q, "vidflow-submit").await?;
        Some((conn, consumer))
    } else {
        None
    };
    let mut publisher = Publisher::new(&a.amqp, "vidflow-submit", topo);
    if as_tenant {
        publisher = publisher.without_declare();
    }
    publisher
        .publish_job(&spec)
        .await
        .with_context(|| format!("publishing to {}", a.amqp))?;
    println!("{job_id}");
    let Some((_conn, mut consumer)) = follower else {
        return Ok(0);
    };
    let bar = bar();
    while let Some(d) = consumer.next().await {
        let d = d?;
        let Ok(env) = serde_json::from_slice::<EventEnvelope>(&d.data) else {
            continue;
        };
        match env.event {
            JobEvent::Accepted { .. } => bar.set_message("admit"),
            JobEvent::Progress {
                stage, step, total, ..
            } => {
                bar.set_length(total.max(1) as u64);
                bar.set_position(step as u64);
                bar.set_message(stage.as_str());
            }
            JobEvent::Completed { key, untrained, .. } => {
                bar.finish_and_clear();
                return Ok(report(true, &job_id, &key, "", untrained));
            }
            JobEvent::Failed { error, .. } => {
                bar.finish_and_clear();
                return Ok(report(false, &job_id, "", &error, false));
            }
            JobEvent::Cancelled { step, .. } => {
                bar.finish_and_clear();
                return Ok(report(
                    false,
                    &job_id,
                    "",
                    &format!("cancelled at step {step}"),
                    false,
                ));
            }
            JobEvent::Rejected { field, error, .. } => {
                bar.finish_and_clear();
                return Ok(report(
                    false,
                    &job_id,
                    "",
                    &format!("rejected ({field}): {error}"),
                    false,
                ));
            }
        }
    }
    bail!("the broker closed the event stream before the job finished")
}
