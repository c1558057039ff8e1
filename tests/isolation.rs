//! Tenants kept apart and resources bounded (real RabbitMQ, real `vidflow
//! serve`): per-job state keyed by (tenant, job id), safety decisions bound
//! to their prompt, memory checked before it is spent, money that adds up,
//! retries that are not the job's fault. Boundaries of docs/SECURITY.md;
//! `tests/security.rs` has who may publish, keys and TLS.

mod support;

use std::time::Duration;

use support::attack::*;
use support::*;
use vidflow_connectors::amqp;
use vidflow_connectors::grpc::pb::job_service_client::JobServiceClient;
use vidflow_connectors::grpc::pb::JobRef;
use vidflow_connectors::lapin::options::QueuePurgeOptions;
use vidflow_operators::event::JobEvent;
use vidflow_operators::JobSpec;

/// Two tenants with the same job ids: a cancel, the in-flight map and the
/// analytics de-duplication all go by (tenant, job id); an i2v key outside
/// the tenant's own prefix is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_job_state_is_keyed_by_tenant_and_job_id() {
    let setup = Setup::new("scoped", "max_batch = 2");
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let serve = setup.start("serve");
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let mut api = JobServiceClient::connect(serve.grpc.clone().unwrap())
        .await
        .unwrap();

    // globex runs and cancels its own order-1.
    publish(
        &ch,
        &topo,
        &spec("order-1", "globex", "standard", "256x256", 9, 60),
    )
    .await;
    until_running(&mut events, "globex", "order-1").await;
    api.cancel(req(
        JobRef {
            job_id: "order-1".into(),
        },
        KEY_B,
    ))
    .await
    .unwrap();
    events
        .until(Duration::from_secs(60), "globex order-1 cancelled", |all| {
            terminal_of(all, "globex", "order-1").is_some()
        })
        .await;
    assert!(matches!(
        terminal_of(&events.all, "globex", "order-1"),
        Some(JobEvent::Cancelled { .. })
    ));
    // acme's order-1 is another job: it is not cancelled by globex's cancel.
    publish(
        &ch,
        &topo,
        &spec("order-1", "acme", "standard", "256x256", 9, 2),
    )
    .await;
    // acme runs probe-1; globex sends its own probe-1 meanwhile: it is not
    // told "in use" (which would reveal acme's running ids), it runs.
    publish(
        &ch,
        &topo,
        &spec("probe-1", "acme", "standard", "256x256", 9, 30),
    )
    .await;
    until_running(&mut events, "acme", "probe-1").await;
    publish(
        &ch,
        &topo,
        &spec("probe-1", "globex", "standard", "256x256", 9, 2),
    )
    .await;
    // i2v keys outside the tenant's prefix: another tenant's input, a record.
    for (id, key) in [
        ("steal-1", "globex/inputs/first.png"),
        ("steal-2", "jobs/globex/probe-1.json"),
    ] {
        let s = JobSpec::from_json(&format!(
            r#"{{"job_id":"{id}","tenant":"acme","tier":"standard","kind":"i2v","prompt":"x",
                "image":{{"key":"{key}"}},"resolution":"256x256","frames":9,"steps":2,"mode":"realtime"}}"#
        ))
        .unwrap();
        publish(&ch, &topo, &s).await;
    }
    events
        .until(Duration::from_secs(180), "every job answered", |all| {
            [
                ("acme", "order-1"),
                ("acme", "probe-1"),
                ("globex", "probe-1"),
                ("acme", "steal-1"),
                ("acme", "steal-2"),
            ]
            .iter()
            .all(|(t, id)| terminal_of(all, t, id).is_some())
        })
        .await;
    for (t, id) in [
        ("acme", "order-1"),
        ("acme", "probe-1"),
        ("globex", "probe-1"),
    ] {
        let e = terminal_of(&events.all, t, id).unwrap();
        assert!(is_completed(e), "{t}/{id}: {e:?}");
    }
    for id in ["steal-1", "steal-2"] {
        match terminal_of(&events.all, "acme", id) {
            Some(JobEvent::Rejected { field, error, .. }) => {
                assert_eq!(field, "image");
                assert!(error.contains("tenant's own prefix `acme/`"), "{error}");
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    serve.terminate();
    // Both tenants' probe-1 are in the billing Parquet (one row each).
    let rows = duck(
        &setup.out.join("analytics"),
        "billing",
        "tenant, job_id",
        "tenant, job_id",
    );
    assert_eq!(
        rows,
        serde_json::json!([
            ["acme", "order-1"],
            ["acme", "probe-1"],
            ["globex", "probe-1"]
        ])
    );
    cleanup(&ch, &topo).await;
}

/// A prompt-safety "allow" is bound to the prompt it was given for: the
/// same (tenant, job id) coming back with another prompt is checked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_safety_decision_is_not_reused_for_another_prompt() {
    let setup = Setup::new("safereuse", "max_batch = 1");
    let topo = setup.topo();
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    // 1: a harmless prompt passes the prompt check (recorded), then the
    //    process dies in decode, before any record of the job.
    let mut first = setup.start_with_env("serve-1", &[("VIDFLOW_FAULT", "decode")]);
    let mut s = spec("sd-1", "acme", "standard", "256x256", 9, 2);
    s.prompt = "a calm lake at dawn".into();
    publish(&ch, &topo, &s).await;
    let status = tokio::task::spawn_blocking(move || first.child.wait().unwrap())
        .await
        .unwrap();
    assert!(!status.success());
    assert!(
        std::fs::read_dir(setup.out.join("safety/acme/sd-1"))
            .unwrap()
            .count()
            >= 1
    );
    // 2: the same job id comes back with an unsafe prompt (the harmless
    //    message, back in the queue once the broker saw the connection
    //    die, is removed first).
    let t0 = std::time::Instant::now();
    while depth(&ch, &topo.jobs).await == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "sd-1 never went back to the queue"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ch.queue_purge(topo.jobs.as_str().into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    let mut bad = s.clone();
    bad.prompt = "explicit porn scene in a motel room".into();
    let mut events = Events::follow(&topo).await;
    let second = setup.start("serve-2");
    publish(&ch, &topo, &bad).await;
    events
        .until(Duration::from_secs(120), "sd-1 answered", |all| {
            terminal_of(all, "acme", "sd-1").is_some()
        })
        .await;
    match terminal_of(&events.all, "acme", "sd-1") {
        Some(JobEvent::Failed { error, .. }) => {
            assert!(error.contains("category sexual"), "{error}")
        }
        other => panic!("the earlier allow was reused: {other:?}"),
    }
    assert!(setup.outputs().is_empty());
    second.terminate();
    cleanup(&ch, &topo).await;
}

/// What a job may cost in host memory is checked before it costs it: a
/// decompression bomb is refused from its header, a huge (but honest)
/// image is decoded once, and `4k` x 1441 frames is refused naming the
/// budget; the process's peak RSS stays under the budget throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_bounded_before_it_is_spent() {
    let budget: u64 = 2 << 30;
    let cfg_dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        root.join("configs/modes.toml"),
        cfg_dir.path().join("modes.toml"),
    )
    .unwrap();
    std::fs::write(
        cfg_dir.path().join("models.toml"),
        format!(
            "worker_vram_bytes = {}\nworker_host_bytes = {budget}\ndefault_model = \"ltx-tiny\"\n\n\
             [[model]]\nid = \"ltx-tiny\"\npath = \"builtin:tiny\"\nuntrained = true\n",
            1u64 << 50
        ),
    )
    .unwrap();
    let setup = Setup::new(
        "memory",
        &format!(
            "max_batch = 1\nconfigs_dir = \"{}\"",
            cfg_dir.path().display()
        ),
    );
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let serve = setup.start("serve");
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let rss_at_start = serve.peak_rss();

    let png = |w: u32, h: u32| {
        let img = image::GrayImage::new(w, h);
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    };
    // A bomb: a 1x1 PNG whose header declares 60000 x 60000 (3.6 G pixels).
    let mut bomb = png(1, 1);
    bomb[16..20].copy_from_slice(&60000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&60000u32.to_be_bytes());
    let crc = crc32(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    // A real 4096 x 4096 all-zero PNG (16 Mpx, a few KB compressed).
    let big = png(4096, 4096);
    assert!(big.len() < 200_000, "{}", big.len());
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    for (id, img) in [("bomb-1", b64(&bomb)), ("big-1", b64(&big))] {
        let s = JobSpec::from_json(&format!(
            r#"{{"job_id":"{id}","tenant":"acme","tier":"standard","kind":"i2v","prompt":"waves",
                "image":{{"inline_base64":"{img}"}},"resolution":"256x256","frames":9,"steps":2,"mode":"realtime"}}"#
        ))
        .unwrap();
        publish(&ch, &topo, &s).await;
    }
    let mut huge = spec("huge-1", "acme", "standard", "4k", 1441, 2);
    huge.mode = vidflow_operators::Mode::Cinema;
    publish(&ch, &topo, &huge).await;
    events
        .until(Duration::from_secs(180), "three answers", |all| {
            ["bomb-1", "big-1", "huge-1"]
                .iter()
                .all(|id| terminal_of(all, "acme", id).is_some())
        })
        .await;
    match terminal_of(&events.all, "acme", "bomb-1") {
        Some(JobEvent::Rejected { field, error, .. }) => {
            assert_eq!(field, "image");
            assert!(error.contains("60000x60000"), "{error}");
        }
        other => panic!("bomb-1: {other:?}"),
    }
    assert!(is_completed(
        terminal_of(&events.all, "acme", "big-1").unwrap()
    ));
    match terminal_of(&events.all, "acme", "huge-1") {
        Some(JobEvent::Rejected { field, error, .. }) => {
            assert_eq!(field, "resolution");
            assert!(error.contains("worker_host_bytes = 2.00 GiB"), "{error}");
        }
        other => panic!("huge-1: {other:?}"),
    }
    let peak = serve.peak_rss();
    eprintln!(
        "serve peak RSS: {:.1} MiB at start, {:.1} MiB after the bomb, a 4096x4096 image and a 4k x 1441 job (budget {} MiB)",
        rss_at_start as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        budget >> 20
    );
    assert!(
        peak > 0 && peak < budget,
        "peak RSS {peak} over the {budget} budget"
    );
    serve.terminate();
    cleanup(&ch, &topo).await;
}

