//! `vidflow serve`: the pipeline behind RabbitMQ and the gRPC API.
//!
//! Threads and tasks:
//! - the AMQP session (`session.rs`) consumes the intake queue, dead-letters
//!   what is not a job, hands jobs to the graph, publishes events, and acks
//!   each job's message(s) once its result is durable;
//! - the timely graph (`run::start` with a channel feed) on its own
//!   threads, fed validated jobs that worker 0 drains;
//! - the committer writes each job's terminal record to the object store
//!   and passes the terminal event to the session to publish with a
//!   confirm; only that confirm acks the message (the commit point);
//! - the gRPC API (`vidflow_connectors::grpc`) with its own connection.
//!
//! Delivery is at least once (a crash before the ack redelivers); effects
//! are idempotent on the job id (a job with a record is re-announced, not
//! regenerated; a job already running here absorbs the duplicate delivery),
//! so outputs happen once.

mod admission;
mod commit;
mod config;
pub mod metrics;
mod pending;
mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::unbounded_channel;
use vidflow_connectors::amqp::Publisher;
use vidflow_connectors::grpc::{self, ApiDeps, JobTable, Jobs};
use vidflow_connectors::lapin::Acker;
use vidflow_connectors::sinks::Sinks;
use vidflow_connectors::state::{Backend, StateStore};
use vidflow_connectors::store::OutputStore;
use vidflow_operators::event::{now_ms, EventEnvelope, JobEvent};
use vidflow_operators::ledger::{JobRecord, JobTerms};
use vidflow_operators::quota::{month_of_ms, QuotaBook};
use vidflow_operators::{EventSink, JobKey, JobResult, JobStatus};

pub use config::{
    AuthConfig, BillingSection, EngineSection, GrpcConfig, GrpcTls, MetricsConfig, ServeConfig,
};

