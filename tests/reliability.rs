//! Checkpoints and poison jobs through the real `vidflow serve`: a job
//! killed mid-denoise resumes from its newest valid checkpoint (a corrupt
//! one is detected and skipped) and its MP4 is byte-identical to an
//! uninterrupted run; a job that keeps killing its worker is dead-lettered
//! after K attempts (recorded as failed, never billed) while other jobs complete.

mod support;

use std::time::Duration;

use support::*;
use vidflow_connectors::amqp;
use vidflow_operators::event::JobEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_newest_checkpoint_is_skipped_and_the_output_is_identical() {
    let setup = Setup::new("corrupt", "max_batch = 1\ncheckpoint_every = 5");
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let job = spec("ck-1", "acme", "standard", "256x256", 17, 30);
    let reference = reference_sha(std::slice::from_ref(&job));

    // Killed right after its 17th step: checkpoints 5, 10, 15 were
    // written; the newest two (10, 15) are kept.
    let mut first = setup.start_with_env("serve-1", &[("VIDFLOW_FAULT", "mid_step@17")]);
    amqp::publish_job(&ch, &topo, &job, &amqp_user())
        .await
        .unwrap();
    wait_exit(&mut first, Duration::from_secs(120));
    let ck_dir = setup.out.join("checkpoints/acme/ck-1");
    let mut names: Vec<String> = std::fs::read_dir(&ck_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ckpt"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["step-00010.ckpt", "step-00015.ckpt"],
        "storage is bounded to 2"
    );
    // Corrupt the newest: flip bytes in its latent data.
    let newest = ck_dir.join("step-00015.ckpt");
    let mut b = std::fs::read(&newest).unwrap();
    let n = b.len();
    for x in &mut b[n - 64..] {
        *x ^= 0x5a;
    }
    std::fs::write(&newest, b).unwrap();

    let second = setup.start("serve-2");
    events
        .until(Duration::from_secs(120), "the completion", |all| {
            all.iter()
                .any(|(_, e)| matches!(e.event, JobEvent::Completed { .. }))
        })
        .await;
    let log = second.log_text();
    second.terminate();
    assert!(log.contains("checksum mismatch"), "{log}");
    assert!(log.contains("from_step=10"), "{log}");
    let sha = events
        .all
        .iter()
        .find_map(|(_, e)| match &e.event {
            JobEvent::Completed { sha256, .. } => Some(sha256.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        sha, reference["ck-1"],
        "resumed output differs from an uninterrupted run"
    );
    let left: Vec<String> = std::fs::read_dir(&ck_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !ck_dir.exists(),
        "checkpoints are deleted when the job completes; left: {left:?}"
    );
    cleanup(&ch, &topo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_job_is_dead_lettered_after_k_attempts_and_not_billed() {
    let setup = Setup::new("poison", "max_batch = 2\nmax_attempts = 2");
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let poison = spec("poison-1", "acme", "standard", "256x256", 9, 2);
    amqp::publish_job(&ch, &topo, &poison, &amqp_user())
        .await
        .unwrap();
    // Two runs, each killed when the job reaches decode.
    for i in 0..2 {
        let mut s = setup.start_with_env(&format!("crash-{i}"), &[("VIDFLOW_FAULT", "decode")]);
        wait_exit(&mut s, Duration::from_secs(120));
    }
    // The third delivery finds 2 cut runs: dead letter, a failed record
    // and no ledger row.
    let serve = setup.start("serve");
    events
        .until(Duration::from_secs(60), "the poison job's failure", |all| {
            all.iter()
                .any(|(_, e)| matches!(e.event, JobEvent::Failed { .. }))
        })
        .await;
    // Other jobs are unaffected.
    let others: Vec<String> = (0..3).map(|i| format!("ok-{i}")).collect();
    for id in &others {
        amqp::publish_job(
            &ch,
            &topo,
            &spec(id, "acme", "standard", "256x256", 9, 2),
            &amqp_user(),
        )
        .await
        .unwrap();
    }
    let want = others.clone();
    events
        .until(Duration::from_secs(120), "the other jobs", move |all| {
            want.iter().all(|id| {
                all.iter().any(|(_, e)| {
                    matches!(e.event, JobEvent::Completed { .. }) && e.event.job_id() == id
                })
            })
        })
        .await;
    serve.terminate();
    let failed = events
        .all
        .iter()
        .find_map(|(_, e)| match &e.event {
            JobEvent::Failed { job_id, error, .. } => Some((job_id.clone(), error.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(failed.0, "poison-1");
    assert!(
        failed.1.contains("poison job") && failed.1.contains("2 attempts"),
        "{}",
        failed.1
    );
    assert_eq!(depth(&ch, &topo.dead).await, 1, "dead-lettered");
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(setup.out.join("jobs/acme/poison-1.json")).unwrap())
            .unwrap();
    assert_eq!(rec["status"], "failed", "{rec}");
    assert!(rec["billing"].is_null(), "{rec}");
    assert_eq!(depth(&ch, &topo.jobs).await, 0);
    cleanup(&ch, &topo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_job_is_retried_from_its_checkpoint_and_completes_identically() {
    // 1 s per attempt for standard jobs; each retry resumes where the last
    // checkpoint left it, so a job longer than the timeout still finishes.
    let setup = Setup::new(
        "timeout",
        "max_batch = 1\ncheckpoint_every = 3\nmax_attempts = 30\n\n[engine.timeouts]\nstandard = 1.0\n",
    );
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let job = spec("slowpoke", "acme", "standard", "512x512", 17, 120);
    let reference = reference_sha(std::slice::from_ref(&job));
    let serve = setup.start("serve");
    amqp::publish_job(&ch, &topo, &job, &amqp_user())
        .await
        .unwrap();
    events
        .until(Duration::from_secs(300), "the completion", |all| {
            all.iter().any(|(_, e)| e.event.is_terminal())
        })
        .await;
    let log = serve.log_text();
    serve.terminate();
    let retries = log.matches("handed back for a retry").count();
    let resumes = log.matches("resumed from checkpoint").count();
    eprintln!("timeout: {retries} retries, {resumes} resumes");
    // How many retries it takes depends on the machine's speed (a fast one
    // finishes in two runs); one is what proves the resume.
    assert!(retries >= 1, "{log}");
    assert!(resumes >= 1, "{log}");
    let done = events
        .all
        .iter()
        .find_map(|(_, e)| match &e.event {
            JobEvent::Completed { sha256, .. } => Some(sha256.clone()),
            _ => None,
        })
        .expect("the job completed");
    assert_eq!(done, reference["slowpoke"]);
    assert_eq!(depth(&ch, &topo.jobs).await, 0);
    cleanup(&ch, &topo).await;
}
