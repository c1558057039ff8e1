//! The service's trust boundaries read as an attacker would (real
//! RabbitMQ, real `vidflow serve`): who may publish, what the broker lets
//! a tenant touch, API keys that change while it runs, TLS. Each test is
//! one boundary of docs/SECURITY.md; `tests/isolation.rs` has the rest.

mod support;

use std::process::Command;
use std::time::Duration;

use support::attack::*;
use support::*;
use vidflow_connectors::amqp::{self, Control};
use vidflow_connectors::grpc::pb::job_service_client::JobServiceClient;
use vidflow_connectors::grpc::pb::{JobRef, JobState};
use vidflow_connectors::lapin::BasicProperties;
use vidflow_connectors::tonic::Code;
use vidflow_operators::event::{EventEnvelope, JobEvent};

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
    publish(&svc_ch, &topo, &long).await;
    until_running(&mut events, &ta.name, "long-1").await;
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
    // The real job may already have finished on a fast machine, so the check
    // is on what the forgery would have written, not on the state alone.
    assert!(
        s.output_key != "evil/x.mp4" && s.sha256 != "00",
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
    // This process's connections (other tests' services run meanwhile).
    let mine = format!("@{}\"", serve.pid());
    let serve_conns: Vec<&str> = conns.lines().filter(|l| l.contains(&mine)).collect();
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
