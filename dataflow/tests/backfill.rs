//! Backfill through the library: Parquet in and out, input errors, resume
//! bookkeeping, hosts files.

use std::path::Path;

use vidflow_dataflow::backfill::{
    derived_job_id, read_done, read_jobs, read_results, write_specs_parquet, InputJob,
};
use vidflow_dataflow::{read_hostfile, run_backfill, BackfillConfig};
use vidflow_operators::AdmissionConfig;

fn spec_json(job_id: Option<&str>, seed: u64) -> String {
    let mut v = serde_json::json!({
        "tenant": "acme", "tier": "standard", "kind": "t2v", "prompt": "a parquet prompt",
        "resolution": "256x256", "frames": 9, "fps": 24.0, "mode": "realtime",
        "steps": 2, "seed": seed,
    });
    if let Some(id) = job_id {
        v["job_id"] = id.into();
    }
    v.to_string()
}

fn config(input: &Path, out: &Path) -> BackfillConfig {
    BackfillConfig {
        input: input.to_path_buf(),
        out: out.to_path_buf(),
        admission: AdmissionConfig::builtin_tiny(),
        max_batch: 4,
        threads: 1,
        process: 0,
        addresses: Vec::new(),
        safety: vidflow_operators::safety_record::SafetyConfig::in_repo(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/.."
        ))),
    }
}

#[test]
fn parquet_jobs_in_parquet_results_out_and_rerun_skips() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("jobs.parquet");
    write_specs_parquet(
        &input,
        &[
            Some(spec_json(Some("pq-a"), 1)),
            Some(spec_json(None, 2)),
            Some(spec_json(Some("pq-c"), 3)),
            None,
            Some(spec_json(Some("pq-e"), 5).replace("\"frames\":9", "\"frames\":10")),
            Some(spec_json(Some("pq-a"), 4)),
        ],
    )
    .unwrap();
    let out = tmp.path().join("out");
    let r = run_backfill(&config(&input, &out)).unwrap();
    assert_eq!((r.total, r.owned, r.skipped), (6, 6, 0));
    assert_eq!((r.completed, r.failed, r.recovered), (3, 3, 0));
    assert_eq!(r.parts, vec![out.join("results/part-0-0.parquet")]);

    let mut rows = read_results(&out).unwrap();
    rows.sort_by_key(|r| r.line);
    assert_eq!(rows.len(), 6);
    let derived = rows[1].job_id.clone();
    assert!(derived.starts_with("bf-"), "{derived}");
    for r in [&rows[0], &rows[1], &rows[2]] {
        assert_eq!(r.status, "completed", "{r:?}");
        let key = r.key.as_deref().unwrap();
        assert!(key.starts_with("acme/") && key.ends_with(&format!("/{}.mp4", r.job_id)));
        let bytes = std::fs::read(out.join("videos").join(key)).unwrap();
        assert_eq!(bytes.len() as u64, r.size.unwrap());
        assert_eq!(r.sha256.as_ref().unwrap().len(), 64);
        for t in [r.encode_s, r.denoise_s, r.decode_s, r.output_s] {
            assert!(t.unwrap() >= 0.0, "{r:?}");
        }
        assert!(r.batch_max.unwrap() >= 1);
    }
    let err = |i: usize| rows[i].error.clone().unwrap();
    assert_eq!(rows[3].status, "failed");
    assert_eq!(err(3), "row 4: `spec` is null");
    assert!(
        err(4).starts_with("row 5: ") && err(4).contains("frames"),
        "{}",
        err(4)
    );
    assert!(
        err(5).contains("duplicate job_id `pq-a` (first at row 1)"),
        "{}",
        err(5)
    );
    assert_eq!(read_done(&out).unwrap().len(), 3);

    // Re-run: the completed three are skipped, the failures retried.
    let r = run_backfill(&config(&input, &out)).unwrap();
    assert_eq!((r.skipped, r.completed, r.failed), (3, 0, 3));
    assert_eq!(r.parts, vec![out.join("results/part-0-1.parquet")]);
    // Same derived id on every read.
    let again = read_jobs(&input).unwrap();
    assert_eq!(again[1].job_id(), derived);
}

