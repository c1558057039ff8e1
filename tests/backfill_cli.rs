//! `vidflow backfill` through the real binary: resume after SIGKILL, and two
//! timely processes on loopback sharing one backfill.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use vidflow_dataflow::backfill::{read_done, read_results};

fn vidflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vidflow"))
}

/// `n` small jobs (tiny model, 256x256, 9 frames, 2 steps), JSONL; the job
/// with index `no_id` (if any) has no job_id (it gets a derived one).
fn write_jobs(path: &Path, n: usize, no_id: Option<usize>, bad_line: bool) {
    let mut text = String::new();
    for i in 0..n {
        let mut v = serde_json::json!({
            "tenant": "acme", "tier": "standard", "kind": "t2v",
            "prompt": format!("backfill prompt {}", i % 3), "resolution": "256x256",
            "frames": 9, "fps": 24.0, "mode": "realtime", "steps": 2, "seed": 100 + i as u64,
            "model": "ltx-tiny",
        });
        if Some(i) != no_id {
            v["job_id"] = format!("bf-job-{i:02}").into();
        }
        text.push_str(&v.to_string());
        text.push('\n');
    }
    if bad_line {
        text.push_str("{\"tenant\": \"acme\", \"steps\": -3}\n");
    }
    std::fs::write(path, text).unwrap();
}

/// Waits for a child at most `limit`, killing it (and failing) past that.
fn wait(mut c: Child, limit: Duration, what: &str) -> Output {
    let t0 = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            let _ = c.kill();
            let out = c.wait_with_output().unwrap();
            panic!(
                "{what} did not finish in {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    c.wait_with_output().unwrap()
}

fn spawn_backfill(jobs: &Path, out: &Path, extra: &[&str]) -> Child {
    vidflow()
        .arg("backfill")
        .arg(jobs)
        .arg("--out")
        .arg(out)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn done_count(out: &Path) -> usize {
    std::fs::read_dir(out.join("done"))
        .map(|rd| {
            rd.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
            })
            .count()
        })
        .unwrap_or(0)
}

