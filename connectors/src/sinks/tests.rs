use super::*;

fn rec(id: &str, ms: u64) -> JobRecord {
    rec_of("acme", id, ms)
}

fn rec_of(tenant: &str, id: &str, ms: u64) -> JobRecord {
    let mut r = rec_acme(id, ms);
    r.tenant = tenant.into();
    for t in [
        r.billing.as_mut().map(|b| &mut b.tenant),
        r.metrics.as_mut().map(|m| &mut m.tenant),
        r.job.as_mut().map(|j| &mut j.tenant),
    ]
    .into_iter()
    .flatten()
    {
        *t = tenant.into();
    }
    r
}

fn rec_acme(id: &str, ms: u64) -> JobRecord {
    JobRecord {
        job_id: id.into(),
        tenant: "acme".into(),
        status: vidflow_job::JobStatus::Completed,
        error: None,
        stage: None,
        cancelled_at: None,
        key: None,
        size: None,
        sha256: None,
        untrained: true,
        finished_ms: ms,
        timings: vec![],
        batch_sizes: vec![],
        commit_id: "c".into(),
        billing: Some(BillingRow {
            job_id: id.into(),
            tenant: "acme".into(),
            kind: vidflow_job::ledger::EntryKind::Charge,
            billed_ms: 375,
            amount_micro: 37_500,
            ts_ms: ms,
            ..Default::default()
        }),
        metrics: Some(MetricsRow {
            job_id: id.into(),
            tenant: String::new(),
            tier: String::new(),
            status: vidflow_job::JobStatus::Completed,
            queue_wait_ms: 0,
            start_wait_s: 0.0,
            preemptions: 0,
            predicted_accel_s: 0.0,
            encode_s: 0.0,
            denoise_s: 0.0,
            decode_s: 0.0,
            output_s: 0.0,
            steps: 0,
            batch_max: 0,
            batch_mean: 0.0,
            accelerator_s: 0.0,
            accelerator: String::new(),
            peak_rss_bytes: 0,
            est_vram_bytes: 0,
            compute_cost_micro: 0,
            margin_micro: 0,
            ts_ms: ms,
        }),
        job: Some(JobRow {
            job_id: id.into(),
            tenant: "acme".into(),
            tier: String::new(),
            kind: String::new(),
            status: vidflow_job::JobStatus::Completed,
            error: None,
            width: 0,
            height: 0,
            frames: 0,
            fps: 0.0,
            resolution_class: String::new(),
            output_key: None,
            size: None,
            sha256: None,
            untrained: false,
            submitted_ms: 0,
            finished_ms: ms,
        }),
        safety: vec![],
    }
}

#[test]
fn rows_reach_parquet_once_even_when_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SinkConfig {
        max_rows: 2,
        max_bytes: 1 << 30,
        max_age_s: 3600.0,
        root: None,
        store_prefix: None,
    };
    let day = 1_795_812_585_904; // 2026-11-27
    let s = Sinks::open(dir.path(), cfg.clone()).unwrap();
    s.append(&rec("a", day)).unwrap();
    s.append(&rec("b", day)).unwrap(); // rolls at 2 rows
    s.append(&rec("c", day + 86_400_000)).unwrap(); // stays in the outbox
    drop(s);
    // "Crash": the outbox holds c; a and b are in Parquet. Recovery
    // offers all three records again: only c is added.
    let s = Sinks::open(dir.path(), cfg).unwrap();
    let added = s
        .recover(&[rec("a", day), rec("b", day), rec("c", day + 86_400_000)])
        .unwrap();
    assert_eq!(added, 0, "c came back from the outbox, not from its record");
    let rows = read_billing(dir.path()).unwrap();
    let mut ids: Vec<_> = rows.iter().map(|r| r.job_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b", "c"]);
    assert!(dir.path().join("billing/date=2026-11-27").is_dir());
    assert!(dir.path().join("billing/date=2026-11-28").is_dir());
    let left: Vec<_> = fs::read_dir(dir.path().join("_outbox/local"))
        .unwrap()
        .collect();
    assert!(left.is_empty());
    // A record that never reached the outbox is re-derived.
    let s = Sinks::open(dir.path(), SinkConfig::default()).unwrap();
    assert_eq!(s.recover(&[rec("d", day), rec("a", day)]).unwrap(), 1);
    assert_eq!(read_billing(dir.path()).unwrap().len(), 4);
}

