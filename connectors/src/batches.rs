//! The Arrow record batches of the analytics datasets (`billing/`,
//! `metrics/`, `jobs/`, `safety/`): one builder per row type, all here, so
//! the Parquet schemas in `docs/ANALYTICS.md` are read from one file. The
//! rows themselves are built in `vidflow_job::ledger`.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Decimal128Builder, Float64Builder, StringBuilder, TimestampMillisecondBuilder,
    UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use vidflow_job::ledger::{BillingRow, JobRow, MetricsRow, SafetyRow};

fn usd_field(name: &str) -> Field {
    Field::new(name, DataType::Decimal128(18, 6), false)
}

pub(crate) fn ts_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        false,
    )
}

pub(crate) fn strings<'a>(v: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}

fn usd(v: impl Iterator<Item = i64>) -> ArrayRef {
    let mut b = Decimal128Builder::new();
    for x in v {
        b.append_value(x as i128);
    }
    Arc::new(
        b.finish()
            .with_precision_and_scale(18, 6)
            .expect("valid decimal"),
    )
}

pub(crate) fn ts(v: impl Iterator<Item = u64>) -> ArrayRef {
    let mut b = TimestampMillisecondBuilder::new();
    for x in v {
        b.append_value(x as i64);
    }
    Arc::new(b.finish().with_timezone("UTC"))
}

fn u32s(v: impl Iterator<Item = u32>) -> ArrayRef {
    let mut b = UInt32Builder::new();
    v.for_each(|x| b.append_value(x));
    Arc::new(b.finish())
}

fn u64s(v: impl Iterator<Item = u64>) -> ArrayRef {
    let mut b = UInt64Builder::new();
    v.for_each(|x| b.append_value(x));
    Arc::new(b.finish())
}

pub(crate) fn f64s(v: impl Iterator<Item = f64>) -> ArrayRef {
    let mut b = Float64Builder::new();
    v.for_each(|x| b.append_value(x));
    Arc::new(b.finish())
}

pub(crate) fn batch(fields: Vec<Field>, cols: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("columns match the schema")
}

