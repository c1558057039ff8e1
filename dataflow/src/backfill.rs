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
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};

use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vidflow_operators::id::is_safe_id;
use vidflow_operators::{AdmissionConfig, JobSpec};

use crate::events::{EventSink, JobEvent};
use crate::graph::{cluster_config, owner, run_jobs_with, Engine, EngineConfig, Intake};
use crate::graph::{ResultHook, RunOptions};
use crate::stages::JobResult;

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
}

/// One row of the results Parquet (and the body of a completion record).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    pub job_id: String,
    pub tenant: String,
    /// completed, failed or cancelled.
    pub status: String,
    pub error: Option<String>,
    /// Object key under `DIR/videos`.
    pub key: Option<String>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub encode_s: Option<f64>,
    pub denoise_s: Option<f64>,
    pub decode_s: Option<f64>,
    pub output_s: Option<f64>,
    /// Largest denoising batch the job was part of.
    pub batch_max: Option<u64>,
    /// 1-based line (JSONL) or row (Parquet) of the input.
    pub line: Option<u64>,
}

impl ResultRow {
    fn from_result(r: &JobResult, line: Option<u64>) -> ResultRow {
        let t = |name: &str| {
            r.timings
                .iter()
                .filter(|(s, _)| s == name)
                .map(|(_, v)| *v)
                .reduce(|a, b| a + b)
        };
        ResultRow {
            job_id: r.job_id.clone(),
            tenant: r.tenant.clone(),
            status: r.status.clone(),
            error: r.error.clone(),
            key: r.key.clone(),
            size: r.size,
            sha256: r.sha256.clone(),
            encode_s: t("encode"),
            denoise_s: t("denoise"),
            decode_s: t("decode"),
            output_s: t("output"),
            batch_max: r.batch_sizes.iter().max().map(|&b| b as u64),
            line,
        }
    }

