//! The fault-injection harness: a real `vidflow serve` (tiny model) and a
//! real RabbitMQ, 50 jobs, the worker killed at random points (mid-step,
//! checkpoint write, decode, output write, between commit and ack) until
//! it has died at least 12 times, one broker restart, object-store write
//! failures for checkpoints in one run, and a corrupted checkpoint. Then:
//! nothing lost, no duplicate output or charge, every resumed job
//! recomputed at most N steps and rendered the same bytes as an
//! uninterrupted run. Its own test binary: it restarts the broker.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::*;
use vidflow_connectors::amqp;
use vidflow_connectors::lapin::options::{
    BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions,
};
use vidflow_connectors::lapin::types::FieldTable;
use vidflow_operators::event::{EventEnvelope, JobEvent};

const JOBS: usize = 50;
const KILLS: usize = 12;
const EVERY: usize = 5;
const STEPS: usize = 20;

fn broker_script(cmd: &str) {
    let st = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/broker.sh"))
        .arg(cmd)
        .status()
        .unwrap();
    assert!(st.success(), "broker.sh {cmd} failed");
}

async fn durable_events(topo: &amqp::Topology) -> String {
    let conn = broker().await;
    let ch = conn.create_channel().await.unwrap();
    topo.declare(&ch).await.unwrap();
    let q = format!("{}.chaos-events", topo.jobs);
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        q.as_str().into(),
        topo.events.as_str().into(),
        "job.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    q
}

async fn drain_events(q: &str) -> Vec<EventEnvelope> {
    let conn = broker().await;
    let ch = conn.create_channel().await.unwrap();
    let mut c = ch
        .basic_consume(
            q.into(),
            "chaos".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(2), c.next()).await {
        out.push(serde_json::from_slice(&d.data).unwrap());
    }
    out
}

