//! Intake benchmark: jobs/s from RabbitMQ through `vidflow serve`'s
//! intake (decode, validate, idempotency check, graph, record write,
//! confirmed terminal event, ack) with the model stages replaced by a no-op,
//! next to the raw lapin consume+ack rate of the same messages on the same
//! broker with the same prefetch, in the same run; with the state on local
//! files and, given a database, in PostgreSQL (a fresh database per run).
//! Also the commit alone: record + ledger row, many in flight, p50/p95.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::StreamExt;
use vidflow_connectors::amqp::{self, Topology};
use vidflow_connectors::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeleteOptions,
};
use vidflow_connectors::lapin::types::FieldTable;
use vidflow_connectors::state::Backend;
use vidflow_dataflow::serve::{run_serve, ServeConfig};
use vidflow_operators::event::{EventEnvelope, JobEvent};
use vidflow_operators::JobSpec;

/// Tenants the benchmark jobs are spread over (`--tenants`; one by
/// default: every admission then waits on that tenant's quota lock).
static TENANTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

fn job(i: usize) -> JobSpec {
    let t = match TENANTS.load(std::sync::atomic::Ordering::Relaxed) {
        0 | 1 => "bench".to_string(),
        n => format!("bench{}", i % n),
    };
    JobSpec::from_json(&format!(
        r#"{{"job_id":"bench-{i:06}","tenant":"{t}","tier":"standard","kind":"t2v",
            "prompt":"benchmark job {i}","resolution":"480p","seconds":5.0}}"#
    ))
    .expect("bench spec")
}

