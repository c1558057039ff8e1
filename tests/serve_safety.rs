//! Safety through the real `vidflow serve` and RabbitMQ: an allowed job is
//! charged, a blocked prompt and a blocked video fail with their category
//! and no ledger row (nothing delivered, nothing billed), only the allowed
//! video is stored, and the `safety` Parquet table (read back with DuckDB)
//! holds every decision.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;
use vidflow_connectors::amqp;
use vidflow_operators::event::{JobEvent, Stage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_jobs_fail_with_their_category_are_not_billed_and_are_recorded() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // The shipped policy plus a tenant whose frame threshold fails any
    // video: the frame-check path with the real classifier.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("safety")).unwrap();
    // The files the policy names beside it: the names list and the head.
    for f in ["real_people.txt", "head.json"] {
        std::fs::copy(
            root.join("configs/safety").join(f),
            tmp.path().join("safety").join(f),
        )
        .unwrap();
    }
    let base = std::fs::read_to_string(root.join("configs/safety.toml")).unwrap();
    let policy = tmp.path().join("safety.toml");
    std::fs::write(
        &policy,
        format!("{base}\n[tenants.globex]\nvisual_threshold = 0.0000001\n"),
    )
    .unwrap();
    let setup = Setup::new(
        "safety",
        &format!(
            "max_batch = 2\n\n[safety]\npolicy = \"{}\"\n",
            policy.display()
        ),
    );
    let topo = setup.topo();
    let mut events = Events::follow(&topo).await;
    let serve = setup.start("serve");
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let mut ok = spec("s-ok", "acme", "standard", "256x256", 9, 2);
    ok.prompt = "a lighthouse on a cliff at sunset".into();
    let mut bad = spec("s-prompt", "acme", "standard", "256x256", 9, 2);
    bad.prompt = "hardcore porn with full nudity".into();
    let mut deep = spec("s-person", "acme", "standard", "256x256", 9, 2);
    deep.prompt = "taylor swift naked in a hotel room".into();
    let mut vis = spec("s-video", "globex", "standard", "256x256", 9, 2);
    vis.prompt = "a lighthouse on a cliff at sunset".into();
    // A harmless prompt whose negative prompt steers away from clothes.
    let mut neg = spec("s-negative", "acme", "standard", "256x256", 9, 2);
    neg.prompt = "a woman standing on a beach".into();
    neg.negative_prompt = Some("blurry, cl0thes".into());
    for s in [&ok, &bad, &deep, &vis, &neg] {
        amqp::publish_job(&ch, &topo, s, &amqp_user())
            .await
            .unwrap();
    }
    events
        .until(Duration::from_secs(300), "5 finished jobs", |all| {
            all.iter().filter(|(_, e)| e.event.is_terminal()).count() >= 5
        })
        .await;
    let failed = |id: &str| {
        events
            .all
            .iter()
            .find_map(|(_, e)| match &e.event {
                JobEvent::Failed {
                    job_id,
                    stage,
                    error,
                } if job_id == id => Some((*stage, error.clone())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{id} did not fail: {:?}", events.all))
    };
    let (st, err) = failed("s-prompt");
    assert_eq!(st, Stage::Safety);
    assert!(err.contains("category sexual"), "{err}");
    let (_, err) = failed("s-person");
    assert!(err.contains("category real_person"), "{err}");
    let (st, err) = failed("s-negative");
    assert_eq!(st, Stage::Safety);
    assert!(
        err.contains("category sexual") && err.contains("negative prompt"),
        "{err}"
    );
    // Its recorded decision names the text that triggered it.
    let dir = setup.out.join("safety/acme/s-negative");
    let rec = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(rec.len(), 1, "{rec:?}");
    let d: serde_json::Value = serde_json::from_str(&rec[0]).unwrap();
    assert_eq!(d["text"], "negative_prompt", "{d}");
    let (st, err) = failed("s-video");
    assert_eq!(st, Stage::Safety);
    assert!(
        err.contains("visual check") && err.contains("category sexual"),
        "{err}"
    );
    assert_eq!(events.count(|e| matches!(e, JobEvent::Completed { .. })), 1);
    // Only the allowed video was stored.
    let outs = setup.outputs();
    assert_eq!(outs.len(), 1, "{outs:?}");
    assert!(outs[0].to_string_lossy().contains("s-ok"));
    serve.terminate();

    let analytics = setup.out.join("analytics");
    let sql = |table: &str, select: &str| {
        let o = Command::new(python_bin())
            .args(["-c", &format!(
                "import duckdb, json; print(json.dumps(duckdb.sql(\"select {select} from read_parquet('{}/{table}/**/*.parquet', hive_partitioning=true) order by all\").fetchall(), default=str))",
                analytics.display()
            )])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    assert_eq!(
        sql("safety", "job_id, stage, decision, category"),
        serde_json::json!([
            ["s-negative", "prompt", "block", "sexual"],
            ["s-ok", "prompt", "allow", ""],
            ["s-ok", "visual", "allow", ""],
            ["s-person", "prompt", "block", "real_person"],
            ["s-prompt", "prompt", "block", "sexual"],
            ["s-video", "prompt", "allow", ""],
            ["s-video", "visual", "block", "sexual"],
        ])
    );
    // Scores and versions travel with each decision.
    let meta = sql(
        "safety",
        "count(*) filter (where policy_version like '2026-%' and model_versions <> '' and scores_json like '{%'), count(*)",
    );
    assert_eq!(meta, serde_json::json!([[7, 7]]));
    assert_eq!(
        sql("billing", "job_id, kind, amount_micro < 0"),
        serde_json::json!([["s-ok", "charge", false],])
    );
    cleanup(&ch, &topo).await;
}

fn python_bin() -> String {
    std::env::var("VIDFLOW_PYTHON").expect(
        "VIDFLOW_PYTHON is not set: run the tests through `bash scripts/test.sh` (it sets up DuckDB)",
    )
}