    fn failed(job_id: &str, error: String, line: u64) -> ResultRow {
        ResultRow {
            job_id: job_id.to_string(),
            tenant: String::new(),
            status: "failed".into(),
            error: Some(error),
            key: None,
            size: None,
            sha256: None,
            encode_s: None,
            denoise_s: None,
            decode_s: None,
            output_s: None,
            batch_max: None,
            line: Some(line),
        }
    }
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

/// An input line: a spec with its (possibly derived) id, or why not.
#[derive(Clone, Debug)]
pub enum InputJob {
    Spec {
        line: u64,
        spec: Box<JobSpec>,
    },
    Bad {
        line: u64,
        job_id: String,
        error: String,
    },
}

impl InputJob {
    pub fn job_id(&self) -> &str {
        match self {
            InputJob::Spec { spec, .. } => spec.job_id.as_deref().unwrap_or(""),
            InputJob::Bad { job_id, .. } => job_id,
        }
    }
}

/// The id a spec without one gets: `bf-` + 16 hex of sha256(line number,
/// spec text). The same file (or the same line at the same place in an
/// edited file) gives the same ids on every run and in every process.
pub fn derived_job_id(line: u64, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(line.to_le_bytes());
    h.update(text.trim().as_bytes());
    let d = h.finalize();
    let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("bf-{hex}")
}

fn parse_job(line: u64, text: &str, what: &str) -> InputJob {
    match JobSpec::from_json(text) {
        Ok(mut spec) => {
            if spec.job_id.is_none() {
                spec.job_id = Some(derived_job_id(line, text));
            }
            InputJob::Spec {
                line,
                spec: Box::new(spec),
            }
        }
        Err(e) => InputJob::Bad {
            line,
            job_id: derived_job_id(line, text),
            error: format!("{what} {line}: {e}"),
        },
    }
}

fn is_parquet(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// Reads a job file: `.parquet` by extension, JSONL otherwise. Blank lines
/// are skipped (their numbers still count); a line that is not a valid
/// JobSpec becomes `InputJob::Bad`. A repeated job id is `Bad` from its
/// second occurrence on.
pub fn read_jobs(path: &Path) -> Result<Vec<InputJob>, BackfillError> {
    let is_parquet = is_parquet(path);
    let mut jobs = if is_parquet {
        read_parquet_specs(path)?
            .into_iter()
            .enumerate()
            .map(|(i, t)| match t {
                Some(t) => parse_job(i as u64 + 1, &t, "row"),
                None => InputJob::Bad {
                    line: i as u64 + 1,
                    job_id: derived_job_id(i as u64 + 1, ""),
                    error: format!("row {}: `spec` is null", i + 1),
                },
            })
            .collect::<Vec<_>>()
    } else {
        let f = File::open(path).map_err(io_err(path))?;
        let mut out = Vec::new();
        for (i, l) in BufReader::new(f).lines().enumerate() {
            let l = l.map_err(io_err(path))?;
            if !l.trim().is_empty() {
                out.push(parse_job(i as u64 + 1, &l, "line"));
            }
        }
        out
    };
    let mut first: HashMap<String, u64> = HashMap::new();
    for j in jobs.iter_mut() {
        let InputJob::Spec { line, spec } = j else {
            continue;
        };
        let id = spec.job_id.clone().unwrap_or_default();
        match first.get(&id) {
            Some(&at) => {
                let what = if is_parquet { "row" } else { "line" };
                *j = InputJob::Bad {
                    line: *line,
                    error: format!(
                        "{what} {line}: duplicate job_id `{id}` (first at {what} {at}); skipped"
                    ),
                    // Keeps the failure's own id apart from the original's.
                    job_id: derived_job_id(*line, &id),
                };
            }
            None => {
                first.insert(id, *line);
            }
        }
    }
    Ok(jobs)
}

/// The `spec` column of a Parquet file (Utf8, LargeUtf8 or Utf8View).
fn read_parquet_specs(path: &Path) -> Result<Vec<Option<String>>, BackfillError> {
    let f = File::open(path).map_err(io_err(path))?;
    let perr = |e: &dyn std::fmt::Display| BackfillError::Input(format!("{}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| perr(&e))?
        .build()
        .map_err(|e| perr(&e))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| perr(&e))?;
        let col = batch.column_by_name("spec").ok_or_else(|| {
            BackfillError::Input(format!(
                "{}: no `spec` column (a string column holding one JobSpec JSON per row)",
                path.display()
            ))
        })?;
        strings(col, &mut out).map_err(|t| {
            BackfillError::Input(format!(
                "{}: column `spec` is {t}, expected a string",
                path.display()
            ))
        })?;
    }
    Ok(out)
}

fn strings(col: &ArrayRef, out: &mut Vec<Option<String>>) -> Result<(), DataType> {
    use arrow_array::cast::AsArray;
    let get = |a: &dyn Array, i: usize| a.is_valid(i);
    match col.data_type() {
        DataType::Utf8 => {
            let a = col.as_string::<i32>();
            out.extend((0..a.len()).map(|i| get(a, i).then(|| a.value(i).to_string())));
        }
        DataType::LargeUtf8 => {
            let a = col.as_string::<i64>();
            out.extend((0..a.len()).map(|i| get(a, i).then(|| a.value(i).to_string())));
        }
        DataType::Utf8View => {
            let a = col.as_string_view();
            out.extend((0..a.len()).map(|i| get(a, i).then(|| a.value(i).to_string())));
        }
        t => return Err(t.clone()),
    }
    Ok(())
}

/// Writes a job file for `backfill` in its Parquet form: one string column
/// `spec`, one JobSpec JSON per row (`None` writes a null).
pub fn write_specs_parquet(path: &Path, specs: &[Option<String>]) -> Result<(), BackfillError> {
    let perr = |e: &dyn std::fmt::Display| BackfillError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let schema = Arc::new(Schema::new(vec![Field::new("spec", DataType::Utf8, true)]));
    let col: ArrayRef = Arc::new(specs.iter().map(|s| s.as_deref()).collect::<StringArray>());
    let batch = RecordBatch::try_new(schema.clone(), vec![col]).map_err(|e| perr(&e))?;
    let tmp = tmp_path(path);
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut w = ArrowWriter::try_new(file, schema, None).map_err(|e| perr(&e))?;
    w.write(&batch).map_err(|e| perr(&e))?;
    w.close().map_err(|e| perr(&e))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn results_schema() -> Arc<Schema> {
    let s = |n: &str, nullable| Field::new(n, DataType::Utf8, nullable);
    let u = |n: &str| Field::new(n, DataType::UInt64, true);
    let f = |n: &str| Field::new(n, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        s("job_id", false),
        s("tenant", false),
        s("status", false),
        s("error", true),
        s("key", true),
        u("size"),
        s("sha256", true),
        f("encode_s"),
        f("denoise_s"),
        f("decode_s"),
        f("output_s"),
        u("batch_max"),
        u("line"),
    ]))
}

/// Writes rows as one Parquet file, atomically (temp file + rename).
pub fn write_results(path: &Path, rows: &[ResultRow]) -> Result<(), BackfillError> {
    let perr = |e: &dyn std::fmt::Display| BackfillError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let str_col = |f: &dyn Fn(&ResultRow) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let u_col = |f: &dyn Fn(&ResultRow) -> Option<u64>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<UInt64Array>())
    };
    let f_col = |f: &dyn Fn(&ResultRow) -> Option<f64>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<Float64Array>())
    };
    let cols: Vec<ArrayRef> = vec![
        str_col(&|r| Some(&r.job_id)),
        str_col(&|r| Some(&r.tenant)),
        str_col(&|r| Some(&r.status)),
        str_col(&|r| r.error.as_deref()),
        str_col(&|r| r.key.as_deref()),
        u_col(&|r| r.size),
        str_col(&|r| r.sha256.as_deref()),
        f_col(&|r| r.encode_s),
        f_col(&|r| r.denoise_s),
        f_col(&|r| r.decode_s),
        f_col(&|r| r.output_s),
        u_col(&|r| r.batch_max),
        u_col(&|r| r.line),
    ];
    let schema = results_schema();
    let batch = RecordBatch::try_new(schema.clone(), cols).map_err(|e| perr(&e))?;
    let tmp = tmp_path(path);
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut w = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| perr(&e))?;
    w.write(&batch).map_err(|e| perr(&e))?;
    let file = w.into_inner().map_err(|e| perr(&e))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Reads one results part.