async fn publish_all(
    ch: &vidflow_connectors::lapin::Channel,
    topo: &Topology,
    n: usize,
    user: &str,
) -> Result<f64> {
    let t0 = Instant::now();
    // Confirmed in windows of 256 so publishing is not one round trip per
    // message, yet every message is confirmed before consuming starts.
    let mut pending = Vec::new();
    for i in 0..n {
        let s = job(i);
        let body = serde_json::to_vec(&s)?;
        let props = vidflow_connectors::lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(amqp::JSON.into())
            .with_priority(amqp::tier_priority(s.tier))
            // The service believes only proven publishers (docs/SECURITY.md).
            .with_user_id(user.into());
        pending.push(
            ch.basic_publish(
                "".into(),
                topo.jobs.as_str().into(),
                Default::default(),
                &body,
                props,
            )
            .await?,
        );
        if pending.len() == 256 || i + 1 == n {
            for c in pending.drain(..) {
                if !c.await?.is_ack() {
                    bail!("broker nacked a benchmark message");
                }
            }
        }
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// Raw lapin: consume and ack `n` messages with `prefetch`.
async fn raw(url: &str, n: usize, prefetch: u16) -> Result<f64> {
    let conn = amqp::connect(url, "vidflow-bench-raw").await?;
    let ch = amqp::confirm_channel(&conn).await?;
    let topo = Topology::new(&format!("bench-raw-{}-{prefetch}", std::process::id()));
    topo.declare(&ch).await?;
    publish_all(&ch, &topo, n, &amqp::url_user(url)).await?;
    let cons = conn.create_channel().await?;
    cons.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = cons
        .basic_consume(
            topo.jobs.as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let t0 = Instant::now();
    let mut got = 0;
    while got < n {
        let Some(d) = consumer.next().await else {
            bail!("consumer ended")
        };
        let d = d?;
        // Parse like the service does, so both sides do the same reading.
        let _spec = amqp::decode_job(&d.data, Some(amqp::JSON), 1 << 20);
        d.acker.ack(BasicAckOptions::default()).await?;
        got += 1;
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    for q in [&topo.jobs, &topo.dead] {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    Ok(rate)
}

/// Both measurements at the service's default prefetch (batch + 2, what
/// `vidflow serve` runs with) and at 64 (intake capacity when many small
/// jobs are in flight).
pub fn run(url: &str, n: usize, db: Option<&str>, tenants: usize) -> Result<serde_json::Value> {
    TENANTS.store(tenants, std::sync::atomic::Ordering::Relaxed);
    eprintln!("jobs spread over {} tenant(s)", tenants.max(1));
    let mut out = Vec::new();
    for prefetch in [0u16, 64] {
        for backend in [Some(Backend::Local), db.map(|_| Backend::Postgres)]
            .into_iter()
            .flatten()
        {
            out.push(run_one(url, n, prefetch, backend, db)?);
        }
    }
    let mut commits = vec![commit_latency(n, None)?];
    if let Some(db) = db {
        commits.push(commit_latency(n, Some(db))?);
    }
    Ok(serde_json::json!({ "intake": out, "commit": commits }))
}

/// A fresh database next to `admin` (a database URL); returns its URL.
async fn fresh_db(admin: &str, tag: &str) -> Result<String> {
    let db = format!("bench_{tag}_{}", std::process::id());
    Ok(vidflow_connectors::state::postgres::create_database(admin, &db).await?)
}

/// `n` job records committed with up to 64 in flight (as the committer
/// does): commits/s and each commit's latency (p50, p95), local files on
/// disk or PostgreSQL.
fn commit_latency(n: usize, db: Option<&str>) -> Result<serde_json::Value> {
    use vidflow_connectors::state::{StateConfig, StateStore};
    use vidflow_operators::ledger::{JobRecord, JobTerms, Machine};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let quotas = vidflow_operators::quota::QuotaConfig::builtin();
    let state = rt.block_on(async {
        anyhow::Ok(match db {
            None => StateStore::local(
                Arc::new(vidflow_connectors::store::OutputStore::local(dir.path())?),
                Arc::new(vidflow_operators::quota::QuotaBook::new(quotas)),
            ),
            Some(admin) => {
                let cfg = StateConfig {
                    backend: Backend::Postgres,
                    url: fresh_db(admin, "commit").await?,
                    pool_size: 16,
                    node: "bench".into(),
                    ..Default::default()
                };
                StateStore::Postgres(Arc::new(
                    vidflow_connectors::state::postgres::Pg::connect(&cfg, Arc::new(quotas))
                        .await?,
                ))
            }
        })
    })?;
    let pricing = vidflow_operators::billing::Pricing::builtin();
    let records: Vec<JobRecord> = (0..n)
        .map(|i| {
            let v = vidflow_operators::validate(
                &job(i),
                &vidflow_operators::AdmissionConfig::builtin_tiny(),
            )
            .expect("bench spec is valid");
            let terms = JobTerms {
                tier: v.tier,
                kind: v.kind,
                width: v.width,
                height: v.height,
                frames: v.num_frames,
                fps: v.fps,
                audio: false,
                submitted_ms: 1,
                admitted_ms: 2,
                est_vram_bytes: v.estimated_vram_bytes,
            };
            let r = vidflow_operators::JobResult::noop(v.job_id.clone(), v.tenant.clone());
            JobRecord::commit(
                &r,
                &terms,
                &pricing,
                Machine {
                    now_ms: 3,
                    peak_rss_bytes: 0,
                },
                format!("c{i}"),
            )
        })
        .collect();
    let (rate, mut lat) = rt.block_on(async {
        let slots = Arc::new(tokio::sync::Semaphore::new(64));
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for r in records {
            let permit = slots.clone().acquire_owned().await?;
            let s = state.clone();
            tasks.push(tokio::spawn(async move {
                let _p = permit;
                let t = Instant::now();
                s.commit_record(&r).await.map(|_| t.elapsed().as_secs_f64())
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.push(t.await??);
        }
        anyhow::Ok((n as f64 / t0.elapsed().as_secs_f64(), lat))
    })?;
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize] * 1000.0;
    let backend = if db.is_some() {
        "postgres"
    } else {
        "local (disk)"
    };
    eprintln!(
        "commit {backend}: {rate:.0} commits/s, p50 {:.2} ms, p95 {:.2} ms (64 in flight)",
        q(0.5),
        q(0.95)
    );
    Ok(serde_json::json!({
        "backend": backend,
        "commits": n,
        "commits_per_s": rate,
        "p50_ms": q(0.5),
        "p95_ms": q(0.95),
    }))
}

fn run_one(
    url: &str,
    n: usize,
    prefetch: u16,
    backend: Backend,
    db: Option<&str>,
) -> Result<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let prefix = format!("bench-serve-{}-{prefetch}-{backend:?}", std::process::id());
    let mut cfg = ServeConfig::default();
    cfg.amqp.url = url.to_string();
    cfg.amqp.prefix = prefix.clone();
    cfg.grpc.enabled = false;
    cfg.metrics.enabled = false;
    let out = tempfile::tempdir()?;
    cfg.engine.out_dir = out.path().to_path_buf();
    cfg.engine.noop_model = true;
    // Quotas must not be what limits the benchmark.
    let quotas = out.path().join("quotas.toml");
    std::fs::write(
        &quotas,
        "[default]\nmax_concurrent = 1000000\nmonthly_video_seconds = 1e12\n\
         max_resolution = \"4k\"\ntiers = [\"premium\", \"standard\", \"free\"]\n",
    )?;
    cfg.billing.quotas = Some(quotas);
    cfg.amqp.prefetch = prefetch;
    if backend == Backend::Postgres {
        cfg.state.backend = Backend::Postgres;
        cfg.state.url = rt.block_on(fresh_db(
            db.unwrap_or_default(),
            &format!("intake{prefetch}"),
        ))?;
        cfg.state.node = "bench".into();
    }
    let prefetch = cfg.prefetch();
    let topo = cfg.amqp.topology();

    let raw_rate = rt.block_on(raw(url, n, prefetch))?;
    eprintln!("prefetch {prefetch}: raw lapin consume+ack: {raw_rate:.0} msg/s");

    // Preload the intake queue, follow events, then start the service.
    let (conn, publish_rate, mut events) = rt.block_on(async {
        let conn = amqp::connect(url, "vidflow-bench").await?;
        let ch = amqp::confirm_channel(&conn).await?;
        topo.declare(&ch).await?;
        let q = topo.bind_events(&ch, "job.#").await?;
        let events = amqp::consume_auto_ack(&ch, &q, "bench-events").await?;
        let rate = publish_all(&ch, &topo, n, &amqp::url_user(url)).await?;
        anyhow::Ok((conn, rate, events))
    })?;
    let ready: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    {
        let ready = ready.clone();
        std::thread::spawn(move || {
            let r = run_serve(
                cfg,
                Box::new(move |_| {
                    *ready.lock().unwrap() = Some(Instant::now());
                }),
            );
            if let Err(e) = r {
                eprintln!("serve failed: {e}");
            }
        });
    }
    let done_at = rt.block_on(async {
        let mut done = 0;
        while done < n {
            let d = tokio::time::timeout(Duration::from_secs(120), events.next()).await;
            let Ok(Some(Ok(d))) = d else {
                bail!("events stalled after {done} of {n} jobs")
            };
            let env: EventEnvelope = serde_json::from_slice(&d.data)?;
            if matches!(env.event, JobEvent::Completed { .. }) {
                done += 1;
            }
        }
        anyhow::Ok(Instant::now())
    })?;
    let t0 = ready.lock().unwrap().expect("serve reported ready");
    let serve_rate = n as f64 / (done_at - t0).as_secs_f64();
    eprintln!("prefetch {prefetch}: vidflow serve intake (no-op model, {backend:?} state): {serve_rate:.0} jobs/s");
    rt.block_on(async {
        let ch = conn.create_channel().await?;
        for q in [&topo.jobs, &topo.dead] {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        anyhow::Ok(())
    })?;
    Ok(serde_json::json!({
        "jobs": n,
        "tenants": TENANTS.load(std::sync::atomic::Ordering::Relaxed).max(1),
        "prefetch": prefetch,
        "state": format!("{backend:?}").to_lowercase(),
        "publish_confirmed_msgs_per_s": publish_rate,
        "raw_lapin_consume_ack_msgs_per_s": raw_rate,
        "vidflow_serve_noop_jobs_per_s": serve_rate,
        "ratio_vidflow_over_raw": serve_rate / raw_rate,
    }))
}
