//! The service read as an attacker would (real RabbitMQ, real `vidflow
//! serve`): each test is one boundary of docs/SECURITY.md, shown holding.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;
use vidflow_connectors::amqp::{self, Control, Topology};
use vidflow_connectors::grpc::pb::job_service_client::JobServiceClient;
use vidflow_connectors::grpc::pb::{JobRef, JobState};
use vidflow_connectors::lapin::options::{BasicGetOptions, QueuePurgeOptions};
use vidflow_connectors::lapin::{BasicProperties, Channel, Connection};
use vidflow_connectors::tonic::{Code, Request};
use vidflow_operators::event::{EventEnvelope, JobEvent};
use vidflow_operators::JobSpec;

fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}{}x{n}", std::process::id())
}

async fn confirm_as(url: &str) -> (Connection, Channel) {
    let conn = amqp::connect(url, "vidflow-test-tenant").await.unwrap();
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    (conn, ch)
}

fn req<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

fn terminal_of<'a>(
    all: &'a [(std::time::Instant, EventEnvelope)],
    tenant: &str,
    id: &str,
) -> Option<&'a JobEvent> {
    all.iter()
        .map(|(_, e)| e)
        .find(|e| {
            e.tenant == tenant
                && e.event.job_id() == id
                && (e.event.is_terminal() || matches!(e.event, JobEvent::Rejected { .. }))
        })
        .map(|e| &e.event)
}

/// Every dead letter of a deployment: (message id, field, error).
async fn dead_letters(ch: &Channel, topo: &Topology) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(topo.dead.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let p = &m.delivery.properties;
        out.push((
            p.message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            amqp::header_str(p, amqp::H_FIELD).unwrap_or_default(),
            amqp::header_str(p, amqp::H_ERROR).unwrap_or_default(),
        ));
    }
    out
}

fn job_json(id: &str, tenant: &str) -> Vec<u8> {
    format!(
        r#"{{"job_id":"{id}","tenant":"{tenant}","tier":"standard","kind":"t2v","prompt":"a calm lake",
            "resolution":"256x256","frames":9,"steps":2,"mode":"realtime"}}"#
    )
    .into_bytes()
}

/// Publishes raw job bytes through the intake exchange with `user_id`
/// (None: no user_id at all).
async fn publish_raw(
    ch: &Channel,
    topo: &Topology,
    id: &str,
    body: &[u8],
    user: Option<&str>,
) -> Result<(), amqp::PublishError> {
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(amqp::JSON.into())
        .with_message_id(id.into());
    if let Some(u) = user {
        props = props.with_user_id(u.into());
    }
    amqp::publish_confirmed(ch, &topo.intake, &topo.jobs, body, props, true).await
}

