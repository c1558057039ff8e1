//! The process-wide state the graph runs on: loaded models, the object
//! store, the safety checkers, and one executor per offloaded stage, each
//! calling that stage's function from `vidflow-operators`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use vidflow_connectors::store::OutputStore;
use vidflow_operators::chain::ChainStage;
use vidflow_operators::checkpoint::Checkpoints;
use vidflow_operators::denoise::Scheduling;
use vidflow_operators::encode::TextCache;
use vidflow_operators::safety_record::{Safety, SafetyConfig};
use vidflow_operators::{
    admit, decode, encode, frame_safety, output, prompt_safety, AdmissionConfig, AdmittedJob,
    DecodedJob, DenoisedJob, EncodedJob, EventSink, JobKey, JobResult, Msg, StageCtx, Tier,
    ValidatedJob,
};

use crate::executors::{Denoiser, ThreadStage};
use crate::offload::{Executor, Reply};
use crate::DataflowError;

/// How an engine runs.
#[derive(Clone)]
pub struct EngineConfig {
    pub admission: AdmissionConfig,
    /// Root of the local object store for outputs.
    pub out_dir: PathBuf,
    /// Most jobs denoised together in one step.
    pub max_batch: usize,
    /// timely worker threads in this process.
    pub workers: usize,
    /// Denoising steps between checkpoints; 0 = no checkpoints.
    pub checkpoint_every: usize,
    /// Per-tier overrides of `checkpoint_every`.
    pub checkpoint_every_tier: BTreeMap<Tier, usize>,
    /// The safety policy and model files (every job passes both checks).
    pub safety: SafetyConfig,
    /// Slots, ordering and preemption of the denoiser's jobs.
    pub scheduling: Scheduling,
}

/// Prompt embeddings kept per process.
const TEXT_CACHE_ENTRIES: usize = 1024;

/// Process-wide state: loaded models, stage executors, events, cancellation.
pub struct Engine {
    pub ctx: StageCtx,
    /// Outputs, and the inputs (i2v first frames) that jobs name by key.
    pub store: Arc<OutputStore>,
    pub admission: Arc<AdmissionConfig>,
    pub safety: Arc<Safety>,
    pub(crate) stages: Stages,
}

/// One executor per offloaded stage, in stage order.
pub(crate) struct Stages {
    pub admit: Arc<dyn Executor<Msg<ValidatedJob>, Msg<AdmittedJob>>>,
    pub prompt_safety: Arc<dyn Executor<Msg<AdmittedJob>, Msg<AdmittedJob>>>,
    pub encode: Arc<dyn Executor<Msg<AdmittedJob>, Msg<EncodedJob>>>,
    pub denoise: Arc<dyn Executor<Msg<EncodedJob>, Msg<DenoisedJob>>>,
    pub decode: Arc<dyn Executor<Msg<DenoisedJob>, Msg<DecodedJob>>>,
    pub frame_safety: Arc<dyn Executor<Msg<DecodedJob>, Msg<DecodedJob>>>,
    pub output: Arc<dyn Executor<Msg<DecodedJob>, Msg<JobResult>>>,
    /// Videos longer than one pass (`[chain]`): each of their segments
    /// goes through encode, the shared denoiser, decode and frame safety
    /// on a chain thread, which then stores the joined video.
    pub chain: Arc<dyn Executor<Msg<AdmittedJob>, Msg<JobResult>>>,
}

impl Engine {
    /// An engine whose objects live in a local store at `cfg.out_dir`.
    pub fn new(cfg: &EngineConfig, events: EventSink) -> Result<Arc<Engine>, DataflowError> {
        let store = Arc::new(OutputStore::local(&cfg.out_dir)?);
        Self::with_store(cfg, events, store)
    }