pub(crate) fn billing_batch(r: &[&BillingRow]) -> RecordBatch {
    let s = |f: fn(&BillingRow) -> &str| strings(r.iter().map(move |x| f(x)));
    let mut seconds = Decimal128Builder::new();
    for x in r {
        seconds.append_value(x.billed_ms as i128);
    }
    batch(
        vec![
            Field::new("job_id", DataType::Utf8, false),
            Field::new("tenant", DataType::Utf8, false),
            Field::new("tier", DataType::Utf8, false),
            Field::new("resolution_class", DataType::Utf8, false),
            Field::new("width", DataType::UInt32, false),
            Field::new("height", DataType::UInt32, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("billed_ms", DataType::UInt64, false),
            Field::new("seconds", DataType::Decimal128(18, 3), false),
            usd_field("unit_price_usd"),
            usd_field("amount_usd"),
            Field::new("amount_micro", DataType::Int64, false),
            Field::new("price_version", DataType::Utf8, false),
            Field::new("accelerator_s", DataType::Float64, false),
            usd_field("compute_cost_usd"),
            ts_field("ts"),
        ],
        vec![
            s(|x| &x.job_id),
            s(|x| &x.tenant),
            s(|x| &x.tier),
            s(|x| &x.resolution_class),
            u32s(r.iter().map(|x| x.width)),
            u32s(r.iter().map(|x| x.height)),
            s(|x| x.kind.as_str()),
            u64s(r.iter().map(|x| x.billed_ms)),
            Arc::new(
                seconds
                    .finish()
                    .with_precision_and_scale(18, 3)
                    .expect("valid decimal"),
            ),
            usd(r.iter().map(|x| x.unit_micro_per_s)),
            usd(r.iter().map(|x| x.amount_micro)),
            Arc::new(Int64Array::from_iter_values(
                r.iter().map(|x| x.amount_micro),
            )),
            s(|x| &x.price_version),
            f64s(r.iter().map(|x| x.accelerator_s)),
            usd(r.iter().map(|x| x.compute_cost_micro)),
            ts(r.iter().map(|x| x.ts_ms)),
        ],
    )
}

pub(crate) fn metrics_batch(r: &[&MetricsRow]) -> RecordBatch {
    let s = |f: fn(&MetricsRow) -> &str| strings(r.iter().map(move |x| f(x)));
    let f = |g: fn(&MetricsRow) -> f64| f64s(r.iter().map(move |x| g(x)));
    batch(
        vec![
            Field::new("job_id", DataType::Utf8, false),
            Field::new("tenant", DataType::Utf8, false),
            Field::new("tier", DataType::Utf8, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("queue_wait_ms", DataType::UInt64, false),
            Field::new("start_wait_s", DataType::Float64, false),
            Field::new("preemptions", DataType::UInt32, false),
            Field::new("predicted_accel_s", DataType::Float64, false),
            Field::new("encode_s", DataType::Float64, false),
            Field::new("denoise_s", DataType::Float64, false),
            Field::new("decode_s", DataType::Float64, false),
            Field::new("output_s", DataType::Float64, false),
            Field::new("steps", DataType::UInt32, false),
            Field::new("batch_max", DataType::UInt32, false),
            Field::new("batch_mean", DataType::Float64, false),
            Field::new("accelerator_s", DataType::Float64, false),
            Field::new("accelerator", DataType::Utf8, false),
            Field::new("peak_rss_bytes", DataType::UInt64, false),
            Field::new("est_vram_bytes", DataType::UInt64, false),
            usd_field("compute_cost_usd"),
            usd_field("margin_usd"),
            ts_field("ts"),
        ],
        vec![
            s(|x| &x.job_id),
            s(|x| &x.tenant),
            s(|x| &x.tier),
            s(|x| x.status.as_str()),
            u64s(r.iter().map(|x| x.queue_wait_ms)),
            f(|x| x.start_wait_s),
            u32s(r.iter().map(|x| x.preemptions)),
            f(|x| x.predicted_accel_s),
            f(|x| x.encode_s),
            f(|x| x.denoise_s),
            f(|x| x.decode_s),
            f(|x| x.output_s),
            u32s(r.iter().map(|x| x.steps)),
            u32s(r.iter().map(|x| x.batch_max)),
            f(|x| x.batch_mean),
            f(|x| x.accelerator_s),
            s(|x| &x.accelerator),
            u64s(r.iter().map(|x| x.peak_rss_bytes)),
            u64s(r.iter().map(|x| x.est_vram_bytes)),
            usd(r.iter().map(|x| x.compute_cost_micro)),
            usd(r.iter().map(|x| x.margin_micro)),
            ts(r.iter().map(|x| x.ts_ms)),
        ],
    )
}

pub(crate) fn jobs_batch(r: &[&JobRow]) -> RecordBatch {
    let s = |f: fn(&JobRow) -> &str| strings(r.iter().map(move |x| f(x)));
    let opt = |f: fn(&JobRow) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::new();
        for x in r {
            b.append_option(f(x));
        }
        Arc::new(b.finish())
    };
    let mut size = UInt64Builder::new();
    let mut untrained = BooleanBuilder::new();
    for x in r {
        size.append_option(x.size);
        untrained.append_value(x.untrained);
    }
    batch(
        vec![
            Field::new("job_id", DataType::Utf8, false),
            Field::new("tenant", DataType::Utf8, false),
            Field::new("tier", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("error", DataType::Utf8, true),
            Field::new("width", DataType::UInt32, false),
            Field::new("height", DataType::UInt32, false),
            Field::new("frames", DataType::UInt32, false),
            Field::new("fps", DataType::Float64, false),
            Field::new("resolution_class", DataType::Utf8, false),
            Field::new("output_key", DataType::Utf8, true),
            Field::new("size", DataType::UInt64, true),
            Field::new("sha256", DataType::Utf8, true),
            Field::new("untrained", DataType::Boolean, false),
            ts_field("submitted"),
            ts_field("finished"),
        ],
        vec![
            s(|x| &x.job_id),
            s(|x| &x.tenant),
            s(|x| &x.tier),
            s(|x| &x.kind),
            s(|x| x.status.as_str()),
            opt(|x| x.error.as_deref()),
            u32s(r.iter().map(|x| x.width)),
            u32s(r.iter().map(|x| x.height)),
            u32s(r.iter().map(|x| x.frames)),
            f64s(r.iter().map(|x| x.fps)),
            s(|x| &x.resolution_class),
            opt(|x| x.output_key.as_deref()),
            Arc::new(size.finish()),
            opt(|x| x.sha256.as_deref()),
            Arc::new(untrained.finish()),
            ts(r.iter().map(|x| x.submitted_ms)),
            ts(r.iter().map(|x| x.finished_ms)),
        ],
    )
}

pub(crate) fn safety_batch(r: &[&SafetyRow]) -> RecordBatch {
    let s = |f: fn(&SafetyRow) -> &str| strings(r.iter().map(move |x| f(x)));
    let blocked: ArrayRef = Arc::new(BooleanArray::from_iter(
        r.iter().map(|x| Some(x.decision == "block")),
    ));
    batch(
        vec![
            Field::new("job_id", DataType::Utf8, false),
            Field::new("tenant", DataType::Utf8, false),
            Field::new("stage", DataType::Utf8, false),
            Field::new("decision", DataType::Utf8, false),
            Field::new("blocked", DataType::Boolean, false),
            Field::new("category", DataType::Utf8, false),
            Field::new("reason", DataType::Utf8, false),
            Field::new("scores_json", DataType::Utf8, false),
            Field::new("policy_version", DataType::Utf8, false),
            Field::new("model_versions", DataType::Utf8, false),
            Field::new("latency_ms", DataType::Float64, false),
            ts_field("ts"),
        ],
        vec![
            s(|x| &x.job_id),
            s(|x| &x.tenant),
            s(|x| &x.stage),
            s(|x| &x.decision),
            blocked,
            s(|x| &x.category),
            s(|x| &x.reason),
            s(|x| &x.scores_json),
            s(|x| &x.policy_version),
            s(|x| &x.model_versions),
            f64s(r.iter().map(|x| x.latency_ms)),
            ts(r.iter().map(|x| x.ts_ms)),
        ],
    )
}
