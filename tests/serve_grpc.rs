//! The gRPC API of `vidflow serve` (real binary, real RabbitMQ): keys,
//! tenant isolation, idempotent Submit, Watch cadence, Cancel, List,
//! health and reflection.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::*;
use vidflow_connectors::grpc::pb::job_service_client::JobServiceClient;
use vidflow_connectors::grpc::pb::{JobRef, JobState, JobStatus, ListRequest, SubmitRequest};
use vidflow_connectors::tonic::transport::Channel;
use vidflow_connectors::tonic::{Code, Request};
use vidflow_operators::event::JobEvent;

fn req<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

fn submit_req(s: &vidflow_operators::JobSpec, client_key: &str) -> SubmitRequest {
    SubmitRequest {
        spec: Some(vidflow_operators::proto::JobSpec::try_from(s).unwrap()),
        client_key: client_key.into(),
    }
}

fn jref(id: &str) -> JobRef {
    JobRef { job_id: id.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_api_keys_isolation_idempotency_watch_cancel() {
    let setup = Setup::new("grpc", "max_batch = 2");
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let serve = setup.start("serve");
    let addr = serve.grpc.clone().expect("gRPC address");
    let chan = Channel::from_shared(addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut api = JobServiceClient::new(chan.clone());

    // Health and reflection answer without a key (what grpcurl uses).
    let mut health = tonic_health::pb::health_client::HealthClient::new(chan.clone());
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "vidflow.v1.JobService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let mut refl = ServerReflectionClient::new(chan.clone());
        let q = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut st = refl
            .server_reflection_info(tokio_stream::iter(vec![q]))
            .await
            .unwrap()
            .into_inner();
        let Some(Ok(r)) = st.next().await else {
            panic!("no reflection reply")
        };
        let Some(MessageResponse::ListServicesResponse(l)) = r.message_response else {
            panic!("unexpected reflection reply {r:?}")
        };
        let names: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.contains(&"vidflow.v1.JobService".to_string()),
            "{names:?}"
        );
    }

    // Keys.
    let short = spec("unused", "acme", "standard", "256x256", 9, 2);
    let e = api
        .submit(req(submit_req(&short, "k"), "vf_wrong"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = api.get(Request::new(jref("x"))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // Idempotent submit: same client key twice -> one job.
    let mut s = short.clone();
    s.job_id = None;
    s.tenant = String::new(); // taken from the key
    let r1 = api
        .submit(req(submit_req(&s, "order-1"), KEY_A))
        .await
        .unwrap()
        .into_inner();
    let r2 = api
        .submit(req(submit_req(&s, "order-1"), KEY_A))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r1.job_id, r2.job_id);
    assert!(!r1.duplicate && r2.duplicate);
    // A spec naming another tenant is refused.
    let mut other = s.clone();
    other.tenant = "globex".into();
    let e = api
        .submit(req(submit_req(&other, ""), KEY_A))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // A long job to watch and cancel: 30 steps of ~0.4 s; cancelled after 12 (~5 s of watching).
    let mut long = spec("long-1", "", "premium", "768x768", 49, 30);
    long.tenant = String::new();
    let lr = api
        .submit(req(submit_req(&long, ""), KEY_A))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lr.job_id, "long-1");
    let mut watch = api
        .watch(req(jref("long-1"), KEY_A))
        .await
        .unwrap()
        .into_inner();

    // Tenant B cannot see, watch or cancel it.
    assert_eq!(
        api.get(req(jref("long-1"), KEY_B))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        api.watch(req(jref("long-1"), KEY_B))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        api.cancel(req(jref("long-1"), KEY_B))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    let mut seen: Vec<(Instant, JobStatus)> = Vec::new();
    // Unix ms, comparable with the events' publish times (same machine).
    let mut cancel_sent: Option<u64> = None;
    while let Some(m) = tokio::time::timeout(Duration::from_secs(120), watch.next())
        .await
        .expect("watch stalled")
    {
        let m = m.unwrap();
        let now = Instant::now();
        let state = m.state();
        seen.push((now, m.clone()));
        if cancel_sent.is_none()
            && state == JobState::Running
            && m.stage == "denoise"
            && m.step >= 12
        {
            let c = api
                .cancel(req(jref("long-1"), KEY_A))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(c.job_id, "long-1");
            cancel_sent = Some(vidflow_operators::event::now_ms());
        }
    }
    let cancel_sent = cancel_sent.expect("the job never reached step 12 of denoise");
    let last = &seen.last().unwrap().1;
    assert_eq!(last.state(), JobState::Cancelled, "{last:?}");
    // Watch cadence: from the first running update to the end, never more
    // than 2 s between messages.
    let first_running = seen
        .iter()
        .position(|(_, s)| s.state() == JobState::Running)
        .unwrap();
    let max_gap = seen[first_running..]
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap();
    assert!(max_gap <= Duration::from_secs(2), "watch gap {max_gap:?}");

    // Cancel stops within one step: the job took at most one more step
    // after the last progress published before the cancel was sent.
    events
        .until(Duration::from_secs(60), "the cancelled event", |all| {
            all.iter().any(|(_, e)| {
                matches!(&e.event, JobEvent::Cancelled { job_id, .. } if job_id == "long-1")
            })
        })
        .await;
    let step_before = events
        .all
        .iter()
        .filter(|(_, e)| e.ts_ms <= cancel_sent)
        .filter_map(|(_, e)| match &e.event {
            JobEvent::Progress { job_id, step, .. } if job_id == "long-1" => Some(*step),
            _ => None,
        })
        .max()
        .unwrap();
    let stopped_at = events
        .all
        .iter()
        .find_map(|(_, e)| match &e.event {
            JobEvent::Cancelled { job_id, step } if job_id == "long-1" => Some(*step),
            _ => None,
        })
        .unwrap();
    let times: Vec<u64> = events
        .all
        .iter()
        .filter_map(|(_, e)| match &e.event {
            JobEvent::Progress {
                job_id,
                stage,
                batch,
                ..
            } if job_id == "long-1" && *batch > 0 && stage.as_str() == "denoise" => Some(e.ts_ms),
            _ => None,
        })
        .collect();
    eprintln!(
        "cancel: sent after step {step_before}, stopped at {stopped_at}; step times (ms): {:?}",
        times.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
    );
    assert!(
        stopped_at <= step_before + 1,
        "cancel sent after step {step_before}, job stopped at step {stopped_at}"
    );
    assert!(stopped_at < 30);

    // The client-key job ran exactly once.
    let ck = r1.job_id.clone();
    events
        .until(Duration::from_secs(120), "the client-key job", |all| {
            all.iter().any(
                |(_, e)| matches!(&e.event, JobEvent::Completed { job_id, .. } if *job_id == ck),
            )
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ck_done = events
        .all
        .iter()
        .filter(|(_, e)| {
            e.event.job_id() == r1.job_id && matches!(e.event, JobEvent::Completed { .. })
        })
        .count();
    assert_eq!(ck_done, 1);
    let ck_outputs = setup
        .outputs()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&r1.job_id))
        .count();
    assert_eq!(ck_outputs, 1);
    let g = api
        .get(req(jref(&r1.job_id), KEY_A))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.state(), JobState::Completed);
    assert!(g.untrained && g.output_key.ends_with(".mp4"), "{g:?}");

    // List: own jobs only.
    let la = api
        .list(req(ListRequest { limit: 0 }, KEY_A))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = la.jobs.iter().map(|j| j.job_id.as_str()).collect();
    assert!(
        ids.contains(&"long-1") && ids.contains(&r1.job_id.as_str()),
        "{ids:?}"
    );
    assert!(la.jobs.iter().all(|j| j.tenant == "acme"));
    let lb = api
        .list(req(ListRequest { limit: 0 }, KEY_B))
        .await
        .unwrap()
        .into_inner();
    assert!(lb.jobs.is_empty(), "{:?}", lb.jobs);
    let g = api
        .get(req(jref("long-1"), KEY_A))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.state(), JobState::Cancelled);

    drop(serve);
    let conn = broker().await;
    let ch = conn.create_channel().await.unwrap();
    cleanup(&ch, &topo).await;
}

/// `vidflow submit` as a user runs it: over gRPC and over AMQP, following
/// the job to the end; a bad key is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_cli_over_grpc_and_amqp() {
    let setup = Setup::new("submitcli", "max_batch = 2");
    let serve = setup.start("serve");
    let addr = serve.grpc.clone().unwrap();
    let spec_path = setup.tmp.path().join("job.json");
    std::fs::write(
        &spec_path,
        r#"{"tenant":"acme","tier":"standard","kind":"t2v","prompt":"a kite",
            "resolution":"256x256","frames":9,"steps":2}"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_vidflow"))
            .arg("submit")
            .arg(&spec_path)
            .args(args)
            .env_remove("VIDFLOW_API_KEY")
            .env("VIDFLOW_AMQP_URL", amqp_url())
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (code, id, err) = run(&["--grpc", &addr, "--key", KEY_A, "--follow"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!("job {id} completed")) && err.contains("UNTRAINED"),
        "{err}"
    );
    let (code, id2, err) = run(&["--via", "amqp", "--prefix", &setup.prefix, "--follow"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(&format!("job {id2} completed")), "{err}");
    let (code, _, err) = run(&["--grpc", &addr, "--key", "vf_nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("invalid API key"), "{err}");
    assert_eq!(setup.outputs().len(), 2);
    drop(serve);
    let conn = broker().await;
    let ch = conn.create_channel().await.unwrap();
    cleanup(&ch, &setup.topo()).await;
}