    /// An engine whose outputs, i2v inputs, checkpoints and safety records
    /// live in `store` (S3 in a fleet, so any node can resume a job).
    pub fn with_store(
        cfg: &EngineConfig,
        events: EventSink,
        store: Arc<OutputStore>,
    ) -> Result<Arc<Engine>, DataflowError> {
        let models = vidflow_operators::context::load_models(&cfg.admission)?;
        let any = cfg.checkpoint_every > 0 || cfg.checkpoint_every_tier.values().any(|&n| n > 0);
        let checkpoints = any.then(|| Checkpoints {
            store: store.clone(),
            every: cfg.checkpoint_every,
            per_tier: cfg.checkpoint_every_tier.clone(),
            keep: 2,
        });
        let ctx = StageCtx::new(models, events, checkpoints);
        let safety = Arc::new(Safety::load(&cfg.safety, store.clone())?);
        let denoiser = Arc::new(Denoiser::spawn(
            ctx.clone(),
            cfg.max_batch,
            cfg.scheduling.clone(),
        ));
        let chain = {
            let (ctx, store, safety) = (ctx.clone(), store.clone(), safety.clone());
            let (plans, denoiser) = (cfg.admission.chain, denoiser.clone());
            // As many chains at once as the denoiser runs jobs, so their
            // segments can share steps.
            let threads = match cfg.scheduling.slots {
                0 => cfg.max_batch.max(1),
                n => n,
            };
            ThreadStage::spawn_pool("chain", threads, move || {
                let (ctx, store, safety) = (ctx.clone(), store.clone(), safety.clone());
                let denoiser = denoiser.clone();
                let mut cache = TextCache::new(TEXT_CACHE_ENTRIES);
                move |job: AdmittedJob| {
                    let mut denoise = |j: EncodedJob| {
                        let (tx, rx) = std::sync::mpsc::channel();
                        denoiser.submit(
                            Ok(j),
                            Reply::new(move |out| {
                                let _ = tx.send(out);
                            }),
                        );
                        rx.recv().unwrap_or_else(|_| {
                            unreachable!("the denoiser thread lives as long as the engine")
                        })
                    };
                    ChainStage {
                        ctx: &ctx,
                        store: &store,
                        safety: &safety,
                        cache: &mut cache,
                        denoise: &mut denoise,
                    }
                    .run(job, &plans)
                }
            })
        };
        let stages = Stages {
            admit: {
                let (ctx, store) = (ctx.clone(), store.clone());
                Arc::new(ThreadStage::spawn("admit", move |v| {
                    admit::prepare(&ctx, &store, v, admit::today_utc())
                }))
            },
            prompt_safety: {
                let s = safety.clone();
                Arc::new(ThreadStage::spawn("safety-prompt", move |j| {
                    prompt_safety::check_prompt(&s, j)
                }))
            },
            encode: {
                let (ctx, mut cache) = (ctx.clone(), TextCache::new(TEXT_CACHE_ENTRIES));
                Arc::new(ThreadStage::spawn("encode", move |j| {
                    encode::encode(&ctx, &mut cache, j)
                }))
            },
            denoise: denoiser.clone(),
            decode: {
                let ctx = ctx.clone();
                Arc::new(ThreadStage::spawn("decode", move |j| {
                    decode::decode(&ctx, j)
                }))
            },
            frame_safety: {
                let s = safety.clone();
                Arc::new(ThreadStage::spawn("safety-visual", move |j| {
                    frame_safety::check_frames(&s, j)
                }))
            },
            output: {
                let (ctx, store) = (ctx.clone(), store.clone());
                Arc::new(ThreadStage::spawn("output", move |j| {
                    output::output(&ctx, &store, j)
                }))
            },
            chain: Arc::new(chain),
        };
        Ok(Arc::new(Engine {
            admission: Arc::new(cfg.admission.clone()),
            safety,
            stages,
            store,
            ctx,
        }))
    }

    /// Whether an admitted job is a long video, run as a chain of segments.
    pub fn is_chain(&self, job: &AdmittedJob) -> bool {
        self.admission.chain.chained(job.req.num_frames as u32)
    }

    /// Asks a job to stop; it does so before its next denoising step.
    pub fn cancel(&self, key: &JobKey) {
        self.ctx.cancel(key);
    }

    /// Forgets a cancel: the job ended, or was handed back for a retry.
    pub fn forget_cancel(&self, key: &JobKey) {
        self.ctx.forget_cancel(key);
    }
}