use crate::engine::{Engine, EngineConfig};
use crate::graph::Results;
use crate::run::{channel_feed, start, Feed, Model};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("config {path}: {source}")]
    Config {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("API keys: {0}")]
    Auth(#[from] vidflow_connectors::auth::AuthError),
    #[error("engine: {0}")]
    Engine(#[from] crate::DataflowError),
    #[error("listen address {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC API: {0}")]
    Api(#[from] vidflow_connectors::grpc::ApiError),
    #[error("HTTP API: {0}")]
    Http(#[source] std::io::Error),
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("runtime: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("shared state: {0}")]
    State(#[from] vidflow_connectors::state::StateError),
    #[error("analytics sinks: {0}")]
    Sinks(#[from] vidflow_connectors::sinks::SinkError),
    #[error("broker TLS: {0}")]
    Tls(#[from] vidflow_connectors::amqp::TlsError),
}

/// A job this process holds unacked (keyed by (tenant, job id) in
/// [`InFlightMap`]): every delivery of its message (a redelivery while it
/// runs adds one; all are acked together).
pub(crate) struct InFlight {
    pub terms: JobTerms,
    pub ackers: Vec<Acker>,
    pub since: Instant,
}

/// Jobs stopped for running over their tier's timeout (to be handed back).
pub(crate) type TimedOut = Arc<Mutex<std::collections::HashSet<JobKey>>>;

pub(crate) type InFlightMap = Arc<Mutex<HashMap<JobKey, InFlight>>>;

/// What the session publishes.
pub(crate) enum Outbound {
    /// A progress/accepted event from the pipeline (terminal ones are
    /// dropped: the committer sends those once they are durable).
    Event(EventEnvelope),
    /// A job's terminal event, after its record was written: publish with a
    /// confirm, then ack the job's deliveries.
    Terminal(EventEnvelope),
}

/// Where the service listens, once it is up.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    pub grpc: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// Called once the service is up.
pub type OnReady = Box<dyn FnOnce(Ready) + Send>;

/// Runs the service until SIGTERM/SIGINT, then drains and returns.
pub fn run_serve(cfg: ServeConfig, on_ready: OnReady) -> Result<(), ServeError> {
    // TLS first: with a CA configured, nothing may reach the broker in
    // plaintext.
    cfg.amqp.apply_tls()?;
    let grpc_tls = match &cfg.grpc.tls {
        Some(t) => Some(t.read()?),
        None => None,
    };
    if cfg.http.enabled && cfg.http.largest_message() > cfg.amqp.max_message_bytes {
        return Err(ServeError::Config {
            path: "[http] max_body_bytes".into(),
            source: format!(
                "{} bytes of body can become a {}-byte job message (base64 of an image), \
                 over [amqp] max_message_bytes = {}: lower it to at most {}",
                cfg.http.max_body_bytes,
                cfg.http.largest_message(),
                cfg.amqp.max_message_bytes,
                cfg.amqp.max_message_bytes.saturating_sub(64 * 1024) / 4 * 3
            )
            .into(),
        });
    }
    let admission = cfg.admission()?;
    let keys = Arc::new(cfg.keys()?);
    let pricing = Arc::new(cfg.pricing()?);
    let quotas = Arc::new(QuotaBook::new(cfg.quotas()?));
    if cfg.grpc.enabled && keys.current().is_empty() && cfg.state.backend == Backend::Local {
        tracing::warn!("no API keys configured: every gRPC call will be UNAUTHENTICATED");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (out_tx, out_rx) = unbounded_channel::<Outbound>();
    let ev_tx = out_tx.clone();
    let events = EventSink::from_fn(Arc::new(move |e| {
        let _ = ev_tx.send(Outbound::Event(e));
    }));
    let store = Arc::new(
        OutputStore::open(&cfg.store, &cfg.engine.out_dir)
            .map_err(|e| ServeError::Engine(crate::DataflowError::Store(e)))?,
    );
    let engine = if cfg.engine.noop_model {
        None
    } else {
        Some(Engine::with_store(
            &EngineConfig {
                scheduling: cfg.scheduler.clone(),
                admission: admission.clone(),
                out_dir: cfg.engine.out_dir.clone(),
                max_batch: cfg.engine.max_batch.max(1),
                workers: cfg.engine.workers.max(1),
                checkpoint_every: cfg.engine.checkpoint_every,
                checkpoint_every_tier: cfg.engine.checkpoint_every_tier.clone(),
                safety: cfg.safety.to_config(),
            },
            events,
            store.clone(),
        )?)
    };
    let (intake, feed) = channel_feed();
    let (result_tx, result_rx) = unbounded_channel::<JobResult>();
    let graph = spawn_graph(
        engine.clone(),
        cfg.engine.workers.max(1),
        feed,
        commit::graph_results(result_tx.clone()),
    );
    let inflight: InFlightMap = Arc::new(Mutex::new(HashMap::new()));
    let timed_out: TimedOut = Arc::new(Mutex::new(Default::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let url = cfg.amqp.effective_url();
    let topo = cfg.amqp.topology();
    let node = cfg.state.node_name();
    let trust = Arc::new(vidflow_connectors::amqp::Trust {
        service_users: cfg.amqp.service_users.clone(),
        tenants: vidflow_connectors::amqp::Tenants::Keys(keys.clone()),
    });

    rt.block_on(async move {
        let shutdown = Arc::new(tokio::sync::Notify::new());
        {
            let (shutdown, stop) = (shutdown.clone(), stop.clone());
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutdown signal: draining");
                stop.store(true, Ordering::SeqCst);
                shutdown.notify_waiters();
                shutdown.notify_one();
            });
        }
        // Keys follow the key file: added, expired and revoked keys take
        // effect within a second, without a restart.
        tokio::spawn(keys.clone().watch(Duration::from_secs(1), stop.clone()));
        // Durable state first: the shared state's backend, this month's
        // delivered seconds for a local quota book, and analytics rows of
        // records the sinks lack (on a fleet, those this node's commit won).
        let state = match cfg.state.backend {
            Backend::Local => StateStore::local(store.clone(), quotas.clone()),
            Backend::Postgres => {
                let pg = Arc::new(
                    vidflow_connectors::state::postgres::Pg::connect(
                        &cfg.state,
                        Arc::new(quotas.config().clone()),
                    )
                    .await?,
                );
                let n = pg.forget_my_leases().await?;
                if n > 0 {
                    tracing::info!(leases = n, "dropped the leases of this node's previous run");
                }
                // The fleet's keys, and every change to them, within a second.
                keys.set_shared(pg.api_keys().await?)?;
                tokio::spawn(follow_shared_keys(pg.clone(), keys.clone(), stop.clone()));
                StateStore::Postgres(pg)
            }
        };
        tracing::info!(backend = ?state.backend(), node = %node, "shared state ready");
        let records = state.records_to_sink().await?;
        if state.backend() == Backend::Local {
            let month = month_of_ms(now_ms());
            for r in &records {
                if let Some(b) = r.charge() {
                    if month_of_ms(b.ts_ms) == month {
                        quotas.add_used(&r.tenant, &month, b.billed_ms);
                    }
                }
            }
        }
        let analytics = cfg.analytics_dir();
        let sink_cfg = cfg.sinks.clone();
        let (sink_node, local) = (node.clone(), state.backend() == Backend::Local);
        let mirror = cfg.sinks.store_prefix.clone().map(|prefix| {
            vidflow_connectors::sinks::PartMirror {
                store: store.clone(),
                prefix,
            }
        });
        let sinks = tokio::task::spawn_blocking(move || {
            // One node adopts any outbox it finds; a fleet's node only its own.
            let s = Sinks::open_mirrored(&analytics, sink_cfg, &sink_node, local, mirror)?;
            let n = s.recover(&records)?;
            if n > 0 {
                tracing::warn!(jobs = n, "re-derived analytics rows of jobs committed before a crash");
            }
            Ok::<_, vidflow_connectors::sinks::SinkError>(s)
        })
        .await??;
        {
            let sinks = sinks.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let s = sinks.clone();
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.flush_if_due()).await {
                        tracing::error!(error = %e, "rolling the analytics outbox failed");
                    }
                }
            });
        }
        let metrics = Arc::new(metrics::Metrics::default());
        let mut metrics_addr = None;
        if cfg.metrics.enabled {
            let l = tokio::net::TcpListener::bind(&cfg.metrics.listen)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: cfg.metrics.listen.clone(),
                    source,
                })?;
            metrics_addr = l.local_addr().ok();
            tokio::spawn(metrics::serve_metrics(l, metrics.clone(), stop.clone()));
            tokio::spawn(poll_gauges(
                Publisher::new(&url, "vidflow-metrics", topo.clone()),
                metrics.clone(),
                inflight.clone(),
                stop.clone(),
            ));
        }
        let committer = commit::Committer {
            timed_out: timed_out.clone(),
            engine: engine.clone(),
            checkpoints: engine.as_ref().and_then(|e| e.ctx.checkpoints.clone()),
            metrics: metrics.clone(),
            state: state.clone(),
            pricing: pricing.clone(),
            sinks: sinks.clone(),
            inflight: inflight.clone(),
            out: out_tx.clone(),
        };
        tokio::spawn(committer.run(result_rx));
        // The leases of the jobs running here stay ours while this process
        // lives: renewed at a third of their lifetime.
        tokio::spawn(heartbeat(
            state.clone(),
            inflight.clone(),
            cfg.state.lease_ttl(),
            stop.clone(),
        ));

        // The APIs: gRPC and HTTP over the same handlers and job table.
        let mut api_addr = None;
        let mut http_addr = None;
        let mut api_task = None;
        let mut http_task = None;
        if cfg.grpc.enabled || cfg.http.enabled {
            let table = Arc::new(JobTable::default());
            tokio::spawn(grpc::follow_events(
                url.clone(),
                topo.clone(),
                trust.clone(),
                table.clone(),
                stop.clone(),
            ));
            let jobs = Jobs::new(ApiDeps {
                keys: keys.clone(),
                admission: Arc::new(admission.clone()),
                state: state.clone(),
                publisher: Arc::new(Publisher::new(&url, "vidflow-api", topo.clone())),
                table,
                store: store.clone(),
            });
            let until_stop = |stop: Arc<AtomicBool>| async move {
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            if cfg.grpc.enabled {
                let listener = tokio::net::TcpListener::bind(&cfg.grpc.listen)
                    .await
                    .map_err(|source| ServeError::Listen {
                        addr: cfg.grpc.listen.clone(),
                        source,
                    })?;
                api_addr = listener.local_addr().ok();
                api_task = Some(tokio::spawn(grpc::serve_api(
                    listener,
                    jobs.clone(),
                    grpc_tls,
                    until_stop(stop.clone()),
                )));
            }
            if cfg.http.enabled {
                let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
                    .await
                    .map_err(|source| ServeError::Listen {
                        addr: cfg.http.listen.clone(),
                        source,
                    })?;
                http_addr = listener.local_addr().ok();
                let opts = vidflow_connectors::http::HttpOptions {
                    max_body_bytes: cfg.http.max_body_bytes,
                };
                http_task = Some(tokio::spawn(vidflow_connectors::http::serve_http(
                    listener,
                    jobs,
                    opts,
                    until_stop(stop.clone()),
                )));
            }
        }

        let sess = session::Session {
            me: vidflow_connectors::amqp::url_user(&url),
            trust,
            url,
            topo,
            prefetch: cfg.prefetch(),
            max_message_bytes: cfg.amqp.max_message_bytes,
            admission: Arc::new(admission),
            state,
            metrics,
            results: result_tx,
            max_attempts: cfg.engine.max_attempts,
            timeouts: cfg.engine.timeouts.clone(),
            timed_out,
            engine,
            inflight,
            intake,
            out_tx,
            stop: stop.clone(),
            shutdown,
            drain: Duration::from_secs_f64(cfg.engine.drain_timeout_s.max(0.0)),
        };
        sess.run(
            out_rx,
            Some(Box::new(move || {
                on_ready(Ready {
                    grpc: api_addr,
                    http: http_addr,
                    metrics: metrics_addr,
                })
            })),
        )
            .await;
        stop.store(true, Ordering::SeqCst);
        let s = sinks.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.flush()).await {
            tracing::error!(error = %e, "final analytics roll failed (the outbox is rolled at next start)");
        }
        if let Some(t) = http_task {
            if let Ok(Err(e)) = t.await {
                return Err(ServeError::Http(e));
            }
        }
        if let Some(t) = api_task {
            if let Ok(Err(e)) = t.await {
                return Err(ServeError::Api(e));
            }
        }
        Ok(())
    })?;
    // The graph thread may still hold jobs that missed the drain deadline;
    // their messages went back to the broker with the connection.
    drop(graph);
    Ok(())
}

/// Reloads the fleet's API keys from the database every second (a
/// database error keeps the keys the node has).
async fn follow_shared_keys(
    pg: Arc<vidflow_connectors::state::postgres::Pg>,
    keys: Arc<vidflow_connectors::auth::KeyRing>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match pg.api_keys().await.map(|k| keys.set_shared(k)) {
            Ok(Ok(true)) => tracing::info!(
                keys = keys.current().len(),
                "API keys reloaded from the database"
            ),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "shared keys refused: keeping the previous keys")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the shared keys: keeping the previous keys")
            }
        }
    }
}