pub fn read_results_file(path: &Path) -> Result<Vec<ResultRow>, BackfillError> {
    let perr = |e: &dyn std::fmt::Display| BackfillError::Input(format!("{}: {e}", path.display()));
    let f = File::open(path).map_err(io_err(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| perr(&e))?
        .build()
        .map_err(|e| perr(&e))?;
    let mut rows = Vec::new();
    for batch in reader {
        let b = batch.map_err(|e| perr(&e))?;
        let col = |name: &str| {
            b.column_by_name(name)
                .cloned()
                .ok_or_else(|| perr(&format!("no column `{name}`")))
        };
        let s = |name: &str| -> Result<Vec<Option<String>>, BackfillError> {
            let mut v = Vec::new();
            strings(&col(name)?, &mut v).map_err(|t| perr(&format!("`{name}` is {t}")))?;
            Ok(v)
        };
        let u = |name: &str| -> Result<Vec<Option<u64>>, BackfillError> {
            let c = col(name)?;
            let a = c
                .as_any()
                .downcast_ref::<UInt64Array>()
                .ok_or_else(|| perr(&format!("`{name}` is not u64")))?;
            Ok(a.iter().collect())
        };
        let f = |name: &str| -> Result<Vec<Option<f64>>, BackfillError> {
            let c = col(name)?;
            let a = c
                .as_any()
                .downcast_ref::<Float64Array>()
                .ok_or_else(|| perr(&format!("`{name}` is not f64")))?;
            Ok(a.iter().collect())
        };
        let (job_id, tenant, status, error, key, sha256) = (
            s("job_id")?,
            s("tenant")?,
            s("status")?,
            s("error")?,
            s("key")?,
            s("sha256")?,
        );
        let (size, batch_max, line) = (u("size")?, u("batch_max")?, u("line")?);
        let (enc, den, dec, out) = (
            f("encode_s")?,
            f("denoise_s")?,
            f("decode_s")?,
            f("output_s")?,
        );
        for i in 0..b.num_rows() {
            rows.push(ResultRow {
                job_id: job_id[i].clone().unwrap_or_default(),
                tenant: tenant[i].clone().unwrap_or_default(),
                status: status[i].clone().unwrap_or_default(),
                error: error[i].clone(),
                key: key[i].clone(),
                size: size[i],
                sha256: sha256[i].clone(),
                encode_s: enc[i],
                denoise_s: den[i],
                decode_s: dec[i],
                output_s: out[i],
                batch_max: batch_max[i],
                line: line[i],
            });
        }
    }
    Ok(rows)
}

/// Every `results/part-*.parquet` under a backfill folder, in name order.
pub fn result_parts(out: &Path) -> Result<Vec<PathBuf>, BackfillError> {
    let dir = out.join("results");
    let mut parts = Vec::new();
    match fs::read_dir(&dir) {
        Ok(rd) => {
            for e in rd {
                let p = e.map_err(io_err(&dir))?.path();
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with("part-") && name.ends_with(".parquet") {
                    parts.push(p);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&dir)(e)),
    }
    parts.sort();
    Ok(parts)
}

/// All result rows of a backfill folder (every part of every run).
pub fn read_results(out: &Path) -> Result<Vec<ResultRow>, BackfillError> {
    let mut rows = Vec::new();
    for p in result_parts(out)? {
        rows.extend(read_results_file(&p)?);
    }
    Ok(rows)
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
    };
    Some(ResultRow::from_result(&r, Some(line)))
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

/// Where result rows go during a run: buffered, and written as a new part
/// every `FLUSH_ROWS` rows and at the end.
struct Parts {
    dir: PathBuf,
    process: usize,
    next: usize,
    pending: Vec<ResultRow>,
    written: Vec<PathBuf>,
}

impl Parts {
    fn new(out: &Path, process: usize) -> Result<Parts, BackfillError> {
        let dir = out.join("results");
        let prefix = format!("part-{process}-");
        let next = result_parts(out)?
            .iter()
            .filter_map(|p| {
                p.file_name()?
                    .to_str()?
                    .strip_prefix(&prefix)?
                    .strip_suffix(".parquet")?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |n| n + 1);
        Ok(Parts {
            dir,
            process,
            next,
            pending: Vec::new(),
            written: Vec::new(),
        })
    }

    fn push(&mut self, row: ResultRow) -> Result<(), BackfillError> {
        self.pending.push(row);
        if self.pending.len() >= FLUSH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BackfillError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = self
            .dir
            .join(format!("part-{}-{}.parquet", self.process, self.next));
        write_results(&path, &self.pending)?;
        self.next += 1;
        self.pending.clear();
        self.written.push(path);
        Ok(())
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
                    let rec = DoneRecord {
                        row: row.clone(),
                        pid: std::process::id(),
                        process,
                        recorded_at: unix_now(),
                    };
                    let path = out.join("done").join(format!("{}.json", row.job_id));
                    let text = serde_json::to_vec_pretty(&rec).map_err(|e| BackfillError::Io {
                        path: path.clone(),
                        msg: e.to_string(),
                    })?;
                    write_atomic(&path, &text)?;
                    log.write(
                        serde_json::json!({"event": "adopted", "job_id": row.job_id,
                            "key": row.key, "sha256": row.sha256}),
                        process,
                    );
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
                        serde_json::json!({
                            "event": "recorded", "job_id": row.job_id,
                            "key": row.key, "sha256": row.sha256,
                        }),
                        process,
                    );
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
