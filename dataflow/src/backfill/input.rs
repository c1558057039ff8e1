//! Job lists: JSONL lines or a Parquet `spec` column, with derived ids.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use sha2::{Digest, Sha256};
use vidflow_operators::JobSpec;

use super::*;

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

pub(crate) fn parse_job(line: u64, text: &str, what: &str) -> InputJob {
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

pub(crate) fn is_parquet(path: &Path) -> bool {
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
pub(crate) fn read_parquet_specs(path: &Path) -> Result<Vec<Option<String>>, BackfillError> {
    let f = File::open(path).map_err(io_err(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(pq_err(path))?
        .build()
        .map_err(pq_err(path))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(arrow_err(path))?;
        let col = batch
            .column_by_name("spec")
            .ok_or_else(|| column_err(path, ColumnProblem::NoSpec))?;
        strings(col, &mut out).map_err(|t| column_err(path, ColumnProblem::SpecNotString(t)))?;
    }
    Ok(out)
}

pub(crate) fn strings(col: &ArrayRef, out: &mut Vec<Option<String>>) -> Result<(), DataType> {
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
    let schema = Arc::new(Schema::new(vec![Field::new("spec", DataType::Utf8, true)]));
    let col: ArrayRef = Arc::new(specs.iter().map(|s| s.as_deref()).collect::<StringArray>());
    let batch = RecordBatch::try_new(schema.clone(), vec![col]).map_err(arrow_err(path))?;
    let tmp = tmp_path(path);
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut w = ArrowWriter::try_new(file, schema, None).map_err(pq_err(path))?;
    w.write(&batch).map_err(pq_err(path))?;
    w.close().map_err(pq_err(path))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}