/// Money: only delivered video moves money. 100 jobs that fail after
/// admission leave their tenant at exactly zero; DuckDB's sums over the
/// billing Parquet equal the ledger in the job records, tenant by tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_jobs_cost_nothing_and_the_ledger_adds_up() {
    let setup = Setup::new("money", "max_batch = 4");
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let serve = setup.start("serve");
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..100 {
        let id = format!("fail-{i:03}");
        // Admitted, then fails: its first frame does not exist.
        let s = JobSpec::from_json(&format!(
            r#"{{"job_id":"{id}","tenant":"globex","tier":"premium","kind":"i2v","prompt":"x",
                "image":{{"key":"globex/none.png"}},"resolution":"4k","frames":9,"steps":1,"mode":"realtime"}}"#
        ))
        .unwrap();
        publish(&ch, &topo, &s).await;
        ids.push(("globex", id));
    }
    for i in 0..3 {
        let id = format!("ok-{i}");
        publish(&ch, &topo, &spec(&id, "acme", "standard", "256x256", 9, 1)).await;
        ids.push(("acme", id));
    }
    let want = ids.clone();
    events
        .until(Duration::from_secs(600), "103 answers", move |all| {
            want.iter().all(|(t, id)| terminal_of(all, t, id).is_some())
        })
        .await;
    assert_eq!(events.count(|e| matches!(e, JobEvent::Failed { .. })), 100);
    assert_eq!(events.count(is_completed), 3);
    serve.terminate();
    // The records' ledger, tenant by tenant.
    let mut ledger: std::collections::BTreeMap<String, i64> = Default::default();
    for t in ["acme", "globex"] {
        for e in std::fs::read_dir(setup.out.join("jobs").join(t)).unwrap() {
            let rec: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
            let amount = rec["billing"]["amount_micro"].as_i64().unwrap_or(0);
            *ledger.entry(t.to_string()).or_default() += amount;
        }
    }
    assert_eq!(
        ledger["globex"], 0,
        "100 failed jobs must cost exactly nothing"
    );
    assert!(ledger["acme"] > 0);
    let sums = duck(
        &setup.out.join("analytics"),
        "billing",
        "tenant, cast(sum(amount_micro) as bigint), count(*)",
        "tenant",
    );
    let sums = sums.as_array().unwrap().clone();
    // group by is implied by the helper's order: one row per tenant.
    assert_eq!(sums.len(), 1, "only acme has ledger rows: {sums:?}");
    assert_eq!(sums[0][0], "acme");
    assert_eq!(sums[0][1].as_i64().unwrap(), ledger["acme"]);
    assert_eq!(sums[0][2], 3);
    cleanup(&ch, &topo).await;
}

