//! `vidflow backfill`: a bounded run of many job specs through the graph,
//! resumable and shareable by a multi-process timely cluster.
//!
//! Layout under the output folder `DIR`:
//!
//! | path | what |
//! | --- | --- |
//! | `videos/<tenant>/<yyyy-mm-dd>/<job_id>.mp4` | the videos (local object store rooted at `DIR/videos`) |
//! | `done/<job_id>.json` | completion record, written (temp + rename) after the MP4 is stored |
//! | `results/part-<process>-<n>.parquet` | result rows of one run of one process (temp + rename) |
//! | `events-<pid>.jsonl` | job events of one run (no progress ticks) plus `recorded` lines |
//!
//! A job is *completed* once its record exists; a re-run skips it (the
//! record holds its key, so a re-run on another day still finds it). A job
//! interrupted after storing its MP4 but before its record is adopted from
//! the store; one interrupted earlier is generated again.
//! Failed jobs have no record and are retried by the next run.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vidflow_operators::id::is_safe_id;
use vidflow_operators::{AdmissionConfig, JobSpec};

use crate::events::{EventSink, JobEvent};
use crate::graph::{cluster_config, owner, run_jobs_with, Engine, EngineConfig, Intake};
use crate::graph::{ResultHook, RunOptions};
use crate::stages::JobResult;

mod input;
mod results;

pub use input::*;
pub use results::*;

/// Rows buffered before a results part is written mid-run.
pub const FLUSH_ROWS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Dataflow(#[from] crate::DataflowError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BackfillError + '_ {
    move |e| BackfillError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// One backfill run of one process.
#[derive(Clone)]
pub struct BackfillConfig {
    /// `.jsonl` (one JobSpec JSON per line) or `.parquet` (a `spec` string
    /// column holding the JSON).
    pub input: PathBuf,
    pub out: PathBuf,
    pub admission: AdmissionConfig,
    pub max_batch: usize,
    /// timely worker threads in this process.
    pub threads: usize,
    /// This process's index in `addresses`.
    pub process: usize,
    /// `host:port` of every process (the hosts file); empty or one entry
    /// for a single process.
    pub addresses: Vec<String>,
    pub safety: crate::safety::SafetyConfig,
}

/// `done/<job_id>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DoneRecord {
    #[serde(flatten)]
    pub row: ResultRow,
    /// Process id and cluster index of the run that completed the job.
    pub pid: u32,
    pub process: usize,
    /// Unix seconds when the record was written.
    pub recorded_at: f64,
}

/// A job whose MP4 is already in the store under today's key but has no
/// completion record (its run died between the two writes). Outputs are
/// written by atomic rename, so an existing file is a whole one.
fn adopt_stored(out: &Path, spec: &JobSpec, line: u64) -> Option<ResultRow> {
    let job_id = spec.job_id.as_deref()?;
    let key =
        vidflow_connectors::store::output_key(&spec.tenant, crate::graph::today_utc(), job_id)
            .ok()?;
    let bytes = fs::read(out.join("videos").join(key.as_ref())).ok()?;
    let r = JobResult {
        job_id: job_id.to_string(),
        tenant: spec.tenant.clone(),
        status: "completed".into(),
        error: None,
        key: Some(key.to_string()),
        size: Some(bytes.len() as u64),
        sha256: Some(vidflow_connectors::store::sha256_hex(&bytes)),
        untrained: false,
        timings: Vec::new(),
        batch_sizes: Vec::new(),
        accel_s: 0.0,
        failed_stage: None,
        cancelled_at: None,
        safety: Vec::new(),
    };
    Some(ResultRow::from_result(&r, Some(line)))
}

