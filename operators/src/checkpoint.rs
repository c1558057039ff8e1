//! Denoising checkpoints: every N steps a job's latents and step index go
//! to the object store (`checkpoints/<tenant>/<job_id>/step-<NNNNN>.ckpt`),
//! atomically and with a SHA-256, so a redelivered or restarted job resumes
//! from its newest valid checkpoint instead of step 0.
//!
//! Only latents and the step are stored: everything else a job needs to
//! continue (the latent grid, the sigma schedule, the conditioning) is
//! recomputed from its spec exactly as the first run did, and no random
//! numbers are drawn after the initial noise (the flow-matching sampler is
//! deterministic), so the resumed run's output is byte-identical. A header
//! field binds the checkpoint to the request, so a changed spec under the
//! same job id never resumes from a stranger's latents.

use std::sync::Arc;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vidflow_connectors::store::OutputStore;
use vidflow_gpu::pipeline::{DenoiseState, GenerateRequest};

use crate::faults::{self, Failing, Fault};

const MAGIC: &[u8] = b"VFCKPT1\n";

/// Why a checkpoint could not be written, or why a stored one was refused.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The `checkpoint_write_error` fault point is armed.
    #[error("injected object-store write failure")]
    Injected,
    #[error("latents: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("state: {0}")]
    State(#[from] vidflow_gpu::GpuError),
    #[error("header: {0}")]
    Header(#[from] serde_json::Error),
    #[error("object store: {0}")]
    Store(#[from] vidflow_connectors::OutputError),
    #[error("not a vidflow checkpoint (bad magic)")]
    BadMagic,
    #[error("truncated header")]
    Truncated,
    #[error("belongs to another job or request")]
    Foreign,
    #[error("shape {found:?} does not match the job's latents {expected:?}")]
    Shape {
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("checksum mismatch (corrupt data)")]
    Checksum,
    #[error("{found} data bytes, expected {expected}")]
    Length { found: usize, expected: usize },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Header {
    job_id: String,
    step: usize,
    shape: Vec<usize>,
    /// Hash of the request fields that determine the latents.
    request: String,
    /// SHA-256 of the f32 little-endian data.
    sha256: String,
}

/// Where checkpoints go and how often.
#[derive(Clone)]
pub struct Checkpoints {
    pub store: Arc<OutputStore>,
    /// Denoising steps between checkpoints (0 = off).
    pub every: usize,
    /// Per-tier overrides of `every`.
    pub per_tier: std::collections::BTreeMap<vidflow_job::Tier, usize>,
    /// Newest checkpoints kept per job (older ones are deleted).
    pub keep: usize,
}

/// A checkpoint found and checked.
pub struct Resumed {
    pub step: usize,
    /// Newer checkpoints that failed their checks (key, reason).
    pub rejected: Vec<(String, CheckpointError)>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The request fields a job's latents depend on.
pub fn request_hash(req: &GenerateRequest) -> String {
    let mut h = Sha256::new();
    h.update(&req.prompt);
    h.update([0]);
    h.update(&req.negative_prompt);
    h.update([0]);
    for v in [
        req.width as u64,
        req.height as u64,
        req.num_frames as u64,
        req.steps as u64,
        req.seed,
    ] {
        h.update(v.to_le_bytes());
    }
    h.update(req.fps.to_le_bytes());
    h.update(req.guidance_scale.to_le_bytes());
    h.update([req.image.is_some() as u8]);
    // Conditioned jobs only (t2v/i2v hashes stay as they were): every input
    // frame, where it goes and how strongly, and the re-noising scale.
    if req.is_conditioned() {
        for c in &req.conditions {
            h.update(b"c");
            h.update((c.frame_index as u64).to_le_bytes());
            h.update(c.strength.to_le_bytes());
            h.update((c.frames.frames as u64).to_le_bytes());
            h.update(&c.frames.data);
        }
        if let Some(v) = &req.video_to_video {
            h.update(b"v");
            h.update(v.strength.to_le_bytes());
            h.update(&v.frames.data);
        }
        h.update(req.image_cond_noise_scale.to_le_bytes());
    }
    // A job with an adapter: which file, how strongly (jobs without one
    // keep their hashes).
    if let Some(l) = &req.lora {
        h.update(b"l");
        h.update(l.adapter.sha256.as_bytes());
        h.update(l.strength.to_le_bytes());
    }
    hex(&h.finalize()[..16])
}

fn dir(tenant: &str, job_id: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!("checkpoints/{tenant}/{job_id}"))
}

impl Checkpoints {
    /// Whether `step` (steps done) is a checkpoint step for a `tier` job
    /// of `total` steps.
    pub fn due(&self, tier: vidflow_job::Tier, step: usize, total: usize) -> bool {
        let every = self.per_tier.get(&tier).copied().unwrap_or(self.every);
        every > 0 && step > 0 && step < total && step.is_multiple_of(every)
    }

    /// Writes a checkpoint of `state` (atomic: temp + rename in the store)
    /// and deletes older ones beyond `keep`.
    pub fn save(
        &self,
        tenant: &str,
        job_id: &str,
        req: &GenerateRequest,
        state: &DenoiseState,
    ) -> Result<(), CheckpointError> {
        faults::point(Fault::CheckpointWrite);
        if faults::fail(Failing::CheckpointWriteError) {
            return Err(CheckpointError::Injected);
        }
        // The latents, and for a sampler with history (Wan's UniPC) that
        // history: what resuming at this step needs to continue exactly.
        let snap = state.snapshot()?;
        let data: Vec<f32> = snap.flatten_all()?.to_vec1::<f32>()?;
        let out = encode_checkpoint(job_id, state.step, snap.dims(), &request_hash(req), &data);
        let key = dir(tenant, job_id).join(format!("step-{:05}.ckpt", state.step));
        self.store.put_atomic_blocking(&key, out)?;
        // Older ones beyond `keep`: the store stays bounded per job.
        let mut steps = self.list(tenant, job_id);
        steps.sort_unstable_by(|a, b| b.cmp(a));
        for old in steps.into_iter().skip(self.keep.max(1)) {
            let _ = self.delete_step(tenant, job_id, old);
        }
        Ok(())
    }

    /// The steps of a job's stored checkpoints, listed through the store
    /// (a local directory or S3 alike). An unlistable store lists nothing:
    /// the job then starts from step 0, which costs time, never output.
    fn list(&self, tenant: &str, job_id: &str) -> Vec<usize> {
        let keys = match self.store.list_blocking(&dir(tenant, job_id)) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(tenant = %tenant, job_id = %job_id, error = %e, "listing checkpoints failed");
                return Vec::new();
            }
        };
        steps_of(&keys)
    }

    fn delete_step(&self, tenant: &str, job_id: &str, step: usize) -> Result<(), CheckpointError> {
        let key = dir(tenant, job_id).join(format!("step-{step:05}.ckpt"));
        Ok(self.store.delete_blocking(&key)?)
    }

    /// Deletes every checkpoint of a finished job (from a stage thread).
    pub fn clear(&self, tenant: &str, job_id: &str) {
        for step in self.list(tenant, job_id) {
            let _ = self.delete_step(tenant, job_id, step);
        }
    }

    /// [`Checkpoints::clear`] from async code (the committer): the blocking
    /// store calls refuse to run inside a runtime.
    pub async fn clear_async(&self, tenant: &str, job_id: &str) {
        let d = dir(tenant, job_id);
        let keys = match self.store.list(&d).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(tenant = %tenant, job_id = %job_id, error = %e, "listing checkpoints to delete failed");
                return;
            }
        };
        for step in steps_of(&keys) {
            let _ = self
                .store
                .delete(&d.clone().join(format!("step-{step:05}.ckpt")))
                .await;
        }
    }

    /// Loads the newest checkpoint that passes its checks into `state`
    /// (freshly prepared from the same request). Corrupt or mismatched ones
    /// are reported and the next older one is tried; none → `Ok(None)`.
    pub fn resume(
        &self,
        tenant: &str,
        job_id: &str,
        req: &GenerateRequest,
        state: &mut DenoiseState,
    ) -> Option<Resumed> {
        let mut steps = self.list(tenant, job_id);
        steps.sort_unstable_by(|a, b| b.cmp(a));
        let mut rejected = Vec::new();
        for step in steps {
            let key = dir(tenant, job_id).join(format!("step-{step:05}.ckpt"));
            match self.check(&key, job_id, req, state) {
                Ok(snapshot) => match state.restore(step, &snapshot) {
                    Ok(()) => return Some(Resumed { step, rejected }),
                    Err(e) => rejected.push((key.to_string(), e.into())),
                },
                Err(e) => rejected.push((key.to_string(), e)),
            }
        }
        if !rejected.is_empty() {
            return Some(Resumed { step: 0, rejected });
        }
        None
    }

    fn check(
        &self,
        key: &object_store::path::Path,
        job_id: &str,
        req: &GenerateRequest,
        state: &DenoiseState,
    ) -> Result<Tensor, CheckpointError> {
        let bytes = self.store.get_blocking(key)?;
        let dims = state.snapshot_dims();
        let (_, v) = parse_checkpoint(&bytes, job_id, &request_hash(req), &dims)?;
        Ok(Tensor::from_vec(v, dims, state.latents.device())?)
    }
}