/// Rolling restarts hand a long job back three times (drain timeout); none
/// of those counts as a failed attempt, so it is not dead-lettered as
/// poison and completes on the fourth run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restarts_do_not_make_a_job_poison() {
    let setup = Setup::new(
        "restarts",
        "max_batch = 1\nmax_attempts = 2\ndrain_timeout_s = 0.2",
    );
    let topo = setup.topo();
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let mut events = Events::follow(&topo).await;
    publish(
        &ch,
        &topo,
        &spec("roll-1", "acme", "standard", "256x256", 9, 60),
    )
    .await;
    for round in 0..3 {
        let serve = setup.start(&format!("serve-{round}"));
        let seen = events.all.len();
        events
            .until(Duration::from_secs(120), "roll-1 running", move |all| {
                all[seen..]
                    .iter()
                    .any(|(_, e)| matches!(e.event, JobEvent::Progress { step: 1.., .. }))
            })
            .await;
        serve.terminate();
    }
    let serve = setup.start("serve-last");
    events
        .until(Duration::from_secs(300), "roll-1 finished", |all| {
            terminal_of(all, "acme", "roll-1").is_some()
        })
        .await;
    let e = terminal_of(&events.all, "acme", "roll-1").unwrap();
    assert!(is_completed(e), "{e:?}");
    assert_eq!(depth(&ch, &topo.dead).await, 0, "dead-lettered as poison");
    serve.terminate();
    cleanup(&ch, &topo).await;
}