#[test]
fn two_tenants_with_the_same_job_id_both_keep_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let day = 1_795_812_585_904;
    let s = Sinks::open(dir.path(), SinkConfig::default()).unwrap();
    s.append(&rec_of("acme", "job-1", day)).unwrap();
    s.append(&rec_of("globex", "job-1", day)).unwrap();
    s.flush().unwrap();
    drop(s);
    // Reopened: both are known as sunk, neither is re-derived twice.
    let s = Sinks::open(dir.path(), SinkConfig::default()).unwrap();
    let again = [rec_of("acme", "job-1", day), rec_of("globex", "job-1", day)];
    assert_eq!(s.recover(&again).unwrap(), 0);
    let mut who: Vec<_> = read_billing(dir.path())
        .unwrap()
        .into_iter()
        .map(|r| (r.tenant, r.job_id))
        .collect();
    who.sort();
    assert_eq!(
        who,
        [
            ("acme".to_string(), "job-1".to_string()),
            ("globex".into(), "job-1".into())
        ]
    );
}

#[test]
fn nodes_sharing_a_root_never_touch_each_others_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let day = 1_795_812_585_904;
    let cfg = SinkConfig::default();
    let a = Sinks::open_node(dir.path(), cfg.clone(), "node-a", false).unwrap();
    a.append(&rec_of("acme", "a1", day)).unwrap();
    // Node b starts (and restarts) while a's segment is open: a's
    // outbox stays as it is.
    let b = Sinks::open_node(dir.path(), cfg.clone(), "node-b", false).unwrap();
    b.append(&rec_of("acme", "b1", day)).unwrap();
    b.flush().unwrap();
    drop(b);
    let b = Sinks::open_node(dir.path(), cfg.clone(), "node-b", false).unwrap();
    let a_left: Vec<_> = fs::read_dir(dir.path().join("_outbox/node-a"))
        .unwrap()
        .collect();
    assert_eq!(a_left.len(), 1, "a's live segment was rolled by b");
    a.append(&rec_of("acme", "a2", day)).unwrap();
    a.flush().unwrap();
    drop((a, b));
    let mut ids: Vec<_> = read_billing(dir.path())
        .unwrap()
        .into_iter()
        .map(|r| r.job_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["a1", "a2", "b1"]);
    // Every part names its node.
    for p in parquet_files(&dir.path().join("billing")) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.contains("-node-a-") || name.contains("-node-b-"),
            "{name}"
        );
    }
    // A single node adopts whatever outbox it finds.
    let c = Sinks::open_node(dir.path(), cfg.clone(), "node-c", false).unwrap();
    c.append(&rec_of("globex", "c1", day)).unwrap();
    drop(c);
    Sinks::open(dir.path(), cfg).unwrap();
    assert_eq!(read_billing(dir.path()).unwrap().len(), 4);
}

#[test]
fn concurrent_appends_share_fsyncs_and_keep_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let day = 1_795_812_585_904;
    let cfg = SinkConfig {
        max_rows: 64,
        ..SinkConfig::default()
    };
    let s = Sinks::open(dir.path(), cfg).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    s.append(&rec_of("acme", &format!("j{t}-{i}"), day))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        *s.synced.lock().unwrap(),
        400,
        "every append returned durable"
    );
    s.flush().unwrap();
    assert_eq!(read_billing(dir.path()).unwrap().len(), 400);
}

#[test]
fn parts_are_copied_to_the_store_and_missing_copies_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let day = 1_795_812_585_904;
    let store = Arc::new(crate::store::OutputStore::new(Arc::new(
        object_store::memory::InMemory::new(),
    )));
    let mirror = PartMirror {
        store: store.clone(),
        prefix: "analytics".into(),
    };
    let cfg = SinkConfig::default();
    let s =
        Sinks::open_mirrored(dir.path(), cfg.clone(), "n1", false, Some(mirror.clone())).unwrap();
    s.append(&rec_of("acme", "a1", day)).unwrap();
    s.flush().unwrap();
    drop(s);
    let keys = |p: &str| {
        let mut k: Vec<String> = store
            .list_blocking(&object_store::path::Path::from(p))
            .unwrap()
            .into_iter()
            .map(|k| k.to_string())
            .collect();
        k.sort();
        k
    };
    let billing = keys("analytics/billing");
    assert_eq!(billing.len(), 1, "{billing:?}");
    assert!(billing[0].starts_with("analytics/billing/date=2026-11-27/part-"));
    assert!(billing[0].contains("-n1-"));
    assert_eq!(keys("analytics/jobs").len(), 1);
    // A copy lost (a put that failed, a crash between the two): the next
    // open puts it again, byte for byte.
    let local = parquet_files(&dir.path().join("billing"));
    store
        .delete_blocking(&object_store::path::Path::from(billing[0].as_str()))
        .unwrap();
    Sinks::open_mirrored(dir.path(), cfg, "n1", false, Some(mirror)).unwrap();
    assert_eq!(keys("analytics/billing"), billing);
    assert_eq!(
        store
            .get_blocking(&object_store::path::Path::from(billing[0].as_str()))
            .unwrap(),
        std::fs::read(&local[0]).unwrap()
    );
}
