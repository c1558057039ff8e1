//! Intake benchmark: jobs/s from RabbitMQ through `vidflow serve`'s
//! intake (decode, validate, idempotency check, graph, record write,
//! confirmed terminal event, ack) with the model stages replaced by a no-op,
//! next to the raw lapin consume+ack rate of the same messages on the same
//! broker with the same prefetch, in the same run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::StreamExt;
use vidflow_connectors::amqp::{self, Topology};
use vidflow_connectors::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeleteOptions,
};
use vidflow_connectors::lapin::types::FieldTable;
use vidflow_dataflow::serve::{run_serve, ServeConfig};
use vidflow_operators::event::{EventEnvelope, JobEvent};
use vidflow_operators::JobSpec;

fn job(i: usize) -> JobSpec {
    JobSpec::from_json(&format!(
        r#"{{"job_id":"bench-{i:06}","tenant":"bench","tier":"standard","kind":"t2v",
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
pub fn run(url: &str, n: usize) -> Result<serde_json::Value> {
    let mut out = Vec::new();
    for prefetch in [0u16, 64] {
        out.push(run_one(url, n, prefetch)?);
    }
    Ok(serde_json::Value::Array(out))
}

fn run_one(url: &str, n: usize, prefetch: u16) -> Result<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let prefix = format!("bench-serve-{}-{prefetch}", std::process::id());
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
    eprintln!("prefetch {prefetch}: vidflow serve intake (no-op model): {serve_rate:.0} jobs/s");
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
        "prefetch": prefetch,
        "publish_confirmed_msgs_per_s": publish_rate,
        "raw_lapin_consume_ack_msgs_per_s": raw_rate,
        "vidflow_serve_noop_jobs_per_s": serve_rate,
        "ratio_vidflow_over_raw": serve_rate / raw_rate,
    }))
}
