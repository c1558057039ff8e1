//! The PostgreSQL state backend against a real server (`scripts/postgres.sh`,
//! started by `scripts/test.sh`; `VIDFLOW_TEST_DATABASE_URL` names it). Each test
//! makes a database of its own. Several `Pg` values with different node
//! names stand for the nodes of a fleet: they share nothing but the
//! database, as separate processes would.

use std::sync::Arc;
use std::time::Duration;

use vidflow_connectors::state::postgres::Pg;
use vidflow_connectors::state::{Admit, Backend, StateConfig, StateStore};
use vidflow_job::billing::ResClass;
use vidflow_job::id::JobKey;
use vidflow_job::ledger::{BillingRow, EntryKind, JobRecord};
use vidflow_job::quota::{Ask, QuotaConfig, QuotaError};
use vidflow_job::{JobStatus, Tier};

fn admin_url() -> String {
    std::env::var("VIDFLOW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgresql://vidflow@127.0.0.1:55432/vidflow".into())
}

/// A fresh database on the test server; returns its URL.
async fn fresh_db(name: &str) -> String {
    let admin = admin_url();
    let db = format!("t_{name}_{}", std::process::id());
    vidflow_connectors::state::postgres::create_database(&admin, &db)
        .await
        .unwrap_or_else(|e| {
            panic!("no PostgreSQL at {admin} ({e}): run through scripts/test.sh or start scripts/postgres.sh")
        })
}

fn quotas() -> Arc<QuotaConfig> {
    Arc::new(
        QuotaConfig::parse(
            r#"
[default]
max_concurrent = 10
monthly_video_seconds = 100.0
max_resolution = "1080p"
tiers = ["premium", "standard", "free"]
"#,
            "test",
        )
        .unwrap(),
    )
}

async fn node(url: &str, name: &str, ttl_s: f64) -> Pg {
    let cfg = StateConfig {
        backend: Backend::Postgres,
        url: url.into(),
        pool_size: 8,
        node: name.into(),
        lease_ttl_s: ttl_s,
    };
    Pg::connect(&cfg, quotas()).await.unwrap()
}

fn record(tenant: &str, job_id: &str, commit_id: &str, ms: u64) -> JobRecord {
    JobRecord {
        job_id: job_id.into(),
        tenant: tenant.into(),
        status: JobStatus::Completed,
        error: None,
        stage: None,
        cancelled_at: None,
        key: Some(format!("{tenant}/2026-12-06/{job_id}.mp4")),
        size: Some(10),
        sha256: Some("ab".into()),
        untrained: true,
        finished_ms: 1_796_600_000_000,
        timings: vec![],
        batch_sizes: vec![1],
        commit_id: commit_id.into(),
        billing: Some(BillingRow {
            job_id: job_id.into(),
            tenant: tenant.into(),
            tier: "standard".into(),
            resolution_class: "480p".into(),
            width: 256,
            height: 256,
            kind: EntryKind::Charge,
            billed_ms: ms,
            unit_micro_per_s: 1000,
            amount_micro: ms as i64,
            price_version: "t".into(),
            accelerator_s: 0.0,
            compute_cost_micro: 0,
            ts_ms: 1_796_600_000_000,
        }),
        metrics: None,
        job: None,
        safety: vec![],
    }
}

async fn db(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}

