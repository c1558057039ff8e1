//! Three `vidflow serve` nodes, each with its own scratch directory, sharing
//! the broker, a PostgreSQL database and an S3 prefix (all real, started by
//! scripts/test.sh).
//!
//! `a_fleet_loses_nothing_and_doubles_nothing`: a job killed on one node is
//! taken over by another once its lease lapses and resumes from the first
//! node's checkpoint; then 60 jobs from three tenants (ten published twice,
//! one submitted with the same client key through two nodes' APIs) while
//! nodes are SIGKILLed at random and abort at injected faults (including
//! between commit and ack). Nothing is lost, nothing is charged twice (in
//! SQL and in the Parquet every node copied to the bucket), no job is
//! announced completed twice as new,
//! and every output is byte-identical to an uninterrupted run.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use support::fleet::*;
use support::*;
use vidflow_connectors::amqp;
use vidflow_connectors::grpc::pb::job_service_client::JobServiceClient;
use vidflow_connectors::grpc::pb::SubmitRequest;
use vidflow_connectors::tonic::Request;
use vidflow_connectors::ObjectPath;
use vidflow_operators::event::JobEvent;
use vidflow_operators::JobSpec;

const EVERY: usize = 5;
const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const PER_TENANT: usize = 20;
const KILLS: usize = 6;

fn keyed<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

/// Whether a node has aborted between commit and ack yet (its log says so).
fn aborted_after_commit(fleet: &Fleet) -> bool {
    std::fs::read_dir(fleet.setup.tmp.path())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .any(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .contains("aborting at after_commit")
        })
}

