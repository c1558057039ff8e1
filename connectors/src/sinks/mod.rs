//! Parquet analytics sinks: `billing/`, `metrics/` and `jobs/` datasets
//! under one root, hive-partitioned by date (`date=yyyy-mm-dd/`), zstd.
//! Schemas: docs/ANALYTICS.md.
//!
//! Durability: a job's rows live first in its record (written before the
//! ack). Each commit also appends them to an outbox segment (a JSON-lines
//! file, fsync'd before the append returns; appends that finish together
//! share one fsync); a segment rolls into Parquet parts when it holds
//! `max_rows` jobs, `max_bytes` of rows, or is `max_age_s` old, each part written to a dot-file and
//! renamed (no reader ever sees a partial file), then the segment is
//! deleted. At start-up leftover segments are rolled, and every record
//! whose job is in no part yet is re-derived, so what was acked always
//! reaches Parquet. Duplicates are impossible: the job ids already in the
//! `jobs` dataset are loaded at start and skipped.
//!
//! Several nodes may share one root: each has its own outbox
//! (`_outbox/<node>/`) and names its parts after itself, so none rolls or
//! deletes another's live segment; that a job's rows are written by one
//! node only is the shared state's doing (only the commit that won
//! appends them, and a node recovers only the records it won).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use vidflow_job::ledger::{BillingRow, JobRecord, JobRow, MetricsRow, SafetyRow};
use vidflow_job::JobKey;

use crate::batches::{billing_batch, jobs_batch, metrics_batch, safety_batch};

mod mirror;
mod read;
pub use mirror::PartMirror;
use read::read_ids;
pub use read::{parquet_files, read_billing};

/// `[sinks]` in `configs/vidflow.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Roll the outbox into Parquet at this many jobs...
    #[serde(default = "default_rows")]
    pub max_rows: usize,
    /// ...or this many bytes of pending rows...
    #[serde(default = "default_bytes")]
    pub max_bytes: u64,
    /// ...or when its oldest row is this old.
    #[serde(default = "default_age")]
    pub max_age_s: f64,
    /// Where the datasets go; default `<engine.out_dir>/analytics`. The
    /// nodes of a fleet may point this at one shared directory: each writes
    /// its own outbox and part files there.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// Also put every part into the object store (`[store]`, a fleet's
    /// bucket) under this prefix, e.g. `analytics`: all nodes' rows under
    /// one S3 prefix while each keeps its files in its own directory.
    #[serde(default)]
    pub store_prefix: Option<String>,
}

