//! The summary of a submitted job that the APIs show back to its tenant
//! (model, size, duration, tier, mode, seed, steps, when it was submitted,
//! its prompt): written to the object store at submit, before the job is
//! queued, at `videos/<tenant>/<job_id>.json`. Job events and records say
//! how a job went, not what was asked for; this says what was asked for,
//! and being in the store (the fleet's bucket) any API process can read it.

use object_store::path::Path;
use serde::{Deserialize, Serialize};
use vidflow_job::{JobSpec, ValidatedJob};

use crate::records::check_ids;
use crate::store::OutputStore;
use crate::OutputError;

/// A summary is small; anything larger at its key is not ours.
const MAX_META_BYTES: u64 = 64 * 1024;

/// What a tenant asked for, as admission resolved it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoMeta {
    pub job_id: String,
    pub tenant: String,
    pub model: String,
    /// `t2v`, `i2v` or `v2v`.
    pub kind: String,
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub fps: f64,
    pub tier: String,
    pub mode: String,
    pub seed: u64,
    pub steps: u32,
    /// Unix ms of the submission.
    pub created_ms: u64,
    /// Unix ms the finished video's content was deleted (`DELETE
    /// /v1/videos/{id}`); the record and its charge stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_deleted_ms: Option<u64>,
}

impl VideoMeta {
    pub fn of(job: &ValidatedJob, spec: &JobSpec, now_ms: u64) -> VideoMeta {
        VideoMeta {
            job_id: job.job_id.clone(),
            tenant: job.tenant.clone(),
            model: job.model_id.clone(),
            kind: spec.kind.as_str().to_string(),
            prompt: job.prompt.clone(),
            negative_prompt: job.negative_prompt.clone(),
            width: job.width,
            height: job.height,
            frames: job.num_frames,
            fps: job.fps,
            tier: job.tier.as_str().to_string(),
            mode: job.mode.as_str().to_string(),
            seed: job.seed,
            steps: job.steps,
            created_ms: now_ms,
            content_deleted_ms: None,
        }
    }

    /// The video's duration: frames over the frame rate.
    pub fn seconds(&self) -> f64 {
        if self.fps > 0.0 {
            self.frames as f64 / self.fps
        } else {
            0.0
        }
    }
}

/// `videos/<tenant>/<job_id>.json`.
pub fn meta_key(tenant: &str, job_id: &str) -> Result<Path, OutputError> {
    check_ids(tenant, job_id)?;
    Ok(Path::from(format!("videos/{tenant}/{job_id}.json")))
}

pub async fn write(store: &OutputStore, m: &VideoMeta) -> Result<(), OutputError> {
    let key = meta_key(&m.tenant, &m.job_id)?;
    let bytes = serde_json::to_vec(m).expect("a VideoMeta serializes");
    store.put_atomic(&key, bytes).await.map(|_| ())
}

/// The summary, or `None` when the job was not submitted through an API
/// (straight onto the broker) or the ids are not ids.
pub async fn read(
    store: &OutputStore,
    tenant: &str,
    job_id: &str,
) -> Result<Option<VideoMeta>, OutputError> {
    let Ok(key) = meta_key(tenant, job_id) else {
        return Ok(None);
    };
    match store.get_capped(&key, MAX_META_BYTES).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            OutputError::invalid(
                "video summary",
                key.to_string(),
                format!("a VideoMeta: {e}"),
            )
        }),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn summaries_round_trip_under_the_tenants_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = OutputStore::local(dir.path()).unwrap();
        let m = VideoMeta {
            job_id: "j1".into(),
            tenant: "acme".into(),
            model: "ltx-tiny".into(),
            kind: "t2v".into(),
            prompt: "a fox".into(),
            negative_prompt: String::new(),
            width: 256,
            height: 256,
            frames: 25,
            fps: 24.0,
            tier: "standard".into(),
            mode: "realtime".into(),
            seed: 7,
            steps: 4,
            created_ms: 1,
            content_deleted_ms: None,
        };
        write(&store, &m).await.unwrap();
        assert_eq!(read(&store, "acme", "j1").await.unwrap(), Some(m));
        assert_eq!(read(&store, "globex", "j1").await.unwrap(), None);
        assert_eq!(read(&store, "acme", "../x").await.unwrap(), None);
        assert!(dir.path().join("videos/acme/j1.json").exists());
    }
}
