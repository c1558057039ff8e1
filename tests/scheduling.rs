//! The scheduler inside a real `vidflow serve` (tiny model, real broker):
//! a premium job that finds every slot taken by free jobs starts within a
//! step and a checkpoint write, the free job it displaced resumes and
//! delivers the bytes of an uninterrupted run, and every job is charged
//! once; and the fleet simulator, given the arrival trace and the step
//! costs measured in such a run, predicts each tier's mean queue wait.

mod support;

use std::time::{Duration, Instant};

use support::*;
use vidflow_connectors::amqp;
use vidflow_operators::event::{JobEvent, Stage};

fn record(setup: &Setup, tenant: &str, job: &str) -> serde_json::Value {
    let p = setup.out.join(format!("jobs/{tenant}/{job}.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn denoise_steps<'a>(
    all: &'a [(Instant, vidflow_operators::event::EventEnvelope)],
    job: &'a str,
) -> impl Iterator<Item = (Instant, usize)> + 'a {
    all.iter().filter_map(move |(t, e)| match &e.event {
        JobEvent::Progress {
            job_id,
            stage: Stage::Denoise,
            step,
            batch,
            ..
        } if job_id == job && *batch > 0 => Some((*t, *step)),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_premium_job_preempts_a_free_one_which_resumes_identically_and_each_is_charged_once() {
    // Two slots, both free jobs; preempt even if a slot would free soon.
    let setup = Setup::new(
        "preempt",
        "max_batch = 2\ncheckpoint_every = 10\n\n[scheduler]\nslots = 2\n\n\
         [scheduler.policy]\npreempt_wait_s = 0.0\n",
    );
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let free: Vec<_> = ["free-1", "free-2"]
        .iter()
        .map(|id| spec(id, "acme", "free", "512x512", 33, 60))
        .collect();
    let vip = spec("vip-1", "globex", "premium", "256x256", 9, 8);
    let mut all = free.clone();
    all.push(vip.clone());
    let reference = reference_sha(&all);
    let serve = setup.start("serve");
    for j in &free {
        amqp::publish_job(&ch, &topo, j, &amqp_user())
            .await
            .unwrap();
    }
    // Both free jobs are denoising (a few steps each).
    events
        .until(Duration::from_secs(120), "both free jobs running", |all| {
            ["free-1", "free-2"]
                .iter()
                .all(|id| denoise_steps(all, id).any(|(_, s)| s >= 3))
        })
        .await;
    let steps: Vec<Instant> = denoise_steps(&events.all, "free-1")
        .map(|(t, _)| t)
        .collect();
    let step = steps
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let t0 = Instant::now();
    amqp::publish_job(&ch, &topo, &vip, &amqp_user())
        .await
        .unwrap();
    events
        .until(
            Duration::from_secs(60),
            "the premium job's first step",
            |all| denoise_steps(all, "vip-1").next().is_some(),
        )
        .await;
    let started = denoise_steps(&events.all, "vip-1").next().unwrap().0 - t0;
    events
        .until(Duration::from_secs(240), "every completion", |all| {
            all.iter().filter(|(_, e)| is_completed(&e.event)).count() == 3
        })
        .await;
    let log = serve.log_text();
    serve.terminate();
    eprintln!(
        "premium job's first step {:.3} s after its publish; a free job's step {:.3} s",
        started.as_secs_f64(),
        step.as_secs_f64()
    );
    // One step of the free pair plus a checkpoint write, with room for
    // the broker, admission and the prompt encode; without preemption it
    // would wait for a free job's remaining ~55 steps.
    assert!(
        started < step + Duration::from_secs(2),
        "premium waited {started:?} (a step is {step:?}); log:\n{log}"
    );
    assert!(log.contains("preempted at a step boundary"), "{log}");
    // The displaced job was told it waits again, then went on.
    let queued_after: Vec<String> = events
        .all
        .iter()
        .filter_map(|(t, e)| match &e.event {
            JobEvent::Progress {
                job_id,
                stage: Stage::Queued,
                step,
                ..
            } if *t > t0 && *step > 0 => Some(job_id.clone()),
            _ => None,
        })
        .collect();
    assert!(
        !queued_after.is_empty(),
        "no queued event after the preemption"
    );
    let victim = queued_after[0].clone();
    // Bytes of an uninterrupted run, for every job.
    for (_, e) in &events.all {
        if let JobEvent::Completed { job_id, sha256, .. } = &e.event {
            assert_eq!(
                sha256, &reference[job_id],
                "{job_id}: output differs from an uninterrupted run"
            );
        }
    }
    let rec = record(&setup, "acme", &victim);
    assert_eq!(rec["metrics"]["preemptions"], 1, "{rec}");
    assert!(rec["billing"].is_object(), "{rec}");
    let vip_rec = record(&setup, "globex", "vip-1");
    assert_eq!(vip_rec["metrics"]["preemptions"], 0);
    // Charged once each: three ledger rows in the billing Parquet.
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_vidflow"))
        .args(["report", "billing", "--json", "--dir"])
        .arg(setup.out.join("analytics"))
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&r.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&r.stderr)));
    assert_eq!(report["total"]["jobs_charged"], 3, "{report}");
    assert_eq!(wait_empty(&ch, &topo.jobs).await, 0);
    cleanup(&ch, &topo).await;
}
