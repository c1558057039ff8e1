//! Billing, metering and quotas through the real `vidflow serve` and
//! RabbitMQ; the billing Parquet read back with DuckDB and pyarrow
//! (scripts/setup-python.sh) and with `vidflow report billing`.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use support::*;
use vidflow_connectors::amqp;
use vidflow_operators::billing::Pricing;
use vidflow_operators::event::JobEvent;
use vidflow_operators::{JobSpec, Tier};

fn python() -> String {
    let p = std::env::var("VIDFLOW_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv-test/bin/python").into());
    assert!(
        std::path::Path::new(&p).exists(),
        "no Python with duckdb/pyarrow at {p}: run `bash scripts/setup-python.sh` (scripts/test.sh does)"
    );
    p
}

fn read_with_python(root: &std::path::Path) -> serde_json::Value {
    let o = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/read_billing.py"
        ))
        .arg(root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn report(root: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_vidflow"))
        .args(["report", "billing", "--json", "--dir"])
        .arg(root)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// µ$ as the decimal string DuckDB prints for DECIMAL(18,6) sums.
fn usd(micro: i64) -> String {
    vidflow_operators::billing::format_usd(micro)
}

/// GET /metrics over a plain TCP connection.
fn scrape(url: &str) -> String {
    use std::io::{Read, Write};
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

fn terminal_for(
    all: &[(std::time::Instant, vidflow_operators::event::EventEnvelope)],
    ids: &[String],
) -> bool {
    ids.iter().all(|id| {
        all.iter()
            .any(|(_, e)| e.event.is_terminal() && e.event.job_id() == id)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_jobs_are_billed_exactly_and_read_back_by_duckdb_and_pyarrow() {
    let setup = Setup::new("billing30", "max_batch = 4");
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let serve = setup.start("serve");
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let tiers = ["premium", "standard", "free"];
    let sizes = [("256x256", 9), ("1280x704", 1), ("1920x1088", 1)];
    let mut specs: Vec<JobSpec> = Vec::new();
    for i in 0..30 {
        let (res, frames) = sizes[(i / 3) % 3];
        specs.push(spec(
            &format!("bill-{i:02}"),
            "acme",
            tiers[i % 3],
            res,
            frames,
            1,
        ));
    }
    // One job that fails after admission (its first frame does not exist):
    // nothing delivered, so no ledger row at all.
    let mut bad = JobSpec::from_json(
        r#"{"job_id":"bill-fail","tenant":"acme","tier":"standard","kind":"i2v","prompt":"x",
            "image":{"key":"acme/nowhere/first.png"},"resolution":"256x256","frames":9,"steps":1}"#,
    )
    .unwrap();
    bad.mode = vidflow_operators::Mode::Realtime;
    specs.push(bad);
    for s in &specs {
        amqp::publish_job(&ch, &topo, s, &amqp_user())
            .await
            .unwrap();
    }
    let ids: Vec<String> = specs.iter().map(|s| s.job_id.clone().unwrap()).collect();
    let want = ids.clone();
    events
        .until(Duration::from_secs(600), "31 finished jobs", move |all| {
            terminal_for(all, &want)
        })
        .await;
    // The Prometheus endpoint counts the same jobs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = scrape(serve.metrics.as_deref().expect("metrics address"));
    for want in [
        "vidflow_jobs_total{status=\"completed\"} 30",
        "vidflow_jobs_total{status=\"failed\"} 1",
        "vidflow_stage_seconds_count{stage=\"denoise\"} 30",
        "vidflow_stage_seconds_bucket{stage=\"output\",le=\"+Inf\"} 30",
        &format!("vidflow_queue_ready_messages{{queue=\"{}\"}}", topo.jobs),
        "vidflow_accelerator_busy_seconds_total ",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    serve.terminate();
    assert_eq!(
        events.count(|e| matches!(e, JobEvent::Completed { .. })),
        30
    );
    assert_eq!(events.count(|e| matches!(e, JobEvent::Failed { .. })), 1);

    // What each job must cost: price x delivered seconds, exactly.
    let pricing = Pricing::builtin();
    let mut expect: HashMap<String, i64> = HashMap::new();
    for s in &specs[..30] {
        let (w, h) = vidflow_operators::validate::parse_resolution(&s.resolution).unwrap();
        let tier = s.tier;
        let c = pricing.charge(tier, w, h, s.frames.unwrap(), 24.0, false);
        expect.insert(s.job_id.clone().unwrap(), c.amount_micro);
    }
    let total: i64 = expect.values().sum();
    assert!(total > 0);
    assert!(expect.len() == 30 && specs.iter().any(|s| s.tier == Tier::Free));

    let root = setup.out.join("analytics");
    let py = read_with_python(&root);
    assert_eq!(py["duckdb_rows"], 30, "{py}");
    assert_eq!(py["pyarrow_rows"], 30, "{py}");
    let charged: Vec<String> = serde_json::from_value(py["duckdb_charges"].clone()).unwrap();
    let mut want_ids: Vec<String> = ids[..30].to_vec();
    want_ids.sort();
    assert_eq!(charged, want_ids, "one charge per completed job");
    assert_eq!(py["duckdb_other_kinds"], serde_json::json!([]));
    assert_eq!(
        py["mismatch"],
        serde_json::json!([]),
        "amount != price x seconds"
    );
    assert_eq!(py["duckdb_sum_charges"].as_str().unwrap(), usd(total));
    assert_eq!(py["pyarrow_sum_charges"].as_str().unwrap(), usd(total));
    assert_eq!(py["duckdb_sum_all"].as_str().unwrap(), usd(total));
    assert!(
        py["pyarrow_columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "date"),
        "{py}"
    );

    // The report's sums are the same numbers.
    let r = report(&root, &[]);
    assert_eq!(r["total"]["revenue_micro"], total);
    assert_eq!(r["total"]["jobs_charged"], 30);
    let by_group: i64 = r["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["totals"]["revenue_micro"].as_i64().unwrap())
        .sum();
    assert_eq!(by_group, total);
    let other = report(&root, &["--tenant", "globex"]);
    assert_eq!(other["total"]["jobs_charged"], 0);

    // Metrics and jobs datasets exist with one row per job.
    let count = |ds: &str| {
        let o = Command::new(python())
            .args(["-c", &format!(
                "import duckdb; print(duckdb.sql(\"select count(*), count(distinct job_id) from read_parquet('{}/{ds}/**/*.parquet', hive_partitioning=true)\").fetchone())",
                root.display()
            )])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(count("metrics"), "(31, 31)");
    assert_eq!(count("jobs"), "(31, 31)");
    cleanup(&ch, &topo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_delivered_three_times_is_charged_once() {
    let setup = Setup::new("billing3x", "max_batch = 2");
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let job = spec("thrice", "acme", "premium", "256x256", 9, 2);

    // 1: the process dies (abort, like SIGKILL) after the job's commit
    // (output, record, ledger) and before its ack.
    // The fault goes to this child only: the other tests of this binary
    // start their own servers concurrently.
    let mut first = setup.start_with_env("serve-1", &[("VIDFLOW_FAULT", "after_commit")]);
    amqp::publish_job(&ch, &topo, &job, &amqp_user())
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    while first.child.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the fault never fired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        first.log_text().contains("VIDFLOW_FAULT"),
        "{}",
        first.log_text()
    );
    drop(first);

    // 2: a fresh process gets the redelivery: the record exists, so the
    // result is re-published and nothing is generated or charged again.
    let second = setup.start("serve-2");
    events
        .until(Duration::from_secs(60), "the replayed completion", |all| {
            all.iter()
                .any(|(_, e)| e.replay && matches!(e.event, JobEvent::Completed { .. }))
        })
        .await;
    // 3: the same job published again.
    amqp::publish_job(&ch, &topo, &job, &amqp_user())
        .await
        .unwrap();
    events
        .until(Duration::from_secs(60), "the second replay", |all| {
            all.iter()
                .filter(|(_, e)| e.replay && matches!(e.event, JobEvent::Completed { .. }))
                .count()
                >= 2
        })
        .await;
    second.terminate();
    assert_eq!(
        events.count(|e| matches!(e, JobEvent::Accepted { .. })),
        1,
        "generated once"
    );
    let py = read_with_python(&setup.out.join("analytics"));
    assert_eq!(py["duckdb_charges"], serde_json::json!(["thrice"]), "{py}");
    assert_eq!(py["duckdb_rows"], 1, "{py}");
    assert_eq!(setup.outputs().len(), 1);
    assert_eq!(wait_empty(&ch, &topo.jobs).await, 0);
    cleanup(&ch, &topo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_cap_concurrency_and_monthly_seconds() {
    let qdir = tempfile::tempdir().unwrap();
    let quotas = qdir.path().join("quotas.toml");
    std::fs::write(
        &quotas,
        "[default]\nmax_concurrent = 100\nmonthly_video_seconds = 100000.0\nmax_resolution = \"4k\"\n\
         tiers = [\"premium\", \"standard\", \"free\"]\n\n\
         [tenant.tenten]\nmax_concurrent = 10\n\n[tenant.month3]\nmonthly_video_seconds = 3.0\n",
    )
    .unwrap();
    let setup = Setup::new(
        "quota",
        &format!(
            "max_batch = 4\n\n[billing]\nquotas = \"{}\"\n",
            quotas.display()
        ),
    );
    // Hold up to 120 messages, so the quota (not the prefetch) is the limit.
    let cfg = std::fs::read_to_string(&setup.config).unwrap().replacen(
        "[amqp]\n",
        "[amqp]\nprefetch = 120\n",
        1,
    );
    std::fs::write(&setup.config, cfg).unwrap();
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let serve = setup.start("serve");
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();

    // 100 submits at once for a tenant limited to 10 concurrent jobs.
    let ids: Vec<String> = (0..100).map(|i| format!("c-{i:03}")).collect();
    let mut pubs = Vec::new();
    for id in &ids {
        let (ch, topo) = (ch.clone(), topo.clone());
        let s = spec(id, "tenten", "standard", "256x256", 9, 4);
        pubs.push(tokio::spawn(async move {
            amqp::publish_job(&ch, &topo, &s, &amqp_user()).await
        }));
    }
    for p in pubs {
        p.await.unwrap().unwrap();
    }
    let want = ids.clone();
    events
        .until(Duration::from_secs(600), "all 100 answered", move |all| {
            terminal_for(all, &want)
        })
        .await;
    // Running = from `accepted` to the terminal event, in event order.
    let (mut running, mut max_running) = (0i32, 0i32);
    let mut started = std::collections::HashSet::new();
    let mut rejected = Vec::new();
    for (_, e) in &events.all {
        match &e.event {
            JobEvent::Accepted { job_id } => {
                started.insert(job_id.clone());
                running += 1;
                max_running = max_running.max(running);
            }
            JobEvent::Completed { job_id, .. } | JobEvent::Failed { job_id, .. }
                if started.contains(job_id) =>
            {
                running -= 1;
            }
            JobEvent::Rejected { field, error, .. } => {
                rejected.push((field.clone(), error.clone()))
            }
            _ => {}
        }
    }
    eprintln!(
        "quota: max running {max_running}, admitted {}, refused {}",
        started.len(),
        rejected.len()
    );
    assert!(max_running <= 10, "{max_running} running at once");
    assert_eq!(
        max_running, 10,
        "the limit was never reached: the test proves nothing"
    );
    assert_eq!(started.len() + rejected.len(), 100);
    assert!(
        rejected
            .iter()
            .all(|(f, e)| f == "quota"
                && e.contains("concurrent jobs limit 10 reached (current 10)")),
        "{rejected:?}"
    );

    // Monthly seconds: 9 frames at 24 fps bill 375 ms; 3.0 s admits 8.
    let mut done = Vec::new();
    for i in 0..10 {
        let id = format!("m-{i}");
        amqp::publish_job(
            &ch,
            &topo,
            &spec(&id, "month3", "standard", "256x256", 9, 1),
            &amqp_user(),
        )
        .await
        .unwrap();
        let want = vec![id.clone()];
        events
            .until(Duration::from_secs(60), "the job's answer", move |all| {
                terminal_for(all, &want)
            })
            .await;
        done.push(id);
    }
    let outcome = |id: &str| {
        events
            .all
            .iter()
            .find(|(_, e)| e.event.is_terminal() && e.event.job_id() == id)
            .map(|(_, e)| e.event.clone())
            .unwrap()
    };
    for (i, id) in done.iter().enumerate() {
        let ev = outcome(id);
        if i < 8 {
            assert!(matches!(ev, JobEvent::Completed { .. }), "{id}: {ev:?}");
        } else {
            match ev {
                JobEvent::Rejected { field, error, .. } => {
                    assert_eq!(field, "quota");
                    // The eighth job's slot turns from reserved into used
                    // once serve sees the broker confirm its terminal event,
                    // which can be just after this client saw the event:
                    // what is refused is the sum, 3.000 s either way.
                    let secs = |key: &str| -> f64 {
                        error
                            .split(key)
                            .nth(1)
                            .and_then(|r| r.split(" s").next())
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(f64::NAN)
                    };
                    assert!(
                        error.contains("monthly video seconds limit 3.000 s")
                            && (secs("used ") + secs("reserved ") - 3.0).abs() < 1e-9,
                        "{error}"
                    );
                }
                other => panic!("{id}: {other:?}"),
            }
        }
    }
    serve.terminate();
    cleanup(&ch, &topo).await;
}