fn default_rows() -> usize {
    1000
}
fn default_bytes() -> u64 {
    8 << 20
}
fn default_age() -> f64 {
    60.0
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            max_rows: default_rows(),
            max_bytes: default_bytes(),
            max_age_s: default_age(),
            root: None,
            store_prefix: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: {source}")]
    Arrow {
        path: String,
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A part could not be copied to the object store.
    #[error("copying an analytics part to {key}: {source}")]
    Mirror {
        key: String,
        #[source]
        source: crate::OutputError,
    },
    /// A billing part that reads, but not as the billing table.
    #[error("{path}: {problem}")]
    Column { path: String, problem: String },
    #[error("{path}: {source}")]
    EntryKind {
        path: String,
        #[source]
        source: vidflow_job::ledger::UnknownEntryKind,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One outbox line: a job's rows.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Line {
    job_id: String,
    #[serde(default)]
    tenant: String,
    billing: Option<BillingRow>,
    metrics: Option<MetricsRow>,
    #[serde(default)]
    safety: Vec<SafetyRow>,
    job: Option<JobRow>,
}

struct Segment {
    id: String,
    path: PathBuf,
    file: File,
    rows: usize,
    bytes: u64,
    opened: Instant,
}

impl Line {
    /// Whose job this is: the key analytics de-duplication goes by (two
    /// tenants may both have a `job-1`; each keeps its rows).
    fn key(&self) -> JobKey {
        let tenant = match (&self.tenant, &self.job) {
            (t, Some(j)) if t.is_empty() => j.tenant.clone(),
            (t, _) => t.clone(),
        };
        JobKey::new(tenant, self.job_id.clone())
    }
}

struct State {
    seg: Option<Segment>,
    /// Jobs whose rows are in Parquet, by (tenant, job id).
    sunk: HashSet<JobKey>,
    seq: u64,
    /// Lines appended so far (all segments): what a group fsync covers.
    written: u64,
}

pub struct Sinks {
    root: PathBuf,
    /// This node's outbox directory, `_outbox/<node>/`.
    outbox: PathBuf,
    /// In every segment and part name.
    node: String,
    /// Where parts are copied, if anywhere.
    mirror: Option<PartMirror>,
    cfg: SinkConfig,
    state: Mutex<State>,
    /// Lines known durable (`State::written` at the last group fsync).
    synced: Mutex<u64>,
}

pub const DATASETS: [&str; 4] = ["billing", "metrics", "safety", "jobs"];

impl Sinks {
    /// Opens the sinks of a single node at `root` and rolls any outbox
    /// left by a crash (its own and, there being no other node, any other
    /// directory under `_outbox/`).
    pub fn open(root: &Path, cfg: SinkConfig) -> Result<Arc<Sinks>, SinkError> {
        Self::open_node(root, cfg, "local", true)
    }

    /// Opens the sinks of node `node` at `root`, which other nodes may
    /// share: its outbox is `_outbox/<node>/` and its part files carry its
    /// name, so no node rolls, deletes or overwrites another's. With
    /// `adopt_others` (one node only) every leftover outbox is rolled.
    pub fn open_node(
        root: &Path,
        cfg: SinkConfig,
        node: &str,
        adopt_others: bool,
    ) -> Result<Arc<Sinks>, SinkError> {
        Self::open_mirrored(root, cfg, node, adopt_others, None)
    }

    /// [`Sinks::open_node`], copying every part into `mirror` too (and,
    /// first, any local part the mirror lacks).
    pub fn open_mirrored(
        root: &Path,
        cfg: SinkConfig,
        node: &str,
        adopt_others: bool,
        mirror: Option<PartMirror>,
    ) -> Result<Arc<Sinks>, SinkError> {
        let node = safe_node(node);
        let outbox = root.join("_outbox").join(&node);
        fs::create_dir_all(&outbox).map_err(io(&outbox))?;
        let sunk = read_ids(&root.join("jobs"))?;
        if let Some(m) = &mirror {
            let n = m.catch_up(root)?;
            if n > 0 {
                tracing::warn!(parts = n, "copied analytics parts the object store lacked");
            }
        }
        let s = Arc::new(Sinks {
            root: root.to_path_buf(),
            outbox: outbox.clone(),
            node,
            mirror,
            cfg,
            state: Mutex::new(State {
                seg: None,
                sunk,
                seq: 0,
                written: 0,
            }),
            synced: Mutex::new(0),
        });
        let mut dirs = vec![outbox];
        if adopt_others {
            let all = root.join("_outbox");
            dirs.push(all.clone());
            for e in fs::read_dir(&all).map_err(io(&all))?.flatten() {
                if e.path().is_dir() && e.path() != dirs[0] {
                    dirs.push(e.path());
                }
            }
        }
        for dir in dirs {
            let mut left: Vec<PathBuf> = fs::read_dir(&dir)
                .map_err(io(&dir))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect();
            left.sort();
            for p in left {
                let id = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mut st = s.state.lock().expect("sink state poisoned");
                s.convert(&mut st, &id, &p)?;
            }
        }
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Appends the rows of records whose jobs are not in Parquet yet (the
    /// ones acked just before a crash) and rolls them. Returns how many.
    pub fn recover(&self, records: &[JobRecord]) -> Result<usize, SinkError> {
        let missing: Vec<&JobRecord> = {
            let st = self.state.lock().expect("sink state poisoned");
            records
                .iter()
                .filter(|r| {
                    r.job.is_some()
                        && !st
                            .sunk
                            .contains(&JobKey::new(r.tenant.clone(), r.job_id.clone()))
                })
                .collect()
        };
        for r in &missing {
            self.append(r)?;
        }
        if !missing.is_empty() {
            self.flush()?;
        }
        Ok(missing.len())
    }

    /// Appends a finished job's rows (durable on return).
    pub fn append(&self, r: &JobRecord) -> Result<(), SinkError> {
        let line = Line {
            job_id: r.job_id.clone(),
            tenant: r.tenant.clone(),
            billing: r.billing.clone(),
            metrics: r.metrics.clone(),
            safety: r.safety.clone(),
            job: r.job.clone(),
        };
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        let mut st = self.state.lock().expect("sink state poisoned");
        if st.seg.is_none() {
            st.seq += 1;
            let id = format!(
                "{:013}-{}-{}-{}",
                vidflow_job::event::now_ms(),
                self.node,
                std::process::id(),
                st.seq
            );
            let path = self.outbox.join(format!("{id}.jsonl"));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            st.seg = Some(Segment {
                id,
                path,
                file,
                rows: 0,
                bytes: 0,
                opened: Instant::now(),
            });
        }
        let seg = st.seg.as_mut().expect("segment just opened");
        seg.file.write_all(text.as_bytes()).map_err(io(&seg.path))?;
        seg.rows += 1;
        seg.bytes += text.len() as u64;
        st.written += 1;
        let mine = st.written;
        let seg = st.seg.as_ref().expect("segment just written");
        if seg.rows >= self.cfg.max_rows || seg.bytes >= self.cfg.max_bytes {
            // Rolled: the line is in fsync'd Parquet parts now.
            self.roll(&mut st)?;
        }
        drop(st);
        self.sync_through(mine)
    }

    /// Returns once line `mine` is durable: one fsync of the current
    /// segment covers every line appended before it began, so commits
    /// finishing together share it (a group commit) instead of paying one
    /// fsync each. Lines of earlier segments are durable already: a
    /// segment is rolled into fsync'd parts, under the state lock, before
    /// the next one opens.
    fn sync_through(&self, mine: u64) -> Result<(), SinkError> {
        let mut synced = self.synced.lock().expect("sink sync poisoned");
        if *synced >= mine {
            return Ok(());
        }
        let (target, current) = {
            let st = self.state.lock().expect("sink state poisoned");
            let current = match &st.seg {
                Some(seg) => Some((
                    seg.file.try_clone().map_err(io(&seg.path))?,
                    seg.path.clone(),
                )),
                None => None,
            };
            (st.written, current)
        };
        if let Some((file, path)) = current {
            file.sync_data().map_err(io(&path))?;
        }
        *synced = target;
        Ok(())
    }

    /// Rolls the outbox if its oldest row is older than `max_age_s`.
    pub fn flush_if_due(&self) -> Result<(), SinkError> {
        let mut st = self.state.lock().expect("sink state poisoned");
        let due = st
            .seg
            .as_ref()
            .is_some_and(|s| s.opened.elapsed().as_secs_f64() >= self.cfg.max_age_s);
        if due {
            self.roll(&mut st)?;
        }
        Ok(())
    }

    /// Rolls the outbox now (shutdown, tests).
    pub fn flush(&self) -> Result<(), SinkError> {
        let mut st = self.state.lock().expect("sink state poisoned");
        self.roll(&mut st)
    }

    fn roll(&self, st: &mut State) -> Result<(), SinkError> {
        let Some(seg) = st.seg.take() else {
            return Ok(());
        };
        drop(seg.file);
        self.convert(st, &seg.id, &seg.path)
    }

    /// Segment → one part per dataset and date → delete the segment.
    fn convert(&self, st: &mut State, id: &str, path: &Path) -> Result<(), SinkError> {
        let f = File::open(path).map_err(io(path))?;
        let mut lines = Vec::new();
        let mut seen = HashSet::new();
        for l in BufReader::new(f).lines() {
            let l = l.map_err(io(path))?;
            // A torn last line (crash mid-append) is the only way a line
            // fails to parse; its job's record re-derives it at start-up.
            let Ok(line) = serde_json::from_str::<Line>(&l) else {
                continue;
            };
            let key = line.key();
            if st.sunk.contains(&key) || !seen.insert(key) {
                continue;
            }
            lines.push(line);
        }
        let mut by_date: BTreeMap<String, Vec<&Line>> = BTreeMap::new();
        for l in &lines {
            let ts = l.job.as_ref().map(|j| j.finished_ms).unwrap_or(0);
            by_date
                .entry(vidflow_job::quota::date_of_ms(ts))
                .or_default()
                .push(l);
        }
        for (date, ls) in &by_date {
            let billing: Vec<&BillingRow> = ls.iter().filter_map(|l| l.billing.as_ref()).collect();
            let metrics: Vec<&MetricsRow> = ls.iter().filter_map(|l| l.metrics.as_ref()).collect();
            let jobs: Vec<&JobRow> = ls.iter().filter_map(|l| l.job.as_ref()).collect();
            if !billing.is_empty() {
                self.write_part("billing", date, id, billing_batch(&billing))?;
            }
            if !metrics.is_empty() {
                self.write_part("metrics", date, id, metrics_batch(&metrics))?;
            }
            let safety: Vec<&SafetyRow> = ls.iter().flat_map(|l| l.safety.iter()).collect();
            if !safety.is_empty() {
                self.write_part("safety", date, id, safety_batch(&safety))?;
            }
            // Jobs last: its ids are what marks a job as sunk.
            if !jobs.is_empty() {
                self.write_part("jobs", date, id, jobs_batch(&jobs))?;
            }
        }
        for l in lines {
            st.sunk.insert(l.key());
        }
        fs::remove_file(path).map_err(io(path))?;
        Ok(())
    }

    fn write_part(
        &self,
        dataset: &str,
        date: &str,
        id: &str,
        batch: RecordBatch,
    ) -> Result<(), SinkError> {
        let dir = self.root.join(dataset).join(format!("date={date}"));
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let final_path = dir.join(format!("part-{id}.parquet"));
        let tmp = dir.join(format!(".part-{id}.parquet.tmp"));
        let perr = |source| SinkError::Parquet {
            path: tmp.display().to_string(),
            source,
        };
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(perr)?;
        w.write(&batch).map_err(perr)?;
        let file = w.into_inner().map_err(perr)?;
        file.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &final_path).map_err(io(&final_path))?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        if let Some(m) = &self.mirror {
            m.put(dataset, &final_path)?;
        }
        Ok(())
    }
}

/// A node name as a file name part: characters other than
/// `A-Z a-z 0-9 . _ -` become `_` (a host name may hold anything).
fn safe_node(node: &str) -> String {
    let n: String = node
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match n.as_str() {
        "" | "." | ".." => "node".into(),
        _ => n,
    }
}

#[cfg(test)]
mod tests;