/// A job handed back for its timeout keeps its quota slot: a tenant with
/// one concurrent job and a premium job waiting behind it (prefetch 1, so
/// the premium job is delivered first once the timed-out one is back in
/// the queue) must not lose the running job to the newcomer. The newcomer
/// is refused by the quota; the timed-out job resumes and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_job_keeps_its_quota_slot_across_the_hand_back() {
    let qdir = tempfile::tempdir().unwrap();
    let quotas = qdir.path().join("quotas.toml");
    std::fs::write(
        &quotas,
        "[default]\nmax_concurrent = 1\nmonthly_video_seconds = 100000.0\nmax_resolution = \"4k\"\n\
         tiers = [\"premium\", \"standard\", \"free\"]\n",
    )
    .unwrap();
    let setup = Setup::new(
        "handback",
        &format!(
            "max_batch = 1\ncheckpoint_every = 3\nmax_attempts = 30\n\n[engine.timeouts]\nstandard = 1.0\n\n\
             [billing]\nquotas = \"{}\"\n",
            quotas.display()
        ),
    );
    let cfg = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        cfg.replacen("[amqp]\n", "[amqp]\nprefetch = 1\n", 1),
    )
    .unwrap();
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let serve = setup.start("serve");
    publish(
        &ch,
        &topo,
        &spec("slow-1", "acme", "standard", "512x512", 17, 80),
    )
    .await;
    until_running(&mut events, "acme", "slow-1").await;
    publish(
        &ch,
        &topo,
        &spec("rush-1", "acme", "premium", "256x256", 9, 2),
    )
    .await;
    events
        .until(Duration::from_secs(300), "both answered", |all| {
            terminal_of(all, "acme", "slow-1").is_some()
                && terminal_of(all, "acme", "rush-1").is_some()
        })
        .await;
    let log = serve.log_text();
    serve.terminate();
    assert!(
        log.contains("handed back for a retry"),
        "the job never timed out:\n{log}"
    );
    let slow = terminal_of(&events.all, "acme", "slow-1").unwrap();
    assert!(
        is_completed(slow),
        "the timed-out job lost its slot: {slow:?}"
    );
    match terminal_of(&events.all, "acme", "rush-1") {
        Some(JobEvent::Rejected { field, error, .. }) => {
            assert_eq!(field, "quota");
            assert!(error.contains("concurrent jobs limit 1"), "{error}");
        }
        other => panic!("rush-1: {other:?}"),
    }
    cleanup(&ch, &topo).await;
}
