//! RabbitMQ's consumer acknowledgement timeout must not cut a long job:
//! with the broker's timeout lowered to 1 s, the broker closes the serve
//! channel (it checks once a minute), the job keeps running, its message
//! comes back on the new channel and joins the running job instead of
//! starting it again. Its own test binary: it changes a broker-wide
//! setting (restored on exit), and cargo runs test binaries one at a time.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;
use vidflow_connectors::amqp::{self, Control};
use vidflow_operators::event::JobEvent;

fn set_consumer_timeout(ms: u64) {
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/broker.sh"))
        .args(["ctl", "eval"])
        .arg(format!(
            "application:set_env(rabbit, consumer_timeout, {ms})."
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/broker.sh ctl failed (this test needs the project's private broker): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn max_step(events: &Events) -> usize {
    events
        .all
        .iter()
        .filter_map(|(_, e)| match e.event {
            JobEvent::Progress { step, .. } => Some(step),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

struct Restore;
impl Drop for Restore {
    fn drop(&mut self) {
        set_consumer_timeout(7_200_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outlives_the_brokers_ack_timeout_without_restarting() {
    let setup = Setup::new("acktimeout", "max_batch = 1");
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    set_consumer_timeout(1_000);
    let _restore = Restore;
    // Channels read the timeout when they open: start serve after the change.
    let serve = setup.start("serve");
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    // Far more steps than the test waits for; it is cancelled at the end.
    let s = spec("slow-1", "acme", "premium", "768x768", 49, 200);
    amqp::publish_job(&ch, &topo, &s, &amqp_user())
        .await
        .unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    while !serve
        .log_text()
        .contains("duplicate delivery of a running job")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the broker never cut the channel; log:\n{}",
            serve.log_text()
        );
        events.collect_for(Duration::from_millis(500)).await;
        assert_eq!(
            events.count(|e| e.is_terminal()),
            0,
            "{:?}",
            events.all.last()
        );
    }
    let log = serve.log_text();
    assert!(log.contains("delivery acknowledgement"), "{log}");
    // Still the same run: progress keeps going up, one accepted event.
    let step_then = max_step(&events);
    events.collect_for(Duration::from_secs(3)).await;
    let step_now = max_step(&events);
    assert!(
        step_now > step_then,
        "the job stopped: step {step_then} -> {step_now}"
    );
    assert_eq!(events.count(|e| matches!(e, JobEvent::Accepted { .. })), 1);

    // End it: the cancel commits and acks the redelivered message.
    amqp::publish_control(
        &ch,
        &topo,
        &Control::Cancel {
            tenant: "acme".into(),
            job_id: "slow-1".into(),
        },
        &amqp_user(),
    )
    .await
    .unwrap();
    events
        .until(Duration::from_secs(60), "the cancelled event", |all| {
            all.iter()
                .any(|(_, e)| matches!(e.event, JobEvent::Cancelled { .. }))
        })
        .await;
    let mut serve = serve;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(serve.child.wait().unwrap().success());
    assert_eq!(events.count(|e| matches!(e, JobEvent::Accepted { .. })), 1);
    assert_eq!(wait_empty(&ch, &topo.jobs).await, 0);
    cleanup(&ch, &topo).await;
}
