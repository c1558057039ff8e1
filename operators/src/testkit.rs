//! Fixtures for the stage unit tests: the built-in tiny model, an
//! in-memory object store and event channel (no disk, no broker, no timely).

use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;

use vidflow_connectors::store::OutputStore;
use vidflow_job::event::JobEvent;
use vidflow_job::{AdmissionConfig, JobSpec, ValidatedJob};

use crate::{EventSink, StageCtx};

pub fn admission() -> AdmissionConfig {
    AdmissionConfig::builtin_tiny()
}

/// A stage context with the tiny model, events to the returned channel.
pub fn ctx() -> (StageCtx, Receiver<JobEvent>) {
    let (tx, rx) = channel();
    let models = crate::context::load_models(&admission()).expect("the tiny model loads");
    (StageCtx::new(models, EventSink::new(tx), None), rx)
}

pub fn memory_store() -> OutputStore {
    OutputStore::new(Arc::new(object_store::memory::InMemory::new()))
}

pub fn date() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 12, 3).expect("a date")
}

/// A small validated job: 256x256, 9 frames, 2 steps, no CFG, plus
/// `extra` JSON fields (at least `kind`).
pub fn validated(job_id: &str, extra: &str) -> ValidatedJob {
    let text = format!(
        r#"{{"job_id": "{job_id}", "tenant": "acme", "tier": "standard", "prompt": "a red fox",
            "resolution": "256x256", "frames": 9, "steps": 2, "guidance": 1.0, "seed": 7, {extra}}}"#
    );
    let spec = JobSpec::from_json(&text).expect("a valid spec");
    vidflow_job::validate(&spec, &admission()).expect("a valid job")
}

/// A PNG of a horizontal gradient.
pub fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, _| image::Rgb([(x * 255 / w) as u8, 90, 30]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("PNG encode");
    out.into_inner()
}

/// The repository's policy and the safety models from the model cache
/// (`scripts/setup-models.sh`), recording into a fresh in-memory store.
pub fn safety() -> (crate::safety_record::Safety, Arc<OutputStore>) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg = crate::safety_record::SafetyConfig::in_repo(&root);
    let store = Arc::new(memory_store());
    let s = crate::safety_record::Safety::load(&cfg, store.clone())
        .unwrap_or_else(|e| panic!("{e} (the stage tests need the safety models)"));
    (s, store)
}