/// Tenants publish as their own broker users, which the broker proves;
/// nothing else is believed: forged tenants, missing or unknown users are
/// dead-lettered as unauthenticated, and the broker itself refuses a
/// tenant's writes to the events and control exchanges, its reads of other
/// tenants' events, and a user_id that is not its own. Events and control
/// messages from a non-service user (here the broker's admin) are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_proves_who_publishes_and_forgeries_are_refused() {
    let setup = Setup::new("authn", "max_batch = 2");
    let topo = setup.topo();
    let (ta, tb) = (
        setup.add_tenant(&unique("ta")),
        setup.add_tenant(&unique("tb")),
    );
    let mut events = Events::follow(&topo).await;
    let serve = setup.start("serve");
    let svc = broker().await;
    let svc_ch = amqp::confirm_channel(&svc).await.unwrap();

    // A tenant hears its own events only: `job.#` is refused, its own
    // `job.<tenant>.#` binding is allowed.
    let (ta_conn, _) = confirm_as(&ta.url()).await;
    let probe = ta_conn.create_channel().await.unwrap();
    let e = topo.bind_events(&probe, "job.#").await.unwrap_err();
    assert!(e.to_string().contains("ACCESS_REFUSED"), "{e}");
    let own = ta_conn.create_channel().await.unwrap();
    let q = topo
        .bind_events(&own, &format!("job.{}.#", ta.name))
        .await
        .unwrap();
    let mut mine = amqp::consume_auto_ack(&own, &q, "ta-own").await.unwrap();

    // 1. A job as itself runs.
    let (_c1, ch) = confirm_as(&ta.url()).await;
    publish_raw(
        &ch,
        &topo,
        "own-1",
        &job_json("own-1", &ta.name),
        Some(&ta.name),
    )
    .await
    .unwrap();
    // 2. A forged tenant in the body.
    publish_raw(
        &ch,
        &topo,
        "forged-1",
        &job_json("forged-1", &tb.name),
        Some(&ta.name),
    )
    .await
    .unwrap();
    // 3. No user_id at all (the broker checks one only when present), even
    //    from the service's own connection.
    publish_raw(
        &svc_ch,
        &topo,
        "anon-1",
        &job_json("anon-1", &ta.name),
        None,
    )
    .await
    .unwrap();
    // 4. The broker admin (guest) is neither the service nor a tenant.
    let guest_url = amqp_url().replacen("vidflow:vidflow@", "guest:guest@", 1);
    let (_g, gch) = confirm_as(&guest_url).await;
    publish_raw(
        &gch,
        &topo,
        "guest-1",
        &job_json("guest-1", &ta.name),
        Some("guest"),
    )
    .await
    .unwrap();
    // 5. Claiming another user: the broker refuses the message outright.
    let (_c5, ch5) = confirm_as(&ta.url()).await;
    let e = publish_raw(
        &ch5,
        &topo,
        "spoof-1",
        &job_json("spoof-1", &tb.name),
        Some(&tb.name),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("PRECONDITION_FAILED"), "{e}");
    // 6. Writes a tenant may not make: events, control, the default exchange.
    for (exchange, key) in [
        (topo.events.as_str(), "job.x.y.completed"),
        (topo.control.as_str(), ""),
        ("", topo.jobs.as_str()),
    ] {
        let (_c, c) = confirm_as(&ta.url()).await;
        let e = amqp::publish_confirmed(
            &c,
            exchange,
            key,
            b"{}",
            BasicProperties::default().with_user_id(ta.name.as_str().into()),
            false,
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string().contains("ACCESS_REFUSED"),
            "{exchange:?}: {e}"
        );
    }

    events
        .until(
            Duration::from_secs(120),
            "own-1 completed, 3 unauthenticated",
            |all| {
                terminal_of(all, &ta.name, "own-1").is_some_and(is_completed)
                    && all
                        .iter()
                        .filter(|(_, e)| matches!(e.event, JobEvent::Rejected { .. }))
                        .count()
                        >= 3
            },
        )
        .await;
    let dead = dead_letters(&svc_ch, &topo).await;
    let mut ids: Vec<&str> = dead.iter().map(|d| d.0.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["anon-1", "forged-1", "guest-1"], "{dead:?}");
    for (id, field, error) in &dead {
        assert_eq!(field, "user_id", "{id}: {error}");
        assert!(error.starts_with("unauthenticated"), "{id}: {error}");
    }
    // The forged job was never announced to the tenant it named.
    assert!(
        events.all.iter().all(|(_, e)| e.tenant != tb.name),
        "{:?}",
        events.all
    );
    // The tenant heard its own job through its own binding.
    let first = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::StreamExt::next(&mut mine),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    let env: EventEnvelope = serde_json::from_slice(&first.data).unwrap();
    assert_eq!(env.tenant, ta.name);

    // 7. A forged `completed` event and a forged cancel from a user that can
    //    write the exchanges (the broker admin) but is not the service.
    let grpc = serve.grpc.clone().unwrap();
    let mut api = JobServiceClient::connect(grpc).await.unwrap();
    let long = spec("long-1", &ta.name, "standard", "256x256", 9, 40);
    amqp::publish_job(&svc_ch, &topo, &long, &amqp_user())
        .await
        .unwrap();
    events
        .until(Duration::from_secs(60), "long-1 running", |all| {
            all.iter().any(|(_, e)| {
                e.event.job_id() == "long-1" && matches!(e.event, JobEvent::Progress { .. })
            })
        })
        .await;
    let forged = EventEnvelope {
        tenant: ta.name.clone(),
        ts_ms: vidflow_operators::event::now_ms(),
        replay: false,
        event: JobEvent::Completed {
            job_id: "long-1".into(),
            key: "evil/x.mp4".into(),
            size: 1,
            sha256: "00".into(),
            untrained: false,
        },
    };
    amqp::publish_confirmed(
        &gch,
        &topo.events,
        &forged.routing_key(),
        &amqp::event_body(&forged),
        amqp::event_properties("guest"),
        false,
    )
    .await
    .unwrap();
    let cancel = Control::Cancel {
        tenant: ta.name.clone(),
        job_id: "long-1".into(),
    };
    amqp::publish_control(&gch, &topo, &cancel, "guest")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = api
        .get(req(
            JobRef {
                job_id: "long-1".into(),
            },
            &ta.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        s.state(),
        JobState::Completed,
        "the forged event reached the job table: {s:?}"
    );
    events
        .until(Duration::from_secs(120), "long-1 finished", |all| {
            terminal_of(all, &ta.name, "long-1").is_some()
        })
        .await;
    let ev = terminal_of(&events.all, &ta.name, "long-1").unwrap();
    assert!(
        is_completed(ev),
        "the forged cancel stopped the job: {ev:?}"
    );
    // The API's own follower sees the real completion (give it a moment).
    let t0 = std::time::Instant::now();
    let s = loop {
        let s = api
            .get(req(
                JobRef {
                    job_id: "long-1".into(),
                },
                &ta.api_key,
            ))
            .await
            .unwrap()
            .into_inner();
        if s.state() == JobState::Completed || t0.elapsed() > Duration::from_secs(10) {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s.state(), JobState::Completed);
    assert_ne!(s.output_key, "evil/x.mp4");
    assert!(serve
        .log_text()
        .contains("control message not from a service user"));
    serve.terminate();
    cleanup(&svc_ch, &topo).await;
    ta.delete();
    tb.delete();
}

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
    amqp::publish_job(
        &ch,
        &topo,
        &spec("order-1", "globex", "standard", "256x256", 9, 60),
        &amqp_user(),
    )
    .await
    .unwrap();
    events
        .until(Duration::from_secs(60), "globex order-1 running", |all| {
            all.iter().any(|(_, e)| {
                e.tenant == "globex" && matches!(e.event, JobEvent::Progress { step: 1.., .. })
            })
        })
        .await;
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
    amqp::publish_job(
        &ch,
        &topo,
        &spec("order-1", "acme", "standard", "256x256", 9, 2),
        &amqp_user(),
    )
    .await
    .unwrap();
    // acme runs probe-1; globex sends its own probe-1 meanwhile: it is not
    // told "in use" (which would reveal acme's running ids), it runs.
    amqp::publish_job(
        &ch,
        &topo,
        &spec("probe-1", "acme", "standard", "256x256", 9, 30),
        &amqp_user(),
    )
    .await
    .unwrap();
    events
        .until(Duration::from_secs(60), "acme probe-1 running", |all| {
            all.iter().any(|(_, e)| {
                e.tenant == "acme"
                    && e.event.job_id() == "probe-1"
                    && matches!(e.event, JobEvent::Progress { .. })
            })
        })
        .await;
    amqp::publish_job(
        &ch,
        &topo,
        &spec("probe-1", "globex", "standard", "256x256", 9, 2),
        &amqp_user(),
    )
    .await
    .unwrap();
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
        amqp::publish_job(&ch, &topo, &s, &amqp_user())
            .await
            .unwrap();
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
    amqp::publish_job(&ch, &topo, &s, &amqp_user())
        .await
        .unwrap();
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
    amqp::publish_job(&ch, &topo, &bad, &amqp_user())
        .await
        .unwrap();
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
        amqp::publish_job(&ch, &topo, &s, &amqp_user())
            .await
            .unwrap();
    }
    let mut huge = spec("huge-1", "acme", "standard", "4k", 1441, 2);
    huge.mode = vidflow_operators::Mode::Cinema;
    amqp::publish_job(&ch, &topo, &huge, &amqp_user())
        .await
        .unwrap();
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
        amqp::publish_job(&ch, &topo, &s, &amqp_user())
            .await
            .unwrap();
        ids.push(("globex", id));
    }
    for i in 0..3 {
        let id = format!("ok-{i}");
        amqp::publish_job(
            &ch,
            &topo,
            &spec(&id, "acme", "standard", "256x256", 9, 1),
            &amqp_user(),
        )
        .await
        .unwrap();
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
    amqp::publish_job(
        &ch,
        &topo,
        &spec("roll-1", "acme", "standard", "256x256", 9, 60),
        &amqp_user(),
    )
    .await
    .unwrap();
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

/// CRC-32 (IEEE), for a hand-edited PNG chunk.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// `select <cols> from <dataset> order by <order>` over a deployment's
/// Parquet, through DuckDB (grouping by the order columns when the select
/// aggregates).
fn duck(root: &std::path::Path, dataset: &str, cols: &str, order: &str) -> serde_json::Value {
    let group = if cols.contains("sum(") || cols.contains("count(") {
        format!("group by {order}")
    } else {
        String::new()
    };
    let py = std::env::var("VIDFLOW_PYTHON").expect("VIDFLOW_PYTHON (run through scripts/test.sh)");
    let o = Command::new(py)
        .args([
            "-c",
            &format!(
                "import duckdb, json; print(json.dumps(duckdb.sql(\"select {cols} from read_parquet('{}/{dataset}/**/*.parquet', hive_partitioning=true) {group} order by {order}\").fetchall()))",
                root.display()
            ),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `vidflow key new` (with and without an expiry) and `vidflow key revoke`
/// change what a running service accepts within seconds, and a tenant
/// added by `vidflow tenant add` after start may publish at once: the
/// service follows its key file, no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_added_expire_and_are_revoked_without_a_restart() {
    let setup = Setup::new("keyring", "max_batch = 2");
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let serve = setup.start("serve");
    let mut api = JobServiceClient::connect(serve.grpc.clone().unwrap())
        .await
        .unwrap();
    let keys = setup.tmp.path().join("keys.toml");
    let vidflow = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_vidflow"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let keys_s = keys.to_str().unwrap();
    // The code a Get of an unknown job gets with `key`.
    let probe = |key: String| {
        let mut api = api.clone();
        async move {
            match api
                .get(req(
                    JobRef {
                        job_id: "nothing".into(),
                    },
                    &key,
                ))
                .await
            {
                Ok(_) => Code::Ok,
                Err(s) => s.code(),
            }
        }
    };
    async fn until_code<F: std::future::Future<Output = Code>>(
        what: &str,
        want: Code,
        f: impl Fn() -> F,
    ) {
        let t0 = std::time::Instant::now();
        loop {
            let got = f().await;
            if got == want {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{what}: still {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(probe(KEY_A.into()).await, Code::NotFound);
    let expired = vidflow(&[
        "key",
        "new",
        "--tenant",
        "acme",
        "--file",
        keys_s,
        "--expires",
        "2020-01-01",
    ]);
    let fresh = vidflow(&["key", "new", "--tenant", "acme", "--file", keys_s]);
    assert_eq!(
        probe(fresh.clone()).await,
        Code::Unauthenticated,
        "not loaded yet"
    );
    until_code("a new key", Code::NotFound, || probe(fresh.clone())).await;
    assert_eq!(
        probe(expired.clone()).await,
        Code::Unauthenticated,
        "an expired key works"
    );
    vidflow(&["key", "revoke", &fresh, "--file", keys_s]);
    until_code("a revoked key", Code::Unauthenticated, || {
        probe(fresh.clone())
    })
    .await;
    assert_eq!(
        probe(KEY_A.into()).await,
        Code::NotFound,
        "other keys still work"
    );

    // A tenant made while the service runs publishes as itself at once.
    let tn = setup.add_tenant(&unique("tn"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_c, ch) = confirm_as(&tn.url()).await;
    publish_raw(
        &ch,
        &topo,
        "new-1",
        &job_json("new-1", &tn.name),
        Some(&tn.name),
    )
    .await
    .unwrap();
    events
        .until(Duration::from_secs(120), "new-1 answered", |all| {
            terminal_of(all, &tn.name, "new-1").is_some()
        })
        .await;
    let e = terminal_of(&events.all, &tn.name, "new-1").unwrap();
    assert!(is_completed(e), "{e:?}");
    let ok = api
        .get(req(
            JobRef {
                job_id: "new-1".into(),
            },
            &tn.api_key,
        ))
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    serve.terminate();
    let svc = broker().await;
    cleanup(&amqp::confirm_channel(&svc).await.unwrap(), &topo).await;
    tn.delete();
}

/// TLS where configured: `vidflow serve` with `[amqp] ca_file` talks to
/// the broker only over amqps (and refuses to start with a plaintext URL),
/// and with `[grpc.tls]` serves the API only over TLS: a plaintext client
/// and a client that does not trust the CA both fail. Both CAs are made at
/// test time (scripts/make-test-ca.sh; the broker's by scripts/broker.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_required_where_configured() {
    use vidflow_connectors::tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let amqps = std::env::var("VIDFLOW_AMQPS_URL")
        .expect("VIDFLOW_AMQPS_URL: run through scripts/test.sh (the broker's amqps listener)");
    let broker_ca = std::env::var("VIDFLOW_AMQP_CA_FILE")
        .expect("VIDFLOW_AMQP_CA_FILE: run through scripts/test.sh");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let certs = tempfile::tempdir().unwrap();
    let st = Command::new("bash")
        .arg(root.join("scripts/make-test-ca.sh"))
        .arg(certs.path())
        .status()
        .unwrap();
    assert!(st.success());
    let (cert, key) = (
        certs.path().join("server.pem"),
        certs.path().join("server.key"),
    );
    let setup = Setup::new(
        "tls",
        &format!(
            "max_batch = 2\n\n[grpc.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    let cfg = std::fs::read_to_string(&setup.config).unwrap();
    let tls_cfg = cfg.replacen(
        &format!("url = \"{}\"", amqp_url()),
        &format!("url = \"{amqps}\"\nca_file = \"{broker_ca}\""),
        1,
    );
    assert_ne!(cfg, tls_cfg);
    std::fs::write(&setup.config, &tls_cfg).unwrap();
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let serve = setup.start("serve");
    // The service's broker connections are TLS ones.
    let conns = Command::new("bash")
        .arg(root.join("scripts/broker.sh"))
        .args(["ctl", "list_connections", "client_properties", "ssl"])
        .output()
        .unwrap();
    let conns = String::from_utf8_lossy(&conns.stdout);
    let serve_conns: Vec<&str> = conns
        .lines()
        .filter(|l| l.contains("vidflow-serve"))
        .collect();
    assert!(!serve_conns.is_empty(), "{conns}");
    assert!(
        serve_conns.iter().all(|l| l.trim_end().ends_with("true")),
        "{conns}"
    );

    let port = serve
        .grpc
        .as_deref()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let ca = std::fs::read(certs.path().join("ca.pem")).unwrap();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    let chan = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut api = JobServiceClient::new(chan);
    let s = spec("tls-1", "acme", "standard", "256x256", 9, 2);
    let sub = vidflow_connectors::grpc::pb::SubmitRequest {
        spec: Some(vidflow_operators::proto::JobSpec::try_from(&s).unwrap()),
        client_key: String::new(),
    };
    api.submit(req(sub, KEY_A)).await.unwrap();
    events
        .until(Duration::from_secs(120), "tls-1 finished", |all| {
            terminal_of(all, "acme", "tls-1").is_some()
        })
        .await;
    assert!(is_completed(
        terminal_of(&events.all, "acme", "tls-1").unwrap()
    ));
    // Plaintext, and TLS without trusting the CA: refused.
    let plain = async {
        let mut c = JobServiceClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .ok()?;
        c.get(req(
            JobRef {
                job_id: "tls-1".into(),
            },
            KEY_A,
        ))
        .await
        .ok()
    };
    assert!(tokio::time::timeout(Duration::from_secs(10), plain)
        .await
        .ok()
        .flatten()
        .is_none());
    let untrusted = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(ClientTlsConfig::new())
        .unwrap()
        .connect()
        .await;
    assert!(
        untrusted.is_err(),
        "a client that does not trust the CA connected"
    );
    serve.terminate();

    // A CA configured with a plaintext broker URL: the service will not start.
    let plain_cfg = tls_cfg.replacen(
        &format!("url = \"{amqps}\""),
        &format!("url = \"{}\"", amqp_url()),
        1,
    );
    std::fs::write(&setup.config, plain_cfg).unwrap();
    let mut refused = setup.start("serve-plain");
    let st = refused.child.wait().unwrap();
    assert!(!st.success());
    let log = refused.log_text();
    assert!(
        log.contains("requires TLS") && log.contains("not amqps://"),
        "{log}"
    );
    let svc = broker().await;
    cleanup(&amqp::confirm_channel(&svc).await.unwrap(), &topo).await;
}
