//! What every stage may need besides the job: the loaded models, where
//! events go, which jobs were asked to stop, and the checkpoint store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vidflow_gpu::model::Model;
use vidflow_gpu::pipeline::LtxPipeline;
use vidflow_job::config::{AdmissionConfig, Architecture, ModelDtype};
use vidflow_job::JobKey;

use crate::checkpoint::Checkpoints;
use crate::events::EventSink;
use crate::StageError;

/// Models by id, shared by all stages and workers of a process.
pub type Models = Arc<HashMap<String, Arc<Model>>>;

/// Shared pieces every stage may need. Cheap to clone.
#[derive(Clone)]
pub struct StageCtx {
    pub models: Models,
    pub events: EventSink,
    /// Jobs asked to stop, by (tenant, job id), with when they were asked;
    /// the denoiser checks between steps. See [`StageCtx::cancel`].
    pub cancelled: Arc<Mutex<HashMap<JobKey, Instant>>>,
    /// Denoising checkpoints (off in the embedded CLI).
    pub checkpoints: Option<Checkpoints>,
    /// LoRA adapters loaded for jobs, by (model, tenant, file hash).
    pub adapters: Arc<Mutex<vidflow_gpu::lora::AdapterCache>>,
}

/// Bytes of loaded LoRA adapters a process keeps (least recently used
/// dropped first): 2 GiB, some dozens of rank-16/32 adapters of a
/// 14B-class model.
pub const ADAPTER_CACHE_BYTES: u64 = 2 << 30;

impl StageCtx {
    pub fn new(models: Models, events: EventSink, checkpoints: Option<Checkpoints>) -> StageCtx {
        StageCtx {
            models,
            events,
            cancelled: Arc::new(Mutex::new(HashMap::new())),
            checkpoints,
            adapters: Arc::new(Mutex::new(vidflow_gpu::lora::AdapterCache::new(
                ADAPTER_CACHE_BYTES,
            ))),
        }
    }

    pub fn model(&self, id: &str) -> Result<&Arc<Model>, StageError> {
        self.models
            .get(id)
            .ok_or_else(|| StageError::ModelNotLoaded(id.to_string()))
    }

    /// Asks a job to stop; it does so before its next denoising step. A
    /// cancel may arrive before its job does (queued, or running on another
    /// process), so it is remembered until the job ends here
    /// ([`StageCtx::forget_cancel`]) or, for a job that never comes, for
    /// [`PENDING_CANCEL_TTL`]: the set stays bounded by the cancels of a
    /// day, not every cancel ever sent.
    pub fn cancel(&self, key: &JobKey) {
        if let Ok(mut s) = self.cancelled.lock() {
            let now = Instant::now();
            s.retain(|_, at| now.duration_since(*at) < PENDING_CANCEL_TTL);
            s.insert(key.clone(), now);
        }
    }

    /// Forgets a cancel: the job ended (a later job with the same key must
    /// not inherit it), or a timed-out job is handed back for a retry.
    pub fn forget_cancel(&self, key: &JobKey) {
        if let Ok(mut s) = self.cancelled.lock() {
            s.remove(key);
        }
    }

    pub fn is_cancelled(&self, key: &JobKey) -> bool {
        self.cancelled
            .lock()
            .map(|s| s.contains_key(key))
            .unwrap_or(false)
    }
}

/// How long a cancel waits for a job that has not reached this process.
pub const PENDING_CANCEL_TTL: Duration = Duration::from_secs(24 * 3600);

/// A configured model that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("model `{id}`: {source}")]
pub struct ModelLoadError {
    pub id: String,
    #[source]
    pub source: vidflow_gpu::GpuError,
}

/// Loads every configured model once per process. Checkpoints go on the
/// runtime device (a GPU in a CUDA build) in their configured dtype; the
/// built-in tiny models stay on the CPU in f32, and so does everything on
/// a CPU (candle's CPU convolutions have no bf16).
pub fn load_models(cfg: &AdmissionConfig) -> Result<Models, ModelLoadError> {
    let device = vidflow_gpu::runtime_device().map_err(|source| ModelLoadError {
        id: "(device)".into(),
        source,
    })?;
    let mut m = HashMap::new();
    for p in &cfg.models {
        let dtype = match p.dtype {
            _ if device.is_cpu() => candle_core::DType::F32,
            ModelDtype::F32 => candle_core::DType::F32,
            ModelDtype::Bf16 => candle_core::DType::BF16,
            ModelDtype::F16 => candle_core::DType::F16,
        };
        let dir = p.dir.as_deref().unwrap_or(std::path::Path::new(&p.path));
        let model: Result<Model, _> = match (p.architecture, p.path.as_str()) {
            (Architecture::Ltx, vidflow_job::config::BUILTIN_TINY) => {
                vidflow_gpu::tiny::pipeline().map(Model::from)
            }
            (Architecture::Ltx, _) => {
                LtxPipeline::from_dir_on(dir, &device, dtype).map(Model::from)
            }
            (Architecture::Wan, path) => match vidflow_job::config::builtin_wan(path) {
                Some(i2v) => vidflow_gpu::wan::tiny::pipeline(i2v).map(|(w, _)| Model::from(w)),
                None => vidflow_gpu::wan::serve::WanPipeline::from_dir_on(dir, &device, dtype)
                    .map(Model::from),
            },
        };
        let model = model.map_err(|source| ModelLoadError {
            id: p.id.clone(),
            source,
        })?;
        m.insert(p.id.clone(), Arc::new(model));
    }
    Ok(Arc::new(m))
}
