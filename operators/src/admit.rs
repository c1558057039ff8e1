//! Admission. A job is validated once, where it enters ([`vidflow_job::validate`]
//! at the driver or the queue consumer: cheap checks, an image's header
//! but none of its pixels); the validated job is what travels.
//! [`prepare`], the graph's first stage (on its own thread: it reads the
//! store and decodes), turns it into the runtime request, reading a first
//! frame named by key (size-capped) and decoding the first frame once, and
//! announces it; [`refused`] is the failed result of a spec that did not
//! pass.

use sha2::{Digest, Sha256};
use vidflow_connectors::store::OutputStore;
use vidflow_gpu::pipeline::GenerateRequest;
use vidflow_job::event::{JobEvent, Stage};
use vidflow_job::result::{Failure, JobMeta, JobResult};
use vidflow_job::validate::LoraSource;
use vidflow_job::validate::MAX_INLINE_IMAGE_BYTES;
use vidflow_job::{ImageInput, JobError, JobSpec, ValidatedJob};

use crate::error::{ImageKeyError, StageError};
use crate::{AdmittedJob, Msg, StageCtx};

/// The runtime request of an admitted job, announced with `accepted`.
/// `date` (UTC) becomes part of the output key.
pub fn prepare(
    ctx: &StageCtx,
    store: &OutputStore,
    v: ValidatedJob,
    date: chrono::NaiveDate,
) -> Msg<AdmittedJob> {
    let mut meta = JobMeta::new(
        v.job_id.clone(),
        v.tenant.clone(),
        v.model_id.clone(),
        v.tier,
        date,
    );
    meta.submitted_ms = v.submitted_ms;
    let req = to_request(&v, store).and_then(|mut req| {
        req.lora = load_lora(ctx, store, &v)?;
        Ok(req)
    });
    match req {
        Ok(req) => {
            ctx.events
                .emit(&v.tenant, JobEvent::Accepted { job_id: v.job_id });
            Ok(AdmittedJob { meta, req })
        }
        Err(e) => Err(Failure::new(meta, Stage::Admit, e)),
    }
}

/// The failed result of a spec that did not pass validation.
pub fn refused(spec: &JobSpec, e: &JobError, date: chrono::NaiveDate) -> JobResult {
    let meta = JobMeta::new(
        spec.job_id.clone().unwrap_or_default(),
        spec.tenant.clone(),
        String::new(),
        spec.tier,
        date,
    );
    JobResult::from_failure(Failure::new(meta, Stage::Admit, e))
}

/// The runtime request for a validated job: the job's one image decode.
/// A first frame given by key is read from the object store (at most
/// [`MAX_INLINE_IMAGE_BYTES`]; validation confined the key to the
/// tenant's prefix) and decoded like an inline image.
pub fn to_request(v: &ValidatedJob, store: &OutputStore) -> Result<GenerateRequest, StageError> {
    let image = match &v.image {
        None => None,
        Some(ImageInput::Inline(bytes)) => {
            Some(vidflow_job::decode_image(bytes, v.width, v.height)?)
        }
        Some(ImageInput::Key(k)) => {
            let key_err = |source: ImageKeyError| StageError::ImageKey {
                key: k.clone(),
                source,
            };
            let path = object_store::path::Path::parse(k).map_err(|e| key_err(e.into()))?;
            let bytes = store
                .get_capped_blocking(&path, MAX_INLINE_IMAGE_BYTES as u64)
                .map_err(|e| key_err(e.into()))?;
            Some(vidflow_job::decode_image(&bytes, v.width, v.height)?)
        }
    };
    let mut req = GenerateRequest {
        prompt: v.prompt.clone().into_bytes(),
        negative_prompt: v.negative_prompt.clone().into_bytes(),
        width: v.width as usize,
        height: v.height as usize,
        num_frames: v.num_frames as usize,
        fps: v.fps,
        steps: v.steps as usize,
        guidance_scale: v.guidance,
        seed: v.seed,
        image,
        ..Default::default()
    };
    crate::inputs::add_media(v, store, &mut req)?;
    Ok(req)
}

/// Largest adapter file a job may name: 1 GiB (a rank-128 adapter on
/// every linear layer of a 14B model is about 0.8 GB in bf16).
pub const MAX_LORA_BYTES: u64 = 1 << 30;

/// The job's LoRA adapter, read (capped at [`MAX_LORA_BYTES`]; a key was
/// confined to the tenant's prefix by validation) and fitted to its model
/// through the process's adapter cache, which is keyed by the model, the
/// tenant and the file's hash, so a changed file is read afresh and no
/// tenant is handed another's parsed adapter.
fn load_lora(
    ctx: &StageCtx,
    store: &OutputStore,
    v: &ValidatedJob,
) -> Result<Option<vidflow_gpu::lora::Applied>, StageError> {
    let Some(l) = &v.lora else {
        return Ok(None);
    };
    let (name, bytes) = match &l.source {
        LoraSource::Key(k) => {
            let key_err = |source: ImageKeyError| StageError::MediaKey {
                field: "lora.key".into(),
                key: k.clone(),
                source,
            };
            let path = object_store::path::Path::parse(k).map_err(|e| key_err(e.into()))?;
            let bytes = store
                .get_capped_blocking(&path, MAX_LORA_BYTES)
                .map_err(|e| key_err(e.into()))?;
            (k.clone(), bytes)
        }
        LoraSource::Registry { id, path } => {
            let bytes =
                read_capped(path, MAX_LORA_BYTES).map_err(|source| StageError::LoraFile {
                    id: id.clone(),
                    path: path.clone(),
                    source,
                })?;
            (id.clone(), bytes)
        }
    };
    let model = ctx.model(&v.model_id)?;
    let sha: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let key = format!("{}/{}/{sha}", v.model_id, v.tenant);
    // Entries are immutable once in: a cache whose lock a panic poisoned
    // is still a valid cache.
    let adapter = ctx
        .adapters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_load(&key, || model.load_adapter(&name, &bytes))?;
    Ok(Some(vidflow_gpu::lora::Applied {
        adapter,
        strength: l.strength,
    }))
}