/// Renews the leases of the jobs in flight here (and so their quota
/// reservations) until the service stops. Nothing to do on the local
/// backend.
async fn heartbeat(state: StateStore, inflight: InFlightMap, ttl: Duration, stop: Arc<AtomicBool>) {
    if state.backend() == Backend::Local {
        return;
    }
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(ttl / 3).await;
        let keys: Vec<JobKey> = inflight
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        if let Err(e) = state.heartbeat(&keys).await {
            tracing::warn!(error = %e, jobs = keys.len(), "lease heartbeat failed");
        }
    }
}

/// Queue depths and the in-flight gauge, every 2 s.
async fn poll_gauges(
    publisher: Publisher,
    m: Arc<metrics::Metrics>,
    inflight: InFlightMap,
    stop: Arc<AtomicBool>,
) {
    use vidflow_connectors::lapin::options::QueueDeclareOptions;
    use vidflow_connectors::lapin::types::FieldTable;
    while !stop.load(Ordering::SeqCst) {
        m.set_in_flight(inflight.lock().map(|g| g.len()).unwrap_or(0));
        if let Ok(ch) = publisher.channel().await {
            let topo = publisher.topology().clone();
            for q in [&topo.jobs, &topo.dead] {
                let opts = QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                if let Ok(d) = ch
                    .queue_declare(q.as_str().into(), opts, FieldTable::default())
                    .await
                {
                    m.set_queue(q, d.message_count() as i64);
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the graph on its own threads: worker 0 feeds the jobs the session
/// validated (the exchange spreads them); every result goes to `results`.
fn spawn_graph(
    engine: Option<Arc<Engine>>,
    workers: usize,
    feed: Feed,
    results: Results,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("vidflow-graph".into())
        .spawn(move || {
            let model = match engine {
                Some(e) => Model::Engine(e),
                None => Model::Noop,
            };
            if let Err(e) = start(timely::Config::process(workers), model, feed, results) {
                tracing::error!(error = %e, "the graph failed to start");
            }
        })
        .expect("spawning the graph thread")
}

/// The terminal event a record announces.
pub(crate) fn terminal_event(r: &JobRecord, replay: bool) -> EventEnvelope {
    let event = match r.status {
        JobStatus::Completed => JobEvent::Completed {
            job_id: r.job_id.clone(),
            key: r.key.clone().unwrap_or_default(),
            size: r.size.unwrap_or(0),
            sha256: r.sha256.clone().unwrap_or_default(),
            untrained: r.untrained,
        },
        JobStatus::Cancelled => JobEvent::Cancelled {
            job_id: r.job_id.clone(),
            step: r.cancelled_at.unwrap_or(0),
        },
        JobStatus::Failed => JobEvent::Failed {
            job_id: r.job_id.clone(),
            stage: r.stage.unwrap_or(vidflow_operators::event::Stage::Admit),
            error: r.error.clone().unwrap_or_default(),
        },
    };
    EventEnvelope {
        tenant: r.tenant.clone(),
        ts_ms: now_ms(),
        replay,
        event,
    }
}
