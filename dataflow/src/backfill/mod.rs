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
use vidflow_operators::event::JobEvent;
use vidflow_operators::id::is_safe_id;
use vidflow_operators::result::StoredVideo;
use vidflow_operators::{AdmissionConfig, EventSink, JobResult, JobSpec, JobStatus};

use crate::engine::{Engine, EngineConfig};
use crate::run::{cluster_config, owner, run_jobs_with, Intake, ResultHook, RunOptions};

mod input;
mod results;

pub use input::*;
pub use results::*;

/// Rows buffered before a results part is written mid-run.
pub const FLUSH_ROWS: usize = 256;

/// Why a backfill run stopped. Each variant names the file it concerns and
/// keeps the underlying error as its source.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: {source}")]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error("{path}: corrupt completion record: {source}")]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A Parquet file that reads, but not as the table it should be.
    #[error("{path}: {problem}")]
    Column {
        path: PathBuf,
        problem: ColumnProblem,
    },
    /// A result hook panicked while holding the results parts.
    #[error("the results parts were poisoned by a panicked worker")]
    Poisoned,
    #[error(transparent)]
    Dataflow(#[from] crate::DataflowError),
    #[error(transparent)]
    Hosts(#[from] crate::run::HostfileError),
}

/// What is wrong with a column of a job file or results part.
#[derive(Debug, thiserror::Error)]
pub enum ColumnProblem {
    #[error("no `spec` column (a string column holding one JobSpec JSON per row)")]
    NoSpec,
    #[error("column `spec` is {0}, expected a string")]
    SpecNotString(arrow_schema::DataType),
    #[error("no column `{0}`")]
    Missing(String),
    #[error("`{column}` is {found}")]
    NotString {
        column: String,
        found: arrow_schema::DataType,
    },
    #[error("`{0}` is not u64")]
    NotU64(String),
    #[error("`{0}` is not f64")]
    NotF64(String),
    #[error(transparent)]
    Status(#[from] vidflow_operators::UnknownStatus),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BackfillError + '_ {
    move |source| BackfillError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn pq_err(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> BackfillError + '_ {
    move |source| BackfillError::Parquet {
        path: path.to_path_buf(),
        source,
    }
}

fn arrow_err(path: &Path) -> impl Fn(arrow_schema::ArrowError) -> BackfillError + '_ {
    move |source| BackfillError::Arrow {
        path: path.to_path_buf(),
        source,
    }
}

fn column_err(path: &Path, problem: ColumnProblem) -> BackfillError {
    BackfillError::Column {
        path: path.to_path_buf(),
        problem,
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
    pub safety: vidflow_operators::safety_record::SafetyConfig,
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
    let today = vidflow_operators::admit::today_utc();
    let key = vidflow_connectors::store::output_key(&spec.tenant, today, job_id).ok()?;
    let bytes = fs::read(out.join("videos").join(key.as_ref())).ok()?;
    let stored = StoredVideo {
        key: key.to_string(),
        size: bytes.len() as u64,
        sha256: vidflow_connectors::store::sha256_hex(&bytes),
    };
    let r = JobResult::adopted(job_id.to_string(), spec.tenant.clone(), stored);
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
    let text = serde_json::to_vec_pretty(&rec).map_err(|source| BackfillError::Record {
        path: path.clone(),
        source,
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
        let rec: DoneRecord =
            serde_json::from_str(&text).map_err(|source| BackfillError::Record {
                path: p.clone(),
                source,
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
        .filter(|r| r.status == JobStatus::Completed)
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
            scheduling: Default::default(),
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
                if row.status == JobStatus::Completed && is_safe_id(&row.job_id) {
                    write_record(&done_dir, &row, process, &log, "recorded")?;
                }
                parts.lock().map_err(|_| BackfillError::Poisoned)?.push(row)
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
        if r.status == JobStatus::Completed {
            report.completed += 1;
        } else {
            report.failed += 1;
        }
    }
    let mut parts = parts.lock().map_err(|_| BackfillError::Poisoned)?;
    parts.flush()?;
    report.parts = std::mem::take(&mut parts.written);
    Ok(report)
}