/// A file's bytes, refusing one over `cap` before reading it.
fn read_capped(path: &std::path::Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let len = std::fs::metadata(path)?.len();
    if len > cap {
        return Err(std::io::Error::other(format!(
            "{len} bytes, over the {cap}-byte limit"
        )));
    }
    std::fs::read(path)
}

/// Today's UTC date from the system clock (civil-from-days, no tz crate).
pub fn today_utc() -> chrono::NaiveDate {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i32;
    // 719_163 days from 0001-01-01 (CE day 1) to 1970-01-01.
    chrono::NaiveDate::from_num_days_from_ce_opt(days + 719_163).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    #[test]
    fn a_t2v_job_becomes_its_request_and_is_announced() {
        let (ctx, events) = testkit::ctx();
        let store = testkit::memory_store();
        let v = testkit::validated("j1", r#""kind": "t2v""#);
        let a = prepare(&ctx, &store, v, testkit::date()).unwrap();
        assert_eq!((a.req.width, a.req.height, a.req.num_frames), (256, 256, 9));
        assert_eq!(a.req.prompt, b"a red fox".to_vec());
        assert_eq!(a.meta.job_id, "j1");
        assert!(a.meta.timings.is_empty());
        assert_eq!(
            events.try_recv().unwrap(),
            JobEvent::Accepted {
                job_id: "j1".into()
            }
        );
    }

    #[test]
    fn an_i2v_frame_is_read_from_the_store_by_key() {
        let (ctx, _events) = testkit::ctx();
        let store = testkit::memory_store();
        let png = testkit::png(64, 48);
        store
            .put_atomic_blocking(&"acme/inputs/first.png".into(), png)
            .unwrap();
        let v = testkit::validated(
            "j2",
            r#""kind": "i2v", "image": {"key": "acme/inputs/first.png"}"#,
        );
        let a = prepare(&ctx, &store, v, testkit::date()).unwrap();
        let img = a.req.image.expect("first frame");
        assert_eq!((img.width, img.height), (256, 256));
    }

    #[test]
    fn a_missing_or_broken_first_frame_fails_admission_naming_the_key() {
        let (ctx, events) = testkit::ctx();
        let store = testkit::memory_store();
        let v = testkit::validated("j3", r#""kind": "i2v", "image": {"key": "acme/none.png"}"#);
        let f = prepare(&ctx, &store, v, testkit::date()).err().unwrap();
        assert_eq!(f.stage, Stage::Admit);
        assert!(
            f.error.starts_with("invalid `image` key `acme/none.png`"),
            "{}",
            f.error
        );
        store
            .put_atomic_blocking(&"acme/bad.png".into(), b"not an image".to_vec())
            .unwrap();
        let v = testkit::validated("j4", r#""kind": "i2v", "image": {"key": "acme/bad.png"}"#);
        let f = prepare(&ctx, &store, v, testkit::date()).err().unwrap();
        assert!(f.error.contains("image"), "{}", f.error);
        // Nothing was announced for either.
        assert!(events.try_recv().is_err());
    }

    #[test]
    fn an_oversized_first_frame_is_refused_unread() {
        let (ctx, _events) = testkit::ctx();
        let store = testkit::memory_store();
        store
            .put_atomic_blocking(
                &"acme/huge.png".into(),
                vec![0u8; MAX_INLINE_IMAGE_BYTES + 1],
            )
            .unwrap();
        let v = testkit::validated("j5", r#""kind": "i2v", "image": {"key": "acme/huge.png"}"#);
        let f = prepare(&ctx, &store, v, testkit::date()).err().unwrap();
        assert!(f.error.contains("larger than"), "{}", f.error);
    }

    #[test]
    fn another_tenants_key_never_reaches_the_store() {
        let spec = JobSpec::from_json(
            r#"{"job_id": "k", "tenant": "acme", "tier": "free", "kind": "i2v", "prompt": "x",
                "resolution": "256x256", "image": {"key": "globex/inputs/first.png"}}"#,
        )
        .unwrap();
        let e = vidflow_job::validate(&spec, &testkit::admission()).unwrap_err();
        assert_eq!(e.field(), "image");
        assert!(e.to_string().contains("tenant's own prefix `acme/`"), "{e}");
    }

    #[test]
    fn a_refused_spec_is_a_failed_result_at_admission() {
        let spec = JobSpec::from_json(
            r#"{"job_id": "bad", "tenant": "acme", "tier": "free", "kind": "t2v", "prompt": "x", "resolution": "100x100"}"#,
        )
        .unwrap();
        let e = vidflow_job::validate(&spec, &testkit::admission()).unwrap_err();
        let r = refused(&spec, &e, testkit::date());
        assert_eq!(r.status, vidflow_job::JobStatus::Failed);
        assert_eq!(r.failed_stage, Some(Stage::Admit));
        assert_eq!(r.job_id, "bad");
        assert!(r.error.unwrap().contains("resolution"));
    }
}