/// The steps named by checkpoint keys (`.../step-NNNNN.ckpt`).
fn steps_of(keys: &[object_store::path::Path]) -> Vec<usize> {
    keys.iter()
        .filter_map(|k| {
            let name = k.filename()?;
            name.strip_prefix("step-")?
                .strip_suffix(".ckpt")?
                .parse()
                .ok()
        })
        .collect()
}

/// A checkpoint file: magic, a JSON header line, then the latents as f32
/// little-endian.
pub fn encode_checkpoint(
    job_id: &str,
    step: usize,
    shape: &[usize],
    request: &str,
    data: &[f32],
) -> Vec<u8> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = Header {
        job_id: job_id.to_string(),
        step,
        shape: shape.to_vec(),
        request: request.to_string(),
        sha256: hex(&Sha256::digest(&bytes)),
    };
    let mut out = MAGIC.to_vec();
    out.extend(serde_json::to_vec(&header).unwrap_or_default());
    out.push(b'\n');
    out.extend(bytes);
    out
}

/// Reads a checkpoint file (untrusted bytes: the store may hold anything)
/// for `job_id`, `request` and latents of `shape`: its step and latents,
/// or why it is refused. Checks the binding before the checksum and the
/// checksum before the length, so nothing is allocated for a stranger.
pub fn parse_checkpoint(
    bytes: &[u8],
    job_id: &str,
    request: &str,
    shape: &[usize],
) -> Result<(usize, Vec<f32>), CheckpointError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(CheckpointError::BadMagic)?;
    let nl = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(CheckpointError::Truncated)?;
    let header: Header = serde_json::from_slice(&rest[..nl])?;
    let data = &rest[nl + 1..];
    if header.job_id != job_id || header.request != request {
        return Err(CheckpointError::Foreign);
    }
    if header.shape != shape {
        return Err(CheckpointError::Shape {
            found: header.shape,
            expected: shape.to_vec(),
        });
    }
    if hex(&Sha256::digest(data)) != header.sha256 {
        return Err(CheckpointError::Checksum);
    }
    let n = shape
        .iter()
        .try_fold(4usize, |acc, &d| acc.checked_mul(d))
        .unwrap_or(usize::MAX);
    if data.len() != n {
        return Err(CheckpointError::Length {
            found: data.len(),
            expected: n,
        });
    }
    let v: Vec<f32> = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((header.step, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    #[test]
    fn checkpoints_are_listed_kept_and_cleared_through_the_store() {
        // An in-memory store: nothing here may go around the store to a
        // file system (the fleet keeps checkpoints on S3).
        let (ctx, _) = testkit::ctx();
        let store = Arc::new(testkit::memory_store());
        let v = testkit::validated("ck-1", r#""kind": "t2v""#);
        let a = crate::admit::prepare(&ctx, &store, v, testkit::date()).unwrap();
        let mut e = crate::encode::encode(&ctx, &mut crate::encode::TextCache::new(4), a).unwrap();
        let ck = Checkpoints {
            store: store.clone(),
            every: 1,
            per_tier: Default::default(),
            keep: 2,
        };
        for step in 1..=3 {
            e.state.step = step;
            ck.save("acme", "ck-1", &e.req, &e.state).unwrap();
        }
        let mut steps = ck.list("acme", "ck-1");
        steps.sort_unstable();
        assert_eq!(steps, vec![2, 3], "only the newest `keep` are kept");
        e.state.step = 0;
        let r = ck.resume("acme", "ck-1", &e.req, &mut e.state).unwrap();
        assert_eq!((r.step, e.state.step), (3, 3));
        assert!(ck.list("globex", "ck-1").is_empty(), "another tenant's job");
        ck.clear("acme", "ck-1");
        assert!(ck.list("acme", "ck-1").is_empty());
    }
}