async fn completed_in_db(c: &tokio_postgres::Client) -> i64 {
    c.query_one(
        "SELECT count(*) FROM job_records WHERE status = 'completed'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_loses_nothing_and_doubles_nothing() {
    let fleet = Fleet::new(
        "fleet",
        3,
        &format!("max_batch = 4\ncheckpoint_every = {EVERY}\nmax_attempts = 1000"),
        "",
    )
    .await;
    let topo = fleet.setup.topo();
    let mut events = Events::follow(&topo).await;
    let conn = broker().await;
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    let t0 = Instant::now();

    // 1. Takeover: nodes 0 and 1 are up; the one that takes a long job is
    //    killed after a checkpoint; the other gets the message back, waits
    //    out the dead node's lease and resumes from its checkpoint.
    let long = spec("long-1", "acme", "standard", "256x256", 17, 200);
    let mut pair = [fleet.start(0, "n0-a", &[]), fleet.start(1, "n1", &[])];
    amqp::publish_job(&ch, &topo, &long, &amqp_user())
        .await
        .unwrap();
    let step_of = |e: &JobEvent| match e {
        JobEvent::Progress {
            job_id,
            step,
            batch,
            ..
        } if job_id == "long-1" && *batch > 0 => Some(*step),
        _ => None,
    };
    events
        .until(Duration::from_secs(120), "long-1 past step 12", |all| {
            all.iter()
                .filter_map(|(_, e)| step_of(&e.event))
                .any(|s| s >= 12)
        })
        .await;
    let first = pair
        .iter()
        .position(|n| n.log_text().contains("job taken job_id=long-1"))
        .expect("a node took long-1");
    pair[first].child.kill().unwrap();
    pair[first].child.wait().unwrap();
    // The dead node's last events still in flight; the other node is
    // waiting on the lease meanwhile.
    events.collect_for(Duration::from_millis(300)).await;
    let killed_at = events.all.len();
    let a_last = events
        .all
        .iter()
        .filter_map(|(_, e)| step_of(&e.event))
        .max()
        .unwrap();
    events
        .until(
            Duration::from_secs(300),
            "long-1 completed on the other node",
            |all| {
                all.iter().any(|(_, e)| {
                matches!(&e.event, JobEvent::Completed { job_id, .. } if job_id == "long-1")
            })
            },
        )
        .await;
    let b_first = events.all[killed_at..]
        .iter()
        .filter_map(|(_, e)| step_of(&e.event))
        .min()
        .expect("long-1 finished before its node was killed: nothing was taken over");
    let recomputed = a_last.saturating_sub(b_first - 1);
    let [n0, n1] = pair;
    let (dead, other) = if first == 0 { (n0, n1) } else { (n1, n0) };
    drop(dead);
    let other_log = other.log_text();
    assert!(other_log.contains("taking the job over"), "{other_log}");
    assert!(other_log.contains("resumed from checkpoint"), "{other_log}");
    assert!(b_first > 1, "long-1 started again from scratch");
    assert!(
        recomputed <= EVERY,
        "the takeover recomputed {recomputed} steps (the first node reached {a_last}, the second began at {b_first})"
    );

    // 2. Sixty jobs through three nodes with kills and injected faults.
    let mut specs: Vec<JobSpec> = Vec::new();
    for t in TENANTS {
        for i in 0..PER_TENANT {
            specs.push(spec(
                &format!("f-{t}-{i:02}"),
                t,
                "standard",
                "256x256",
                9,
                20,
            ));
        }
    }
    let mut nodes: Vec<Option<Serve>> = vec![None, None, None];
    nodes[if first == 0 { 1 } else { 0 }] = Some(other);
    let refill = if first == 0 { 0 } else { 1 };
    nodes[refill] = Some(fleet.start(refill, "n-b", &[("VIDFLOW_FAULT", "random:0.03")]));
    nodes[2] = Some(fleet.start(2, "n2-a", &[("VIDFLOW_FAULT", "after_commit@3")]));
    for (i, s) in specs.iter().enumerate() {
        amqp::publish_job(&ch, &topo, s, &amqp_user())
            .await
            .unwrap();
        if i % 6 == 0 {
            // A client retry: the same job again, likely to another node.
            amqp::publish_job(&ch, &topo, s, &amqp_user())
                .await
                .unwrap();
        }
    }
    // The same client key through two nodes' APIs: one job.
    let grpc_spec = spec("", "acme", "standard", "256x256", 9, 20);
    let mut grpc_ids = Vec::new();
    for n in [1usize, 2] {
        let Some(addr) = nodes[n].as_ref().and_then(|s| s.grpc.clone()) else {
            continue;
        };
        let mut api = JobServiceClient::connect(addr).await.unwrap();
        let mut s = grpc_spec.clone();
        s.job_id = None;
        let r = api
            .submit(keyed(
                SubmitRequest {
                    spec: Some(vidflow_operators::proto::JobSpec::try_from(&s).unwrap()),
                    client_key: "order-7".into(),
                },
                KEY_A,
            ))
            .await
            .unwrap()
            .into_inner();
        grpc_ids.push(r.job_id);
    }
    assert!(!grpc_ids.is_empty());
    assert!(grpc_ids.windows(2).all(|w| w[0] == w[1]), "{grpc_ids:?}");
    let mut grpc_job = grpc_spec.clone();
    grpc_job.job_id = Some(grpc_ids[0].clone());
    let total = specs.len() as i64 + 2; // + long-1 + the gRPC job

    let pg = db(&fleet.db_url).await;
    let mut kills = 0usize;
    let mut restarts = 0usize;
    let mut next_kill = Instant::now() + Duration::from_secs(3);
    let mut victim = 0usize;
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "fleet too slow: {} of {total} completed",
            completed_in_db(&pg).await
        );
        if completed_in_db(&pg).await == total {
            break;
        }
        for (i, slot) in nodes.iter_mut().enumerate() {
            let dead = match slot {
                Some(s) => s.child.try_wait().unwrap().is_some(),
                None => true,
            };
            if dead {
                if slot.is_some() {
                    kills += 1; // an injected abort
                }
                restarts += 1;
                // Node 2 dies between commit and ack at its third commit
                // until that has happened once (a kill may come first).
                let env: &[(&str, &str)] = if i == 2 && !aborted_after_commit(&fleet) {
                    &[("VIDFLOW_FAULT", "after_commit@3")]
                } else if kills < KILLS {
                    &[("VIDFLOW_FAULT", "random:0.03")]
                } else {
                    &[]
                };
                *slot = Some(fleet.start(i, &format!("n{i}-r{restarts}"), env));
            }
        }
        if kills < KILLS && Instant::now() >= next_kill {
            victim = (victim + 1) % 3;
            if let Some(s) = nodes[victim].as_mut() {
                let _ = s.child.kill();
                let _ = s.child.wait();
            }
            nodes[victim] = None;
            kills += 1;
            next_kill = Instant::now() + Duration::from_secs(4);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    events.settle(Duration::from_secs(2)).await;
    for s in nodes.into_iter().flatten() {
        s.terminate();
    }
    let wall = t0.elapsed().as_secs_f64();
    // What the nodes did, from all their logs.
    let mut logs = String::new();
    for e in std::fs::read_dir(fleet.setup.tmp.path()).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "log") {
            logs.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    let count = |what: &str| logs.matches(what).count();
    let waited = count("job runs on another node: waiting");
    let taken_over = count("taking the job over");
    let replayed = count("redelivered finished job");
    let lost_race = count("already committed elsewhere");
    let after_commit = count("aborting at after_commit");
    let resumed = count("resumed from checkpoint");

    // Nothing lost, nothing charged twice (SQL).
    let mut all_specs = specs.clone();
    all_specs.push(long.clone());
    all_specs.push(grpc_job.clone());
    let rows = pg
        .query(
            "SELECT r.tenant, r.job_id, r.status, r.record->>'sha256', r.record->>'key',
                    (SELECT count(*) FROM ledger l WHERE l.tenant = r.tenant AND l.job_id = r.job_id)
               FROM job_records r",
            &[],
        )
        .await
        .unwrap();
    let mut rec: HashMap<(String, String), (String, String, String, i64)> = HashMap::new();
    for r in &rows {
        rec.insert(
            (r.get(0), r.get(1)),
            (r.get(2), r.get(3), r.get(4), r.get(5)),
        );
    }
    let lost: Vec<_> = all_specs
        .iter()
        .filter(|s| {
            rec.get(&(s.tenant.clone(), s.job_id.clone().unwrap()))
                .is_none_or(|r| r.0 != "completed")
        })
        .map(|s| s.job_id.clone().unwrap())
        .collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert_eq!(rec.len() as i64, total, "records of unknown jobs");
    assert!(
        rec.values().all(|r| r.3 == 1),
        "a job without exactly one charge"
    );
    let ledger: i64 = pg
        .query_one("SELECT count(*) FROM ledger", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ledger, total);
    // The month's usage kept beside the ledger adds up to it.
    let drift: i64 = pg
        .query_one(
            "SELECT count(*) FROM (
                 SELECT tenant, month, sum(billed_ms) AS ms FROM ledger GROUP BY 1, 2
             ) l FULL JOIN (
                 SELECT tenant, month, sum(used_ms) AS ms FROM quota_usage GROUP BY 1, 2
             ) u USING (tenant, month)
             WHERE l.ms IS DISTINCT FROM u.ms",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(drift, 0, "quota_usage differs from the ledger");
    let leases: i64 = pg
        .query_one("SELECT count(*) FROM job_leases", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(leases, 0, "leases left behind");

    // ...and in the Parquet, every node's parts together in the bucket.
    let charges = fleet.charges_in_s3();
    let doubled: Vec<_> = charges.iter().filter(|c| c.2 != 1).collect();
    assert!(doubled.is_empty(), "{doubled:?}");
    assert_eq!(charges.len() as i64, total);

    // No job announced completed twice as new; every job announced.
    let mut fresh: BTreeMap<String, usize> = BTreeMap::new();
    let mut any: BTreeMap<String, usize> = BTreeMap::new();
    for (_, e) in &events.all {
        if let JobEvent::Completed { job_id, .. } = &e.event {
            *any.entry(format!("{}/{job_id}", e.tenant)).or_default() += 1;
            if !e.replay {
                *fresh.entry(format!("{}/{job_id}", e.tenant)).or_default() += 1;
            }
        }
    }
    let twice: Vec<_> = fresh.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "completed twice as new: {twice:?}");
    assert_eq!(any.len() as i64, total, "jobs never announced completed");

    // Every output, read back from S3, is the uninterrupted run's.
    let reference = reference_sha(&all_specs);
    let objects = fleet.objects();
    let mut wrong = Vec::new();
    for s in &all_specs {
        let id = s.job_id.clone().unwrap();
        let r = &rec[&(s.tenant.clone(), id.clone())];
        let bytes = objects.get(&ObjectPath::from(r.2.as_str())).await.unwrap();
        let sha = vidflow_connectors::store::sha256_hex(&bytes);
        if sha != reference[&id] || sha != r.1 {
            wrong.push(id);
        }
    }
    assert!(
        wrong.is_empty(),
        "outputs differ from an uninterrupted run: {wrong:?}"
    );
    assert_eq!(depth(&ch, &topo.jobs).await, 0);
    assert_eq!(depth(&ch, &topo.dead).await, 0);
    assert!(
        after_commit > 0,
        "no node died between commit and ack: the run proves less"
    );
    eprintln!(
        "fleet: 3 nodes, {total} jobs ({} duplicate publishes, 1 client key through 2 APIs), \
         completed {}, lost 0, ledger rows {ledger}, Parquet charges {}, kills {kills} \
         (random SIGKILL + injected aborts, {after_commit} between commit and ack), restarts {restarts}; \
         deliveries that waited for another node's lease {waited}, takeovers {taken_over}, \
         resumed from a checkpoint {resumed}, redeliveries answered from the record {replayed}, \
         commits that lost the race {lost_race}; takeover recomputed {recomputed} steps \
         (the first node reached {a_last}, the second resumed at {b_first}, N = {EVERY}), {wall:.0} s",
        specs.len().div_ceil(6),
        rec.len(),
        charges.len()
    );
    cleanup(&ch, &topo).await;
}

/// How long a node takes to see a key change made in the database (it
/// reloads every second): the documented bound.
const KEY_DELAY: Duration = Duration::from_secs(3);

fn key_cmd(args: &[&str]) -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vidflow"))
        .arg("key")
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "vidflow key {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Calls List with `key` on every node until `accepted(code)` holds on all
/// of them; returns the time each took.
async fn until_all(apis: &[String], key: &str, accepted: bool) -> Vec<Duration> {
    use vidflow_connectors::grpc::pb::ListRequest;
    let mut took = Vec::new();
    for addr in apis {
        let mut api = JobServiceClient::connect(addr.clone()).await.unwrap();
        let t = Instant::now();
        loop {
            let ok = api.list(keyed(ListRequest { limit: 1 }, key)).await.is_ok();
            if ok == accepted {
                took.push(t.elapsed());
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{addr} never {} the key",
                if accepted { "accepted" } else { "refused" }
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_keys_hold_across_the_fleet() {
    let qdir = tempfile::tempdir().unwrap();
    let quotas = qdir.path().join("quotas.toml");
    std::fs::write(
        &quotas,
        "[default]\nmax_concurrent = 100\nmonthly_video_seconds = 1000000.0\n\
         max_resolution = \"4k\"\ntiers = [\"premium\", \"standard\", \"free\"]\n\n\
         [tenant.acme]\nmax_concurrent = 10\n\n[tenant.globex]\nmonthly_video_seconds = 2.0\n",
    )
    .unwrap();
    let fleet = Fleet::new(
        "fleetq",
        3,
        "max_batch = 4\ncheckpoint_every = 0",
        &format!("[billing]\nquotas = \"{}\"\n", quotas.display()),
    )
    .await;
    let topo = fleet.setup.topo();
    let mut events = Events::follow(&topo).await;
    let nodes: Vec<Serve> = (0..3)
        .map(|i| fleet.start(i, &format!("q{i}"), &[]))
        .collect();
    let apis: Vec<String> = nodes.iter().map(|n| n.grpc.clone().unwrap()).collect();

    // Keys: made and revoked in the database, seen by all three nodes.
    let key = key_cmd(&["new", "--tenant", "initech", "--database", &fleet.db_url]);
    let added = until_all(&apis, &key, true).await;
    let t = Instant::now();
    key_cmd(&["revoke", &key, "--database", &fleet.db_url]);
    let revoked: Vec<Duration> = until_all(&apis, &key, false)
        .await
        .into_iter()
        .map(|_| t.elapsed())
        .collect();
    assert!(
        revoked.iter().all(|d| *d <= KEY_DELAY),
        "revocation took {revoked:?} (documented: {KEY_DELAY:?})"
    );

    // Quotas: 100 submits of acme (10 concurrent allowed) and 20 of globex
    // (2 s a month) at once through the three APIs; the database is
    // sampled for acme's reservations meanwhile.
    let pg = db(&fleet.db_url).await;
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (url, on) = (fleet.db_url.clone(), sampling.clone());
        tokio::spawn(async move {
            let c = db(&url).await;
            let (mut max, mut samples) = (0i64, 0usize);
            while on.load(std::sync::atomic::Ordering::SeqCst) {
                let n: i64 = c
                    .query_one(
                        "SELECT count(*) FROM quota_reservations WHERE tenant = 'acme'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                max = max.max(n);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (max, samples)
        })
    };
    let mut submits = Vec::new();
    for (tenant, key, n) in [("acme", KEY_A, 100usize), ("globex", KEY_B, 20)] {
        for i in 0..n {
            let addr = apis[i % 3].clone();
            let s = spec(
                &format!("q-{tenant}-{i:03}"),
                tenant,
                "standard",
                "256x256",
                9,
                8,
            );
            submits.push(tokio::spawn(async move {
                let mut api = JobServiceClient::connect(addr).await.unwrap();
                api.submit(keyed(
                    SubmitRequest {
                        spec: Some(vidflow_operators::proto::JobSpec::try_from(&s).unwrap()),
                        client_key: String::new(),
                    },
                    key,
                ))
                .await
                .unwrap()
            }));
        }
    }
    for s in submits {
        s.await.unwrap();
    }
    let terminal = |e: &JobEvent| {
        matches!(
            e,
            JobEvent::Completed { .. } | JobEvent::Rejected { .. } | JobEvent::Failed { .. }
        )
    };
    events
        .until(Duration::from_secs(300), "120 jobs answered", |all| {
            let mut done = std::collections::HashSet::new();
            for (_, e) in all {
                if terminal(&e.event) && e.event.job_id().starts_with("q-") {
                    done.insert((e.tenant.clone(), e.event.job_id().to_string()));
                }
            }
            done.len() >= 120
        })
        .await;
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    let (max_running, samples) = sampler.await.unwrap();
    let outcome = |tenant: &str| {
        let (mut done, mut refused, mut reasons) = (0, 0, std::collections::BTreeSet::new());
        for (_, e) in &events.all {
            if e.tenant != tenant || !e.event.job_id().starts_with("q-") {
                continue;
            }
            match &e.event {
                JobEvent::Completed { .. } => done += 1,
                JobEvent::Rejected { field, error, .. } => {
                    assert_eq!(field, "quota", "{error}");
                    refused += 1;
                    reasons.insert(error.split(" limit").next().unwrap_or("").to_string());
                }
                _ => {}
            }
        }
        (done, refused, reasons)
    };
    let (acme_done, acme_refused, acme_why) = outcome("acme");
    let (globex_done, globex_refused, globex_why) = outcome("globex");
    let used: i64 = pg
        .query_one(
            "SELECT coalesce(sum(billed_ms), 0)::bigint FROM ledger WHERE tenant = 'globex'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for n in nodes {
        n.terminate();
    }
    eprintln!(
        "fleet quotas: acme 100 submits through 3 APIs → {acme_done} completed, {acme_refused} refused \
         ({acme_why:?}), most reserved at once {max_running} of 10 ({samples} samples); globex 20 submits → \
         {globex_done} completed, {globex_refused} refused ({globex_why:?}), {used} ms delivered of 2000; \
         keys: a new key accepted by all nodes after {added:?}, a revoked one refused by all after {revoked:?}"
    );
    assert!(
        max_running <= 10,
        "{max_running} acme jobs held reservations at once"
    );
    assert!(
        max_running >= 2,
        "the sampler never saw concurrency: the run proves nothing"
    );
    assert_eq!(acme_done + acme_refused, 100);
    assert!(
        acme_done >= 10 && acme_refused > 0,
        "{acme_done} / {acme_refused}"
    );
    assert_eq!(globex_done + globex_refused, 20);
    assert!(
        used <= 2000,
        "globex delivered {used} ms of a 2000 ms month"
    );
    assert!(globex_done >= 1 && globex_refused > 0);
    let conn = broker().await;
    let ch = conn.create_channel().await.unwrap();
    cleanup(&ch, &topo).await;
}
