//! `vidflow serve` under process faults (real binary, real RabbitMQ):
//! SIGKILL mid-job and restart → the job is redelivered and completes, one
//! completed event per job; SIGTERM → drain (finish, or hand back at the
//! deadline) and exit 0, nothing lost.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;
use vidflow_connectors::amqp;
use vidflow_operators::event::{JobEvent, Stage};

fn signal(s: &Serve, sig: Signal) {
    kill(Pid::from_raw(s.pid()), sig).unwrap();
}

/// Waits for the process to exit; returns its status and how long it took.
fn wait_exit(s: &mut Serve, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            return (st, t0.elapsed());
        }
        assert!(
            t0.elapsed() < limit,
            "serve did not exit within {limit:?}:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn denoising(all: &[(Instant, vidflow_operators::event::EventEnvelope)], min_step: usize) -> bool {
    all.iter().any(|(_, e)| {
        matches!(e.event, JobEvent::Progress { stage: Stage::Denoise, step, .. } if step >= min_step)
    })
}

fn completed_per_job(events: &Events) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for (_, e) in &events.all {
        if is_completed(&e.event) {
            *m.entry(e.event.job_id().to_string()).or_insert(0) += 1;
        }
    }
    m
}

async fn publish_jobs(topo: &amqp::Topology, ids: &[String]) {
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    for id in ids {
        // ~20 steps of ~0.15 s: long enough to be killed mid-denoise.
        let s = spec(id, "acme", "standard", "512x512", 17, 20);
        amqp::publish_job(&ch, topo, &s, &amqp_user())
            .await
            .unwrap();
    }
}

async fn wait_all_completed(events: &mut Events, ids: &[String]) {
    let want: Vec<String> = ids.to_vec();
    events
        .until(
            Duration::from_secs(600),
            "every job completed",
            move |all| {
                want.iter().all(|id| {
                    all.iter()
                        .any(|(_, e)| is_completed(&e.event) && e.event.job_id() == id)
                })
            },
        )
        .await;
    // Late duplicates would show up now.
    events.settle(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_job_then_restart_completes_every_job_once() {
    let setup = Setup::new("sigkill", "max_batch = 2");
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let first = setup.start("serve-1");
    let ids: Vec<String> = (0..4).map(|i| format!("kill-{i}")).collect();
    publish_jobs(&topo, &ids).await;
    events
        .until(Duration::from_secs(120), "denoising under way", |all| {
            denoising(all, 3)
        })
        .await;
    let killed_during: Vec<String> = events
        .all
        .iter()
        .filter(|(_, e)| matches!(e.event, JobEvent::Accepted { .. }))
        .map(|(_, e)| e.event.job_id().to_string())
        .collect();
    signal(&first, Signal::SIGKILL);
    drop(first);
    let done_before = completed_per_job(&events).len();
    assert!(done_before < ids.len(), "killed too late to test anything");

    let second = setup.start("serve-2");
    wait_all_completed(&mut events, &ids).await;
    let log2 = second.log_text();
    signal(&second, Signal::SIGTERM);
    let mut second = second;
    let (st, _) = wait_exit(&mut second, Duration::from_secs(60));
    assert!(st.success(), "{st:?}");

    let per_job = completed_per_job(&events);
    for id in &ids {
        assert_eq!(
            per_job.get(id),
            Some(&1),
            "{id}: completed events {per_job:?}"
        );
    }
    // The jobs running at the kill came back to the second process.
    assert!(
        killed_during
            .iter()
            .any(|id| log2.contains(&format!("job_id={id}")) && log2.contains("redelivered=true")),
        "no redelivery seen; running at kill: {killed_during:?}\n{log2}"
    );
    assert_eq!(setup.outputs().len(), ids.len());
    let conn = broker().await;
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(depth(&ch, &topo.jobs).await, 0);
    assert_eq!(depth(&ch, &topo.dead).await, 0);
    cleanup(&ch, &topo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero_nothing_lost() {
    // Phase 1: a generous drain deadline: in-flight jobs finish.
    let setup = Setup::new("sigterm", "max_batch = 2\ndrain_timeout_s = 120.0");
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let mut serve = setup.start("serve-1");
    let ids: Vec<String> = (0..6).map(|i| format!("term-{i}")).collect();
    publish_jobs(&topo, &ids).await;
    events
        .until(Duration::from_secs(120), "denoising under way", |all| {
            denoising(all, 2)
        })
        .await;
    signal(&serve, Signal::SIGTERM);
    let (st, took) = wait_exit(&mut serve, Duration::from_secs(120));
    assert!(st.success(), "exit {st:?}:\n{}", serve.log_text());
    assert!(serve.log_text().contains("drained"), "{}", serve.log_text());
    // Collect what the drain finished.
    events.settle(Duration::from_millis(500)).await;
    let drained = completed_per_job(&events).len();
    eprintln!("SIGTERM: drained {drained} jobs in {took:?}");
    assert!(drained >= 1);
    drop(serve);

    // Phase 2: a drain deadline too short to finish: jobs are handed back.
    let cfg = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("drain_timeout_s = 120.0", "drain_timeout_s = 0.2");
    std::fs::write(&setup.config, cfg).unwrap();
    let mut serve = setup.start("serve-2");
    events
        .until(
            Duration::from_secs(120),
            "denoising under way again",
            |all| {
                all.iter()
                    .filter(|(_, e)| matches!(e.event, JobEvent::Accepted { .. }))
                    .count()
                    > drained
            },
        )
        .await;
    signal(&serve, Signal::SIGTERM);
    let (st, _) = wait_exit(&mut serve, Duration::from_secs(30));
    assert!(st.success(), "exit {st:?}:\n{}", serve.log_text());
    assert!(
        serve.log_text().contains("drain timeout"),
        "{}",
        serve.log_text()
    );
    drop(serve);

    // Phase 3: a fresh process finishes the rest; nothing lost or doubled.
    let mut serve = setup.start("serve-3");
    wait_all_completed(&mut events, &ids).await;
    signal(&serve, Signal::SIGTERM);
    let (st, _) = wait_exit(&mut serve, Duration::from_secs(60));
    assert!(st.success());
    let per_job = completed_per_job(&events);
    for id in &ids {
        assert_eq!(per_job.get(id), Some(&1), "{id}: {per_job:?}");
    }
    assert_eq!(setup.outputs().len(), ids.len());
    let conn = broker().await;
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(depth(&ch, &topo.jobs).await, 0);
    cleanup(&ch, &topo).await;
}