/// Writes a job's completion record (temp + rename) and logs `event`
/// (`recorded`, or `adopted` for an output found already stored).
fn write_record(
    done_dir: &Path,
    row: &ResultRow,
    process: usize,
    log: &EventLog,
    event: &str,
) -> Result<(), BackfillError> {
    let rec = DoneRecord {
        row: row.clone(),
        pid: std::process::id(),
        process,
        recorded_at: unix_now(),
    };
    let path = done_dir.join(format!("{}.json", row.job_id));
    let text = serde_json::to_vec_pretty(&rec).map_err(|e| BackfillError::Io {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    write_atomic(&path, &text)?;
    log.write(
        serde_json::json!({"event": event, "job_id": row.job_id, "key": row.key, "sha256": row.sha256}),
        process,
    );
    Ok(())
}

/// Completion records by job id.
pub fn read_done(out: &Path) -> Result<HashMap<String, DoneRecord>, BackfillError> {
    let dir = out.join("done");
    let mut done = HashMap::new();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(done),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    for e in rd {
        let p = e.map_err(io_err(&dir))?.path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue; // temp files of an interrupted write
        }
        let text = fs::read_to_string(&p).map_err(io_err(&p))?;
        let rec: DoneRecord = serde_json::from_str(&text).map_err(|e| BackfillError::Io {
            path: p.clone(),
            msg: format!("corrupt completion record: {e}"),
        })?;
        done.insert(rec.row.job_id.clone(), rec);
    }
    Ok(done)
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BackfillError> {
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Appends JSON lines, one `write` per line (O_APPEND), so a killed run
/// leaves whole lines.
#[derive(Clone)]
struct EventLog(Arc<Mutex<File>>);

impl EventLog {
    fn open(path: &Path) -> Result<EventLog, BackfillError> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        Ok(EventLog(Arc::new(Mutex::new(f))))
    }

    fn write(&self, mut v: serde_json::Value, process: usize) {
        if let Some(o) = v.as_object_mut() {
            o.insert("ts".into(), unix_now().into());
            o.insert("process".into(), process.into());
        }
        let mut line = v.to_string();
        line.push('\n');
        if let Ok(mut f) = self.0.lock() {
            if let Err(e) = f.write_all(line.as_bytes()) {
                tracing::warn!("event log: {e}");
            }
        }
    }
}

/// What one process's backfill run did.
#[derive(Debug, Default)]
pub struct BackfillReport {
    /// Jobs in the input (all processes).
    pub total: usize,
    /// Jobs this process owns (by `owner(job_id, peers)`).
    pub owned: usize,
    /// Owned jobs skipped because a completion record exists.
    pub skipped: usize,
    pub completed: usize,
    pub failed: usize,
    /// Completed jobs (by earlier, interrupted runs) whose rows were in no
    /// results part, added to this run's part.
    pub recovered: usize,
    pub parts: Vec<PathBuf>,
    pub events: PathBuf,
}

/// Runs a backfill as process `cfg.process` of the cluster in `cfg`.
pub fn run_backfill(cfg: &BackfillConfig) -> Result<BackfillReport, BackfillError> {
    let out = cfg.out.clone();
    for d in ["videos", "done", "results"] {
        let p = out.join(d);
        fs::create_dir_all(&p).map_err(io_err(&p))?;
    }
    let processes = cfg.addresses.len().max(1);
    let threads = cfg.threads.max(1);
    let peers = processes * threads;
    let mine = |id: &str| owner(id, peers) / threads == cfg.process;

    let jobs = read_jobs(&cfg.input)?;
    let done = read_done(&out)?;
    let mut report = BackfillReport {
        total: jobs.len(),
        ..Default::default()
    };
    let mut parts = Parts::new(&out, cfg.process)?;

    // Completed jobs whose rows no part holds (the run that made them was
    // killed before writing its part): this run's part lists them.
    let in_parts: HashSet<String> = read_results(&out)?
        .into_iter()
        .filter(|r| r.status == "completed")
        .map(|r| r.job_id)
        .collect();
    let mut orphans: Vec<&DoneRecord> = done
        .values()
        .filter(|r| mine(&r.row.job_id) && !in_parts.contains(&r.row.job_id))
        .collect();
    orphans.sort_by(|a, b| a.row.job_id.cmp(&b.row.job_id));
    for r in orphans {
        parts.push(r.row.clone())?;
        report.recovered += 1;
    }

    let events_path = out.join(format!("events-{}.jsonl", std::process::id()));
    let log = EventLog::open(&events_path)?;
    report.events = events_path;
    let process = cfg.process;
    let mut specs = Vec::new();
    let mut lines: HashMap<String, u64> = HashMap::new();
    for j in jobs {
        if !mine(j.job_id()) {
            continue;
        }
        report.owned += 1;
        if done.contains_key(j.job_id()) {
            report.skipped += 1;
            continue;
        }
        match j {
            InputJob::Bad {
                line,
                job_id,
                error,
            } => {
                log.write(
                    serde_json::json!({"event": "failed", "job_id": job_id, "stage": "input",
                        "error": error, "line": line}),
                    process,
                );
                parts.push(ResultRow::failed(&job_id, error, line))?;
                report.failed += 1;
            }
            InputJob::Spec { line, spec } => {
                if let Some(row) = adopt_stored(&out, &spec, line) {
                    // The previous run stored the MP4 (atomically, so it is
                    // whole) but was killed before writing the record:
                    // record it instead of generating it again.
                    write_record(&out.join("done"), &row, process, &log, "adopted")?;
                    parts.push(row)?;
                    report.skipped += 1;
                    continue;
                }
                lines.insert(spec.job_id.clone().unwrap_or_default(), line);
                specs.push(*spec);
            }
        }
    }

    let (tx, rx) = channel::<JobEvent>();
    let watcher = {
        let log = log.clone();
        std::thread::Builder::new()
            .name("vidflow-backfill-events".into())
            .spawn(move || {
                for e in rx {
                    if matches!(e, JobEvent::Progress { .. }) {
                        continue;
                    }
                    if let Ok(v) = serde_json::to_value(&e) {
                        log.write(v, process);
                    }
                }
            })
            .map_err(io_err(&out))?
    };
    let engine = Engine::new(
        &EngineConfig {
            admission: cfg.admission.clone(),
            out_dir: out.join("videos"),
            max_batch: cfg.max_batch,
            workers: threads,
            checkpoint_every: 0,
            checkpoint_every_tier: Default::default(),
            safety: cfg.safety.clone(),
        },
        EventSink::new(tx),
    )?;

    let what = if is_parquet(&cfg.input) {
        "row"
    } else {
        "line"
    };
    let parts = Arc::new(Mutex::new(parts));
    let first_error: Arc<Mutex<Option<BackfillError>>> = Arc::new(Mutex::new(None));
    let hook: ResultHook = {
        let parts = parts.clone();
        let first_error = first_error.clone();
        let done_dir = out.join("done");
        let log = log.clone();
        let lines = Arc::new(lines);
        Arc::new(move |r: &JobResult| {
            let line = lines.get(&r.job_id).copied();
            let mut row = ResultRow::from_result(r, line);
            if let (Some(e), Some(l)) = (&row.error, line) {
                // Admission and stage errors name the input line, like
                // parse errors do.
                row.error = Some(format!("{what} {l}: {e}"));
            }
            let res = (|| -> Result<(), BackfillError> {
                if row.status == "completed" && is_safe_id(&row.job_id) {
                    write_record(&done_dir, &row, process, &log, "recorded")?;
                }
                parts
                    .lock()
                    .map_err(|_| BackfillError::Input("poisoned".into()))?
                    .push(row)
            })();
            if let Err(e) = res {
                tracing::error!("backfill: {e}");
                if let Ok(mut fe) = first_error.lock() {
                    fe.get_or_insert(e);
                }
            }
        })
    };

    let results = run_jobs_with(
        engine.clone(),
        specs,
        RunOptions {
            timely: cluster_config(threads, cfg.process, cfg.addresses.clone()),
            intake: Intake::Partitioned,
            on_result: Some(hook),
        },
    );
    drop(engine);
    let _ = watcher.join();
    let results = results?;
    if let Some(e) = first_error.lock().ok().and_then(|mut e| e.take()) {
        return Err(e);
    }
    for r in &results {
        if r.status == "completed" {
            report.completed += 1;
        } else {
            report.failed += 1;
        }
    }
    let mut parts = parts
        .lock()
        .map_err(|_| BackfillError::Input("poisoned".into()))?;
    parts.flush()?;
    report.parts = std::mem::take(&mut parts.written);
    Ok(report)
}