fn completed_records(setup: &Setup) -> usize {
    std::fs::read_dir(setup.out.join("jobs/acme"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    std::fs::read(e.path())
                        .ok()
                        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                        .is_some_and(|v| v["status"] == "completed")
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_nothing_lost_nothing_doubled() {
    let setup = Setup::new(
        "chaos",
        &format!("max_batch = 4\ncheckpoint_every = {EVERY}\nmax_attempts = 1000"),
    );
    let topo = setup.topo();
    let events_q = durable_events(&topo).await;
    let specs: Vec<_> = (0..JOBS)
        .map(|i| {
            spec(
                &format!("chaos-{i:02}"),
                "acme",
                "standard",
                "256x256",
                17,
                STEPS as u32,
            )
        })
        .collect();
    let reference = reference_sha(&specs);
    {
        let conn = broker().await;
        let ch = amqp::confirm_channel(&conn).await.unwrap();
        for s in &specs {
            amqp::publish_job(&ch, &topo, s, &amqp_user())
                .await
                .unwrap();
        }
    }
    let t0 = Instant::now();
    let mut kills = 0;
    let mut runs = 0;
    let mut broker_restarted = false;
    let mut corrupted = None;
    // When checkpoint writes were failing (run 3): resumes after it may
    // recompute more than N steps, by design.
    let mut fail_window = (0u64, 0u64);
    while kills < KILLS {
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "chaos phase too slow ({kills} kills)"
        );
        if completed_records(&setup) == JOBS {
            break; // everything finished before enough kills: still checked below
        }
        runs += 1;
        let mut env = vec![("VIDFLOW_FAULT", "random:0.05")];
        let run_start = vidflow_operators::event::now_ms();
        if runs == 3 {
            env.push(("VIDFLOW_FAIL", "checkpoint_write_error"));
        }
        let mut s = setup.start_with_env(&format!("run-{runs}"), &env);
        if kills == 5 && !broker_restarted {
            tokio::time::sleep(Duration::from_millis(500)).await;
            broker_script("stop");
            broker_script("start");
            broker_restarted = true;
        }
        let started = Instant::now();
        loop {
            if s.child.try_wait().unwrap().is_some() {
                kills += 1;
                break;
            }
            if completed_records(&setup) == JOBS || started.elapsed() > Duration::from_secs(120) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(s);
        if runs == 3 {
            fail_window = (run_start, vidflow_operators::event::now_ms());
        }
        if kills == 7 && corrupted.is_none() {
            // Corrupt the newest checkpoint of some unfinished job.
            let root = setup.out.join("checkpoints/acme");
            if let Ok(rd) = std::fs::read_dir(&root) {
                for job in rd.flatten() {
                    let mut files: Vec<_> = std::fs::read_dir(job.path())
                        .unwrap()
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
                        .collect();
                    files.sort();
                    if let Some(newest) = files.last() {
                        let mut b = std::fs::read(newest).unwrap();
                        let n = b.len();
                        b[n - 1] ^= 0xff;
                        std::fs::write(newest, b).unwrap();
                        corrupted = Some(job.file_name().to_string_lossy().into_owned());
                        break;
                    }
                }
            }
        }
    }
    // A last, healthy process finishes the rest.
    let s = setup.start("final");
    let t1 = Instant::now();
    while completed_records(&setup) < JOBS {
        assert!(
            t1.elapsed() < Duration::from_secs(600),
            "only {} of {JOBS} completed:\n{}",
            completed_records(&setup),
            s.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let final_log = s.log_text();
    let mut s = s;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(s.child.wait().unwrap().success());

    // Lost / duplicated outputs / wrong bytes.
    let outputs = setup.outputs();
    let mut per_job: HashMap<String, usize> = HashMap::new();
    let mut wrong = Vec::new();
    for p in &outputs {
        let id = p.file_stem().unwrap().to_string_lossy().into_owned();
        *per_job.entry(id.clone()).or_default() += 1;
        let sha = vidflow_connectors::store::sha256_hex(&std::fs::read(p).unwrap());
        if reference.get(&id) != Some(&sha) {
            wrong.push(id);
        }
    }
    let lost = JOBS - completed_records(&setup);
    let dup_outputs = per_job.values().filter(|&&n| n > 1).count();
    // Charges: one ledger row per job in the billing Parquet.
    let r = Command::new(env!("CARGO_BIN_EXE_vidflow"))
        .args(["report", "billing", "--json", "--dir"])
        .arg(setup.out.join("analytics"))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let charged = report["total"]["jobs_charged"].as_u64().unwrap() as usize;
    let dup_charges = charged.saturating_sub(JOBS);

    // Steps recomputed, from the durable event log: runs of a job start at
    // its `accepted` events; a run resumed at step S emits S+1 first.
    let evs = drain_events(&events_q).await;
    // Per job, per run: (first step - 1, last step, last event time).
    let mut runs_of: HashMap<String, Vec<(usize, usize, u64)>> = HashMap::new();
    for e in &evs {
        let id = e.event.job_id().to_string();
        match &e.event {
            JobEvent::Accepted { .. } => {
                runs_of
                    .entry(id)
                    .or_default()
                    .push((usize::MAX, 0, e.ts_ms))
            }
            JobEvent::Progress { step, batch, .. } if *batch > 0 => {
                if let Some(r) = runs_of.entry(id).or_default().last_mut() {
                    r.0 = r.0.min(step - 1);
                    r.1 = r.1.max(*step);
                    r.2 = e.ts_ms;
                }
            }
            _ => {}
        }
    }
    let mut resumed = 0;
    let mut worst = 0;
    let mut total_recomputed = 0;
    let mut excused = Vec::new();
    for (id, runs) in &runs_of {
        let runs: Vec<_> = runs.iter().filter(|r| r.0 != usize::MAX).collect();
        for w in runs.windows(2) {
            let (prev_end, start) = (w[0].1, w[1].0);
            let re = prev_end.saturating_sub(start);
            resumed += (start > 0) as usize;
            total_recomputed += re;
            let in_fail_window = w[0].2 >= fail_window.0 && w[0].2 <= fail_window.1;
            if in_fail_window || corrupted.as_deref() == Some(id.as_str()) {
                excused.push((id.clone(), re));
            } else {
                worst = worst.max(re);
            }
        }
    }
    let resumed_logged = final_log.matches("resumed from checkpoint").count();
    eprintln!(
        "chaos: jobs {JOBS}, completed {}, lost {lost}, duplicate outputs {dup_outputs}, duplicate charges {dup_charges}, \
         wrong bytes {}, worker kills {kills}, broker restarts {}, runs {runs}, resumed runs {resumed} \
         (final process logged {resumed_logged}), steps recomputed {total_recomputed} (worst {worst}, N = {EVERY}), \
         corrupted checkpoint of {corrupted:?}, recompute after injected checkpoint-write failures or corruption \
         {excused:?}, {:.0} s",
        JOBS - lost,
        wrong.len(),
        broker_restarted as u8,
        t0.elapsed().as_secs_f64()
    );
    assert!(kills >= 10, "only {kills} kills");
    assert!(broker_restarted);
    assert_eq!(lost, 0);
    assert_eq!(outputs.len(), JOBS);
    assert_eq!(dup_outputs, 0);
    assert_eq!(dup_charges, 0);
    assert_eq!(charged, JOBS);
    assert!(
        wrong.is_empty(),
        "outputs differ from the uninterrupted run: {wrong:?}"
    );
    assert!(
        worst <= EVERY,
        "a resumed job recomputed {worst} steps (N = {EVERY})"
    );
    assert!(
        resumed > 0,
        "no job resumed from a checkpoint: the run proves nothing"
    );
    let conn = broker().await;
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(depth(&ch, &topo.jobs).await, 0);
    assert_eq!(depth(&ch, &topo.dead).await, 0);
    let _ = ch
        .queue_delete(events_q.as_str().into(), Default::default())
        .await;
    cleanup(&ch, &topo).await;
}
