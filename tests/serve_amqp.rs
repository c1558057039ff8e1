//! `vidflow serve` against a real RabbitMQ: jobs over AMQP complete once
//! each with outputs, malformed messages are dead-lettered with reasons and
//! the service keeps serving.

mod support;

use std::time::Duration;

use support::*;
use vidflow_connectors::amqp::{self, H_ERROR, H_FIELD};
use vidflow_connectors::lapin::options::{BasicAckOptions, BasicGetOptions};
use vidflow_connectors::lapin::BasicProperties;
use vidflow_operators::event::JobEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_jobs_over_amqp_complete_once_each() {
    let setup = Setup::new("fifty", "max_batch = 4");
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let serve = setup.start("serve");
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let tiers = ["premium", "standard", "free"];
    for i in 0..50 {
        let s = spec(
            &format!("job-{i:02}"),
            "acme",
            tiers[i % 3],
            "256x256",
            9,
            2,
        );
        amqp::publish_job(&ch, &topo, &s, &amqp_user())
            .await
            .unwrap();
    }
    events
        .until(Duration::from_secs(600), "50 completed events", |all| {
            all.iter()
                .filter(|(_, e)| matches!(e.event, JobEvent::Completed { .. }))
                .count()
                >= 50
        })
        .await;
    serve.terminate();
    let mut done: Vec<String> = events
        .all
        .iter()
        .filter(|(_, e)| is_completed(&e.event))
        .map(|(_, e)| e.event.job_id().to_string())
        .collect();
    done.sort();
    let expected: Vec<String> = (0..50).map(|i| format!("job-{i:02}")).collect();
    assert_eq!(done, expected, "one completed event per job");
    assert_eq!(events.count(|e| matches!(e, JobEvent::Failed { .. })), 0);
    let outputs = setup.outputs();
    assert_eq!(outputs.len(), 50, "{outputs:?}");
    assert!(outputs
        .iter()
        .all(|p| std::fs::metadata(p).unwrap().len() > 100));
    // Everything was acked: after serve stopped nothing went back.
    assert_eq!(depth(&ch, &topo.jobs).await, 0, "intake queue");
    assert_eq!(depth(&ch, &topo.dead).await, 0, "dead-letter queue");
    cleanup(&ch, &topo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_dead_lettered_and_service_keeps_serving() {
    let setup = Setup::new("malformed", "max_batch = 2");
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let serve = setup.start("serve");
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let good = |extra: &str| {
        format!(
            r#"{{"tenant":"acme","tier":"standard","kind":"t2v","prompt":"p",
                "resolution":"256x256","frames":9,"steps":2{extra}}}"#
        )
    };
    let json = |s: &str| (s.as_bytes().to_vec(), Some(amqp::JSON));
    let mut bad: Vec<(&str, (Vec<u8>, Option<&str>))> = vec![
        ("(body)", json("{not json")),
        ("(body)", json("")),
        ("(body)", json("[1, 2, 3]")),
        (
            "steps",
            json(&good("").replace("\"steps\":2", "\"steps\":\"two\"")),
        ),
        (
            "frames",
            json(&good("").replace("\"frames\":9", "\"frames\":-1")),
        ),
        (
            "prompt",
            json(&good("").replace("\"prompt\":\"p\"", "\"prompt\":5")),
        ),
        (
            "tenant",
            json(&good("").replace("\"tenant\":\"acme\",", "")),
        ),
        ("prompt", json(&good("").replace("\"prompt\":\"p\",", ""))),
        ("kind", json(&good("").replace("\"kind\":\"t2v\",", ""))),
        ("payload", (vec![b' '; 10 * 1024 * 1024], Some(amqp::JSON))),
        ("resolution", json(&good("").replace("256x256", "100x100"))),
        (
            "resolution",
            json(&good("").replace("256x256", "99999x256")),
        ),
        ("resolution", json(&good("").replace("256x256", "big"))),
        (
            "frames",
            json(&good("").replace("\"frames\":9", "\"frames\":10")),
        ),
        ("tier", json(&good("").replace("standard", "gold"))),
        (
            "tier",
            json(&good("").replace("\"tier\":\"standard\",", "")),
        ),
        ("tenant", json(&good("").replace("acme", "../etc"))),
        ("colour", json(&good(r#","colour":"red""#))),
        ("payload", (vec![0xff, 0xfe, 0x00], Some(amqp::JSON))),
        ("payload", (vec![0x0a, 0xff], Some(amqp::PROTOBUF))),
    ];
    assert_eq!(bad.len(), 20);
    for (i, (_, (body, ct))) in bad.iter_mut().enumerate() {
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_user_id(amqp_user().as_str().into())
            .with_message_id(format!("bad-{i:02}").into());
        if let Some(ct) = ct {
            props = props.with_content_type((*ct).into());
        }
        amqp::publish_confirmed(&ch, "", &topo.jobs, body, props, true)
            .await
            .unwrap();
    }
    for i in 0..5 {
        let s = good(&format!(r#","job_id":"good-{i}""#));
        amqp::publish_confirmed(
            &ch,
            "",
            &topo.jobs,
            s.as_bytes(),
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_user_id(amqp_user().as_str().into()),
            true,
        )
        .await
        .unwrap();
    }
    events
        .until(
            Duration::from_secs(300),
            "5 completed + 20 rejected",
            |all| {
                let c = all
                    .iter()
                    .filter(|(_, e)| matches!(e.event, JobEvent::Completed { .. }))
                    .count();
                let r = all
                    .iter()
                    .filter(|(_, e)| matches!(e.event, JobEvent::Rejected { .. }))
                    .count();
                c >= 5 && r >= 20
            },
        )
        .await;
    serve.terminate();
    assert_eq!(events.count(is_completed), 5);
    assert_eq!(setup.outputs().len(), 5);
    assert_eq!(depth(&ch, &topo.jobs).await, 0, "intake queue");
    assert_eq!(depth(&ch, &topo.dead).await, 20, "dead-letter queue");
    // Each dead letter carries its reason, naming the field at fault.
    let mut got = Vec::new();
    for _ in 0..20 {
        let m = ch
            .basic_get(topo.dead.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
            .expect("a dead letter");
        let id = m
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_string())
            .unwrap();
        let err = amqp::header_str(&m.delivery.properties, H_ERROR).unwrap_or_default();
        let field = amqp::header_str(&m.delivery.properties, H_FIELD).unwrap_or_default();
        assert!(!err.is_empty(), "{id}: no reason header");
        let i: usize = id.trim_start_matches("bad-").parse().unwrap();
        // The original body is kept.
        assert_eq!(m.delivery.data.len(), bad[i].1 .0.len(), "{id}");
        got.push((i, field, err));
        m.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
    }
    got.sort();
    for (i, field, err) in &got {
        assert_eq!(field, bad[*i].0, "message {i}: {err}");
    }
    cleanup(&ch, &topo).await;
}