async fn ledger_rows(url: &str, tenant: &str) -> (i64, i64) {
    let c = db(url).await;
    let r = c
        .query_one(
            "SELECT count(*), coalesce(sum(amount_micro), 0)::bigint FROM ledger WHERE tenant = $1",
            &[&tenant],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_commit_wins_across_nodes_and_is_charged_once() {
    let url = fresh_db("commit").await;
    let nodes: Vec<Arc<Pg>> = vec![
        Arc::new(node(&url, "a", 15.0).await),
        Arc::new(node(&url, "b", 15.0).await),
        Arc::new(node(&url, "c", 15.0).await),
    ];
    // 30 commits of the same job from three nodes at once.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let n = nodes[i % 3].clone();
        tasks.push(tokio::spawn(async move {
            n.commit_record(&record("acme", "job-1", &format!("c{i}"), 2000))
                .await
                .unwrap()
        }));
    }
    let mut won = Vec::new();
    let mut stands = std::collections::BTreeSet::new();
    for t in tasks {
        let c = t.await.unwrap();
        stands.insert(c.record.commit_id.clone());
        if c.first {
            won.push(c.record.commit_id.clone());
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    assert_eq!(stands.into_iter().collect::<Vec<_>>(), won);
    assert_eq!(ledger_rows(&url, "acme").await, (1, 2000));
    // Per tenant: globex's job-1 is another job.
    let c = nodes[0]
        .commit_record(&record("globex", "job-1", "g", 1000))
        .await
        .unwrap();
    assert!(c.first);
    let s = StateStore::Postgres(nodes[1].clone());
    assert_eq!(
        s.read_record("acme", "job-1")
            .await
            .unwrap()
            .unwrap()
            .commit_id,
        won[0]
    );
    assert!(s.read_record("acme", "job-2").await.unwrap().is_none());
    assert_eq!(s.list_records("globex").await.unwrap().len(), 1);
    // Each node recovers only the records it won.
    let mut owned = 0;
    for n in &nodes {
        owned += n.records_of_node().await.unwrap().len();
    }
    assert_eq!(owned, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attempts_are_counted_exactly_under_concurrency() {
    let url = fresh_db("attempts").await;
    let a = Arc::new(node(&url, "a", 15.0).await);
    // 40 admissions of one job at once (the node holds its lease, so each
    // runs): every count before is seen once.
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let n = a.clone();
        tasks.push(tokio::spawn(
            async move { runs_before(&n, "acme", "j").await },
        ));
    }
    let mut seen: Vec<u32> = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, (0..40).collect::<Vec<_>>());
    a.unbump_attempts("acme", "j").await.unwrap();
    assert_eq!(runs_before(&a, "acme", "j").await, 39);
    assert_eq!(runs_before(&a, "globex", "j").await, 0);
    // The commit ends the count (and the lease).
    a.commit_record(&record("acme", "j", "c", 1000))
        .await
        .unwrap();
    let c = db(&url).await;
    let left: i64 = c
        .query_one(
            "SELECT (SELECT count(*) FROM job_attempts WHERE tenant = 'acme')
                  + (SELECT count(*) FROM job_leases WHERE tenant = 'acme')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

/// The quota verdict of an admission (the one call the serving path makes).
async fn reserve(n: &Pg, a: &Ask<'_>) -> Result<(), QuotaError> {
    match n.admit(a).await.unwrap() {
        Admit::Run { .. } => Ok(()),
        Admit::Refused(q) => Err(q),
        other => panic!("{}: {other:?}", a.job_id),
    }
}

/// An admission's lease verdict: `None` when this node may run the job,
/// else the node holding it.
async fn lease(n: &Pg, k: &JobKey) -> Option<String> {
    match n.admit(&ask(&k.tenant, &k.job_id, 1)).await.unwrap() {
        Admit::Run { .. } => None,
        Admit::Leased(holder) => Some(holder),
        other => panic!("{k}: {other:?}"),
    }
}

/// An admission's count of earlier runs.
async fn runs_before(n: &Pg, tenant: &str, job_id: &str) -> u32 {
    match n.admit(&ask(tenant, job_id, 1)).await.unwrap() {
        Admit::Run { runs_before } => runs_before,
        other => panic!("{job_id}: {other:?}"),
    }
}

fn ask<'a>(tenant: &'a str, job_id: &'a str, ms: u64) -> Ask<'a> {
    Ask {
        tenant,
        job_id,
        tier: Tier::Standard,
        class: ResClass::of(256, 256),
        video_ms: ms,
        month: "2026-12",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reservations_hold_the_limits_across_nodes() {
    let url = fresh_db("quota").await;
    let nodes: Vec<Arc<Pg>> = vec![
        Arc::new(node(&url, "a", 15.0).await),
        Arc::new(node(&url, "b", 15.0).await),
        Arc::new(node(&url, "c", 15.0).await),
    ];
    // 100 jobs of one tenant reserve at once through three nodes: the
    // limit is 10 concurrent.
    let mut tasks = Vec::new();
    for i in 0..100 {
        let n = nodes[i % 3].clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("j{i}");
            (id.clone(), reserve(&n, &ask("acme", &id, 1000)).await)
        }));
    }
    let mut admitted = Vec::new();
    for t in tasks {
        let (id, r) = t.await.unwrap();
        match r {
            Ok(()) => admitted.push(id),
            Err(QuotaError::Concurrent { limit: 10, .. }) => {}
            Err(e) => panic!("{id}: {e}"),
        }
    }
    assert_eq!(admitted.len(), 10, "{admitted:?}");
    let s = StateStore::Postgres(nodes[0].clone());
    assert_eq!(s.usage("acme", "2026-12").await.unwrap(), (10, 0));
    // A duplicate delivery of an admitted job, on the node holding its
    // lease, gets through again.
    let first_node: usize = admitted[0][1..].parse::<usize>().unwrap() % 3;
    assert_eq!(
        reserve(&nodes[first_node], &ask("acme", &admitted[0], 1000)).await,
        Ok(())
    );
    // Commit moves the seconds to the ledger; finish frees the slot.
    for (i, id) in admitted.iter().enumerate() {
        nodes[i % 3]
            .commit_record(&record("acme", id, &format!("c-{id}"), 1000))
            .await
            .unwrap();
        nodes[(i + 1) % 3]
            .finish(&JobKey::new("acme", id.as_str()))
            .await
            .unwrap();
    }
    assert_eq!(s.usage("acme", "2026-12").await.unwrap(), (0, 10_000));
    // Monthly seconds: 100 s allowed, 10 used; 9 jobs of 10 s fit, the
    // tenth does not (while the nine are held).
    let mut ok = 0;
    for i in 0..10 {
        match reserve(&nodes[i % 3], &ask("acme", &format!("m{i}"), 10_000)).await {
            Ok(()) => ok += 1,
            Err(QuotaError::MonthlySeconds { used_ms, .. }) => assert_eq!(used_ms, 10_000),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 9);
    // Shape limits need no count: a 4k job is refused by the class.
    let mut big = ask("acme", "big", 1000);
    big.class = ResClass::of(3840, 2160);
    assert!(matches!(
        reserve(&nodes[0], &big).await,
        Err(QuotaError::Resolution { .. })
    ));
    // Another tenant has its own count.
    assert_eq!(reserve(&nodes[1], &ask("globex", "j0", 1000)).await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_is_held_renewed_and_taken_over_once_it_lapses() {
    let url = fresh_db("lease").await;
    let a = node(&url, "a", 1.0).await;
    let b = node(&url, "b", 1.0).await;
    let k = JobKey::new("acme", "long");
    assert_eq!(lease(&a, &k).await, None);
    assert_eq!(lease(&a, &k).await, None, "again, by its holder");
    assert_eq!(lease(&b, &k).await, Some("a".into()));
    // Renewed past its first lifetime, it stays a's.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(a.heartbeat(std::slice::from_ref(&k)).await.unwrap(), 1);
    }
    assert_eq!(lease(&b, &k).await, Some("a".into()));
    // a stops renewing (it died): after the lifetime b takes it over.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(lease(&b, &k).await, None);
    // a's late release or heartbeat does not touch b's lease.
    a.release_lease(&k).await.unwrap();
    assert_eq!(a.heartbeat(std::slice::from_ref(&k)).await.unwrap(), 0);
    assert_eq!(lease(&a, &k).await, Some("b".into()));
    // b restarts: it runs nothing yet, so its old leases go.
    drop(b);
    let b2 = node(&url, "b", 1.0).await;
    assert_eq!(b2.forget_my_leases().await.unwrap(), 1);
    assert_eq!(lease(&a, &k).await, None);
    // Migrations are applied once however many nodes connect.
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let n: i64 = c
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_live_in_the_database_and_revocations_reach_every_node() {
    let url = fresh_db("keys").await;
    let a = node(&url, "a", 15.0).await;
    let b = node(&url, "b", 15.0).await;
    let k = a.add_key("acme", None).await.unwrap();
    let old = a.add_key("acme", Some("2020-01-01")).await.unwrap();
    assert!(
        a.add_key("jobs", None).await.is_err(),
        "a reserved tenant name"
    );
    assert!(
        a.add_key("acme", Some("soon")).await.is_err(),
        "a bad expiry"
    );
    // b sees a's keys (as a KeyRing's shared source).
    let ring = vidflow_connectors::auth::KeyRing::load(vec![], None).unwrap();
    assert!(ring.set_shared(b.api_keys().await.unwrap()).unwrap());
    assert_eq!(ring.current().tenant(&k), Some("acme"));
    assert_eq!(ring.current().tenant(&old), None, "expired");
    assert!(
        !ring.set_shared(b.api_keys().await.unwrap()).unwrap(),
        "unchanged"
    );
    assert_eq!(b.revoke_key(&k).await.unwrap(), 1);
    assert_eq!(b.revoke_key(&k).await.unwrap(), 0);
    assert!(ring.set_shared(a.api_keys().await.unwrap()).unwrap());
    assert_eq!(ring.current().tenant(&k), None, "revoked");
}
