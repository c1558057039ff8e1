//! Reading the datasets back: the jobs already in Parquet (at open) and
//! the billing rows (`vidflow report billing`, the tests).

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use arrow_array::{Int64Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use vidflow_job::ledger::BillingRow;
use vidflow_job::JobKey;

use super::{io, SinkError};

/// (tenant, job id) of the jobs already in a dataset's parts.
pub(super) fn read_ids(dir: &Path) -> Result<HashSet<JobKey>, SinkError> {
    let mut ids = HashSet::new();
    for p in parquet_files(dir) {
        let perr = |source| SinkError::Parquet {
            path: p.display().to_string(),
            source,
        };
        let f = File::open(&p).map_err(io(&p))?;
        let b = ParquetRecordBatchReaderBuilder::try_new(f).map_err(perr)?;
        let mask = ProjectionMask::columns(b.parquet_schema(), ["tenant", "job_id"]);
        for batch in b.with_projection(mask).build().map_err(perr)? {
            let batch = batch.map_err(|source| SinkError::Arrow {
                path: p.display().to_string(),
                source,
            })?;
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                    .ok_or_else(|| SinkError::Column {
                        path: p.display().to_string(),
                        problem: format!("column {name} is missing or not text"),
                    })
            };
            let (tenants, jobs) = (col("tenant")?, col("job_id")?);
            for (t, j) in tenants.iter().zip(jobs.iter()) {
                if let (Some(t), Some(j)) = (t, j) {
                    ids.insert(JobKey::new(t, j));
                }
            }
        }
    }
    Ok(ids)
}

/// Every `.parquet` file under `dir` (hidden temp files excluded).
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            out.extend(parquet_files(&p));
        } else if name.ends_with(".parquet") && !name.starts_with('.') {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Reads the billing dataset back (for `vidflow report billing`).
pub fn read_billing(root: &Path) -> Result<Vec<BillingRow>, SinkError> {
    use arrow_array::{Array, Float64Array, UInt32Array, UInt64Array};
    let mut out = Vec::new();
    for p in parquet_files(&root.join("billing")) {
        let path = || p.display().to_string();
        let perr = |problem: String| SinkError::Column {
            path: path(),
            problem,
        };
        let f = File::open(&p).map_err(io(&p))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(f)
            .and_then(|b| b.build())
            .map_err(|source| SinkError::Parquet {
                path: path(),
                source,
            })?;
        for batch in reader {
            let b = batch.map_err(|source| SinkError::Arrow {
                path: path(),
                source,
            })?;
            let col = |name: &str| {
                b.column_by_name(name)
                    .cloned()
                    .ok_or_else(|| perr(format!("no column `{name}`")))
            };
            let st = |name: &str| -> Result<StringArray, SinkError> {
                col(name)?
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .ok_or_else(|| perr(format!("column `{name}` is not text")))
            };
            let (job, tenant, tier, class, kind, ver) = (
                st("job_id")?,
                st("tenant")?,
                st("tier")?,
                st("resolution_class")?,
                st("kind")?,
                st("price_version")?,
            );
            let amount = col("amount_micro")?;
            let amount = amount
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| perr("amount_micro is not int64".into()))?;
            let ms = col("billed_ms")?;
            let ms = ms
                .as_any()
                .downcast_ref::<UInt64Array>()
                .ok_or_else(|| perr("billed_ms is not uint64".into()))?;
            let acc = col("accelerator_s")?;
            let acc = acc
                .as_any()
                .downcast_ref::<Float64Array>()
                .ok_or_else(|| perr("accelerator_s is not float64".into()))?;
            let (w, h) = (col("width")?, col("height")?);
            let w = w.as_any().downcast_ref::<UInt32Array>().cloned();
            let h = h.as_any().downcast_ref::<UInt32Array>().cloned();
            let cost = col("compute_cost_usd")?;
            let cost = cost
                .as_any()
                .downcast_ref::<arrow_array::Decimal128Array>()
                .ok_or_else(|| perr("compute_cost_usd is not decimal".into()))?;
            let tsc = col("ts")?;
            let tsc = tsc
                .as_any()
                .downcast_ref::<arrow_array::TimestampMillisecondArray>()
                .ok_or_else(|| perr("ts is not a timestamp".into()))?;
            for i in 0..b.num_rows() {
                out.push(BillingRow {
                    job_id: job.value(i).into(),
                    tenant: tenant.value(i).into(),
                    tier: tier.value(i).into(),
                    resolution_class: class.value(i).into(),
                    width: w.as_ref().map(|a| a.value(i)).unwrap_or(0),
                    height: h.as_ref().map(|a| a.value(i)).unwrap_or(0),
                    kind: kind
                        .value(i)
                        .parse()
                        .map_err(|source| SinkError::EntryKind {
                            path: path(),
                            source,
                        })?,
                    billed_ms: ms.value(i),
                    unit_micro_per_s: 0,
                    amount_micro: amount.value(i),
                    price_version: ver.value(i).into(),
                    accelerator_s: acc.value(i),
                    compute_cost_micro: cost.value(i) as i64,
                    ts_ms: if tsc.is_null(i) {
                        0
                    } else {
                        tsc.value(i) as u64
                    },
                });
            }
        }
    }
    Ok(out)
}