/// `event` lines of one run's events log: job_id -> count.
fn events(path: &Path, event: &str) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for l in std::fs::read_to_string(path).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v["event"] == event {
            *m.entry(v["job_id"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    m
}

fn ffprobe_frames(path: &Path) -> String {
    support::ffprobe_stream(path, "codec_name,nb_read_frames")
}

#[test]
fn backfill_killed_midway_resumes_without_redoing_completed_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let jobs = tmp.path().join("jobs.jsonl");
    write_jobs(&jobs, 20, Some(7), false);
    let out = tmp.path().join("out");

    // Run 1: SIGKILL once some, but not all, jobs are complete.
    let t0 = Instant::now();
    let mut c = spawn_backfill(&jobs, &out, &["--max-batch", "2"]);
    let pid1 = c.id();
    loop {
        let n = done_count(&out);
        if n >= 8 {
            assert!(n < 20, "run 1 finished before it could be killed");
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
            break;
        }
        assert!(
            c.try_wait().unwrap().is_none(),
            "run 1 exited before any job completed: {:?}",
            c.wait_with_output()
        );
        assert!(t0.elapsed() < Duration::from_secs(120), "no job completed");
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = read_done(&out).unwrap();
    assert!(!before.is_empty() && before.len() < 20, "{}", before.len());
    let videos = out.join("videos");
    let stat = |key: &str| {
        let p = videos.join(key);
        let m = std::fs::metadata(&p).unwrap();
        (m.modified().unwrap(), m.len())
    };
    let snapshot: HashMap<String, (SystemTime, u64)> = before
        .values()
        .map(|r| (r.row.job_id.clone(), stat(r.row.key.as_deref().unwrap())))
        .collect();
    eprintln!("killed run 1 after {} of 20 jobs", before.len());

    // Run 2: finishes the rest.
    let o = wait(
        spawn_backfill(&jobs, &out, &["--max-batch", "2"]),
        Duration::from_secs(180),
        "run 2",
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let pid2 = o
        .stdout
        .split(|&b| b == b'\n')
        .find_map(|l| {
            std::str::from_utf8(l)
                .ok()?
                .strip_prefix("events ")
                .map(PathBuf::from)
        })
        .expect("run 2 names its events log");
    assert!(
        stdout.contains(&format!("{} already done", before.len())),
        "{stdout}"
    );

    // 20 distinct completed jobs.
    let after = read_done(&out).unwrap();
    assert_eq!(after.len(), 20);
    let ids: HashSet<&str> = after.keys().map(String::as_str).collect();
    assert_eq!(ids.len(), 20);
    assert!(ids
        .iter()
        .any(|id| id.starts_with("bf-") && !id.starts_with("bf-job-")));

    // None completed twice: run 2 completed exactly the jobs run 1 had not,
    // each once; a job completed by run 1 kept its record, its MP4 bytes and
    // mtime.
    let run1 = events(&out.join(format!("events-{pid1}.jsonl")), "completed");
    let run2 = events(&pid2, "completed");
    // A job whose MP4 run 1 stored just before the kill (record not yet
    // written) is adopted from the store by run 2, not generated again.
    let adopted = events(&pid2, "adopted");
    assert!(adopted.len() <= 1, "{adopted:?}");
    assert_eq!(
        run2.len() + adopted.len(),
        20 - before.len(),
        "{run2:?} {adopted:?}"
    );
    for (id, n) in &run2 {
        assert_eq!(*n, 1, "{id} completed {n} times in run 2");
        assert!(!before.contains_key(id), "{id} was done, yet redone");
    }
    for id in before.keys() {
        // (Its `completed` event may not have reached run 1's log before
        // the kill; never more than one.)
        assert!(run1.get(id).copied().unwrap_or(0) <= 1, "{id} in run 1");
        assert_eq!(after[id].pid, before[id].pid);
        assert_eq!(after[id].row, before[id].row);
        assert_eq!(stat(after[id].row.key.as_deref().unwrap()), snapshot[id]);
    }
    // No job is generated twice: nothing run 1 completed (even without a
    // record) was completed again by run 2.
    let redone: Vec<&String> = run1.keys().filter(|id| run2.contains_key(*id)).collect();
    assert!(redone.is_empty(), "{redone:?}");
    for id in adopted.keys() {
        assert!(!run2.contains_key(id), "{id} adopted and regenerated");
    }
    assert!(run1.values().all(|&n| n == 1), "{run1:?}");

    // The results Parquet lists each of the 20 once (run 2 adds the rows
    // of the jobs that killed run 1 completed), and the MP4s play.
    let rows = read_results(&out).unwrap();
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        assert_eq!(r.status, "completed", "{r:?}");
        *by_id.entry(r.job_id.clone()).or_insert(0) += 1;
        assert_eq!(r.sha256, after[&r.job_id].row.sha256);
    }
    assert_eq!(by_id.len(), 20);
    assert!(by_id.values().all(|&n| n == 1), "{by_id:?}");
    for r in after.values() {
        let p = videos.join(r.row.key.as_deref().unwrap());
        assert!(std::fs::metadata(&p).unwrap().len() > 0);
        assert_eq!(ffprobe_frames(&p), "h264,9", "{}", p.display());
    }

    // Run 3: nothing left to do.
    let o = wait(
        spawn_backfill(&jobs, &out, &[]),
        Duration::from_secs(60),
        "run 3",
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(
        stdout.contains("20 already done, 0 completed, 0 failed"),
        "{stdout}"
    );
}

/// Two distinct free loopback ports (both held while chosen).
fn free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// job_id -> (status, sha256) over every results part of a folder.
fn outcome(out: &Path) -> BTreeMap<String, (String, Option<String>)> {
    let mut m = BTreeMap::new();
    for r in read_results(out).unwrap() {
        let prev = m.insert(r.job_id.clone(), (r.status.to_string(), r.sha256));
        assert!(prev.is_none(), "{} listed twice", r.job_id);
    }
    m
}

#[test]
fn two_timely_processes_share_a_backfill_like_one() {
    let tmp = tempfile::tempdir().unwrap();
    let jobs = tmp.path().join("jobs.jsonl");
    write_jobs(&jobs, 8, Some(3), true);

    // One process, two workers.
    let single = tmp.path().join("single");
    let o = wait(
        spawn_backfill(&jobs, &single, &["-w", "2"]),
        Duration::from_secs(120),
        "single-process run",
    );
    // Exit 2: the bad line is a failed job.
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Two processes on loopback, one worker each, sharing a hosts file.
    let cluster = tmp.path().join("cluster");
    let hosts = tmp.path().join("hosts.txt");
    std::fs::write(&hosts, {
        let (a, b) = free_ports();
        format!("127.0.0.1:{a}\n127.0.0.1:{b}\n")
    })
    .unwrap();
    let h = hosts.to_str().unwrap();
    let p0 = spawn_backfill(&jobs, &cluster, &["-n", "2", "-p", "0", "--hostfile", h]);
    let p1 = spawn_backfill(&jobs, &cluster, &["-n", "2", "-p", "1", "--hostfile", h]);
    let o0 = wait(p0, Duration::from_secs(120), "process 0");
    let o1 = wait(p1, Duration::from_secs(120), "process 1");
    let s0 = String::from_utf8_lossy(&o0.stdout).to_string();
    let s1 = String::from_utf8_lossy(&o1.stdout).to_string();
    assert!(s0.contains("backfill process 0: 9 jobs in input"), "{s0}");
    assert!(s1.contains("backfill process 1: 9 jobs in input"), "{s1}");

    // Each process wrote its own part, each did a share of the work.
    let parts: Vec<String> = std::fs::read_dir(cluster.join("results"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(parts.contains(&"part-0-0.parquet".to_string()), "{parts:?}");
    assert!(parts.contains(&"part-1-0.parquet".to_string()), "{parts:?}");
    for s in [&s0, &s1] {
        let owned: usize = s
            .split(" owned here")
            .next()
            .and_then(|x| x.rsplit(", ").next())
            .and_then(|x| x.parse().ok())
            .unwrap();
        assert!(owned > 0 && owned < 9, "{s}");
    }

    // Same results as the single process: job ids, statuses, bytes.
    let a = outcome(&single);
    let b = outcome(&cluster);
    assert_eq!(a.len(), 9);
    assert_eq!(a.values().filter(|(s, _)| s == "completed").count(), 8);
    assert_eq!(a, b);
    let bad = read_results(&cluster)
        .unwrap()
        .into_iter()
        .find(|r| r.status == "failed")
        .unwrap();
    assert_eq!(bad.line, Some(9));
    assert!(
        bad.error.as_deref().unwrap().starts_with("line 9: "),
        "{bad:?}"
    );
}