#[test]
fn rows_of_jobs_completed_by_a_killed_run_are_recovered_once() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("jobs.jsonl");
    let lines: Vec<String> = (0..2)
        .map(|i| spec_json(Some(&format!("rec-{i}")), i))
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = tmp.path().join("out");
    run_backfill(&config(&input, &out)).unwrap();
    // As if the run had been killed before writing its part.
    std::fs::remove_dir_all(out.join("results")).unwrap();
    let r = run_backfill(&config(&input, &out)).unwrap();
    assert_eq!((r.skipped, r.completed, r.recovered), (2, 0, 2));
    let r = run_backfill(&config(&input, &out)).unwrap();
    assert_eq!((r.skipped, r.recovered), (2, 0));
    let rows = read_results(&out).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.status == "completed"));
}

#[test]
fn jsonl_input_lines_ids_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("jobs.jsonl");
    let text = format!(
        "{}\n\n{}\nnot json\n{}\n",
        spec_json(Some("j-1"), 1),
        spec_json(None, 2),
        spec_json(Some("j-1"), 3)
    );
    std::fs::write(&input, &text).unwrap();
    let jobs = read_jobs(&input).unwrap();
    assert_eq!(jobs.len(), 4);
    let line_of = |j: &InputJob| match j {
        InputJob::Spec { line, .. } | InputJob::Bad { line, .. } => *line,
    };
    assert_eq!(jobs.iter().map(line_of).collect::<Vec<_>>(), [1, 3, 4, 5]);
    assert_eq!(jobs[1].job_id(), derived_job_id(3, &spec_json(None, 2)));
    match &jobs[2] {
        InputJob::Bad { error, .. } => assert!(error.starts_with("line 4: "), "{error}"),
        j => panic!("{j:?}"),
    }
    match &jobs[3] {
        InputJob::Bad { error, job_id, .. } => {
            assert!(
                error.contains("duplicate job_id `j-1` (first at line 1)"),
                "{error}"
            );
            assert_ne!(job_id, "j-1");
        }
        j => panic!("{j:?}"),
    }
    // Same line, same text: same id; another line: another id.
    assert_eq!(derived_job_id(3, "x"), derived_job_id(3, "x"));
    assert_ne!(derived_job_id(3, "x"), derived_job_id(4, "x"));
}

#[test]
fn hostfile_lists_processes_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let h = tmp.path().join("hosts");
    std::fs::write(
        &h,
        "# cluster\n127.0.0.1:2101\n\n127.0.0.1:2102\n127.0.0.1:2103\n",
    )
    .unwrap();
    assert_eq!(
        read_hostfile(&h, 2).unwrap(),
        ["127.0.0.1:2101", "127.0.0.1:2102"]
    );
    let e = read_hostfile(&h, 4).unwrap_err().to_string();
    assert!(e.contains("has 3 addresses, but --processes is 4"), "{e}");
}

/// A run killed after storing an MP4 but before writing its completion
/// record: the next run adopts the stored file (atomic, hence whole) and
/// generates nothing again.
#[test]
fn stored_but_unrecorded_output_is_adopted_not_regenerated() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("jobs.jsonl");
    std::fs::write(&input, spec_json(Some("adopt-0"), 3) + "\n").unwrap();
    let out = tmp.path().join("out");
    run_backfill(&config(&input, &out)).unwrap();
    let before = read_done(&out).unwrap()["adopt-0"].clone();
    // As if killed between the MP4 rename and the record.
    std::fs::remove_file(out.join("done/adopt-0.json")).unwrap();
    std::fs::remove_dir_all(out.join("results")).unwrap();
    // Both runs share this test process's pid, hence its event log.
    let events = out.join(format!("events-{}.jsonl", std::process::id()));
    let seen = std::fs::read_to_string(&events).unwrap().len();
    let r = run_backfill(&config(&input, &out)).unwrap();
    assert_eq!((r.completed, r.skipped), (0, 1), "{r:?}");
    let log = std::fs::read_to_string(&r.events).unwrap()[seen..].to_string();
    assert!(log.contains("\"adopted\""), "{log}");
    assert!(!log.contains("\"completed\""), "{log}");
    let after = read_done(&out).unwrap()["adopt-0"].clone();
    assert_eq!(after.row.sha256, before.row.sha256);
    assert_eq!(after.row.key, before.row.key);
    assert_eq!(read_results(&out).unwrap().len(), 1);
}
