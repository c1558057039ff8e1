//! Result rows and their Parquet parts (written temp + rename).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use vidflow_operators::{JobResult, JobStatus};

use super::*;

/// One row of the results Parquet (and the body of a completion record).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    pub job_id: String,
    pub tenant: String,
    pub status: JobStatus,
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
    pub(crate) fn from_result(r: &JobResult, line: Option<u64>) -> ResultRow {
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
            status: r.status,
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

    pub(crate) fn failed(job_id: &str, error: String, line: u64) -> ResultRow {
        ResultRow {
            job_id: job_id.to_string(),
            tenant: String::new(),
            status: JobStatus::Failed,
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

pub(crate) fn results_schema() -> Arc<Schema> {
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
        str_col(&|r| Some(r.status.as_str())),
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
    let batch = RecordBatch::try_new(schema.clone(), cols).map_err(arrow_err(path))?;
    let tmp = tmp_path(path);
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut w = ArrowWriter::try_new(file, schema, Some(props)).map_err(pq_err(path))?;
    w.write(&batch).map_err(pq_err(path))?;
    let file = w.into_inner().map_err(pq_err(path))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Reads one results part.
pub fn read_results_file(path: &Path) -> Result<Vec<ResultRow>, BackfillError> {
    let f = File::open(path).map_err(io_err(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(pq_err(path))?
        .build()
        .map_err(pq_err(path))?;
    let perr = |problem| column_err(path, problem);
    let mut rows = Vec::new();
    for batch in reader {
        let b = batch.map_err(arrow_err(path))?;
        let col = |name: &str| {
            b.column_by_name(name)
                .cloned()
                .ok_or_else(|| perr(ColumnProblem::Missing(name.to_string())))
        };
        let s = |name: &str| -> Result<Vec<Option<String>>, BackfillError> {
            let mut v = Vec::new();
            strings(&col(name)?, &mut v).map_err(|found| {
                perr(ColumnProblem::NotString {
                    column: name.to_string(),
                    found,
                })
            })?;
            Ok(v)
        };
        let u = |name: &str| -> Result<Vec<Option<u64>>, BackfillError> {
            let c = col(name)?;
            let a = c
                .as_any()
                .downcast_ref::<UInt64Array>()
                .ok_or_else(|| perr(ColumnProblem::NotU64(name.to_string())))?;
            Ok(a.iter().collect())
        };
        let f = |name: &str| -> Result<Vec<Option<f64>>, BackfillError> {
            let c = col(name)?;
            let a = c
                .as_any()
                .downcast_ref::<Float64Array>()
                .ok_or_else(|| perr(ColumnProblem::NotF64(name.to_string())))?;
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
                status: status[i]
                    .as_deref()
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e| perr(ColumnProblem::Status(e)))?,
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

/// Where result rows go during a run: buffered, and written as a new part
/// every `FLUSH_ROWS` rows and at the end.
pub(crate) struct Parts {
    dir: PathBuf,
    process: usize,
    next: usize,
    pending: Vec<ResultRow>,
    pub(crate) written: Vec<PathBuf>,
}

impl Parts {
    pub(crate) fn new(out: &Path, process: usize) -> Result<Parts, BackfillError> {
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

    pub(crate) fn push(&mut self, row: ResultRow) -> Result<(), BackfillError> {
        self.pending.push(row);
        if self.pending.len() >= FLUSH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> Result<(), BackfillError> {
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
