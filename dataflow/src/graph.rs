//! The timely graph: intake → admit → encode → denoise → decode → output →
//! report. Admission is cheap and runs on the worker; every heavy stage is
//! offloaded (`offload.rs`) to executors shared by all workers of the
//! process. Jobs are spread over workers by a hash of their id.

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};

use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Exchange, Input, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle, Stream};
use vidflow_connectors::store::OutputStore;
use vidflow_gpu::pipeline::{GenerateRequest, LtxPipeline};
use vidflow_operators::{validate, AdmissionConfig, ImageInput, JobSpec, ValidatedJob};

use crate::denoise::Denoiser;
use crate::events::{EventSink, JobEvent, Stage};
use crate::offload::{offload, Executor};
use crate::stages::{
    decode_stage, encode_stage, output_stage, AdmittedJob, DecodedJob, DenoisedJob, EncodedJob,
    Failure, JobMeta, JobResult, Models, Msg, StageCtx,
};
use crate::DataflowError;

/// How an embedded engine runs.
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
    pub checkpoint_every_tier: std::collections::BTreeMap<vidflow_operators::Tier, usize>,
    /// The safety policy and model files (every job passes both checks).
    pub safety: crate::safety::SafetyConfig,
}

/// Process-wide state: loaded models, stage executors, events, cancellation.
pub struct Engine {
    pub ctx: StageCtx,
    /// Outputs, and the inputs (i2v first frames) that jobs name by key.
    pub store: Arc<OutputStore>,
    pub admission: Arc<AdmissionConfig>,
    pub safety: Arc<crate::safety::Safety>,
    safety_prompt: Arc<dyn Executor<Msg<AdmittedJob>, Msg<AdmittedJob>>>,
    safety_visual: Arc<dyn Executor<Msg<DecodedJob>, Msg<DecodedJob>>>,
    encode: Arc<dyn Executor<Msg<AdmittedJob>, Msg<EncodedJob>>>,
    denoise: Arc<dyn Executor<Msg<EncodedJob>, Msg<DenoisedJob>>>,
    decode: Arc<dyn Executor<Msg<DenoisedJob>, Msg<DecodedJob>>>,
    output: Arc<dyn Executor<Msg<DecodedJob>, Msg<JobResult>>>,
}

/// Loads every configured model once per process.
pub fn load_models(cfg: &AdmissionConfig) -> Result<Models, DataflowError> {
    let mut m = HashMap::new();
    // Checkpoints go on the runtime device (a GPU in a CUDA build) in their
    // configured dtype; the built-in tiny model stays on the CPU in f32.
    let device = vidflow_gpu::runtime_device().map_err(|e| DataflowError::Model {
        id: "(device)".into(),
        msg: e.to_string(),
    })?;
    for p in &cfg.models {
        // The configured dtype is the GPU's; the CPU path computes in f32
        // (candle's CPU convolutions have no bf16).
        let dtype = match p.dtype {
            _ if device.is_cpu() => candle_core::DType::F32,
            vidflow_operators::config::ModelDtype::F32 => candle_core::DType::F32,
            vidflow_operators::config::ModelDtype::Bf16 => candle_core::DType::BF16,
            vidflow_operators::config::ModelDtype::F16 => candle_core::DType::F16,
        };
        let pipe = if p.path == "builtin:tiny" {
            vidflow_gpu::tiny::pipeline()
        } else {
            LtxPipeline::from_dir_on(
                p.dir.as_deref().unwrap_or(std::path::Path::new(&p.path)),
                &device,
                dtype,
            )
        }
        .map_err(|e| DataflowError::Model {
            id: p.id.clone(),
            msg: e.to_string(),
        })?;
        m.insert(p.id.clone(), Arc::new(pipe));
    }
    Ok(Arc::new(m))
}

impl Engine {
    pub fn new(cfg: &EngineConfig, events: EventSink) -> Result<Arc<Engine>, DataflowError> {
        let models = load_models(&cfg.admission)?;
        let store = Arc::new(
            OutputStore::local(&cfg.out_dir).map_err(|e| DataflowError::Store(e.to_string()))?,
        );
        let any = cfg.checkpoint_every > 0 || cfg.checkpoint_every_tier.values().any(|&n| n > 0);
        let checkpoints = any.then(|| crate::checkpoint::Checkpoints {
            store: store.clone(),
            every: cfg.checkpoint_every,
            per_tier: cfg.checkpoint_every_tier.clone(),
            keep: 2,
        });
        let ctx = StageCtx {
            models,
            events,
            cancelled: Arc::new(Mutex::new(Default::default())),
            checkpoints,
        };
        let safety = Arc::new(crate::safety::Safety::load(&cfg.safety, store.clone())?);
        Ok(Arc::new(Engine {
            admission: Arc::new(cfg.admission.clone()),
            safety_prompt: Arc::new(crate::safety::prompt_stage(ctx.clone(), safety.clone())),
            safety_visual: Arc::new(crate::safety::visual_stage(ctx.clone(), safety.clone())),
            safety,
            encode: Arc::new(encode_stage(ctx.clone())),
            denoise: Arc::new(Denoiser::spawn(ctx.clone(), cfg.max_batch)),
            decode: Arc::new(decode_stage(ctx.clone())),
            output: Arc::new(output_stage(ctx.clone(), store.clone())),
            store,
            ctx,
        }))
    }

    /// Asks a job to stop; it does so before its next denoising step.
    pub fn cancel(&self, job_id: &str) {
        if let Ok(mut s) = self.ctx.cancelled.lock() {
            s.insert(job_id.to_string());
        }
    }

    /// Forgets a cancel (a timed-out job handed back for a retry).
    pub fn uncancel(&self, job_id: &str) {
        if let Ok(mut s) = self.ctx.cancelled.lock() {
            s.remove(job_id);
        }
    }

    /// Validation and request building: cheap, runs on the timely worker.
    fn admit(&self, spec: JobSpec) -> Msg<AdmittedJob> {
        let today = today_utc();
        let fallback_id = spec.job_id.clone().unwrap_or_default();
        let meta0 = |job_id: String, tenant: String, model_id: String| JobMeta {
            job_id,
            tenant,
            model_id,
            date: today,
            timings: Vec::new(),
            batch_sizes: Vec::new(),
            denoise_accel_s: 0.0,
            resumed_from: None,
            tier: spec.tier,
            safety: Vec::new(),
        };
        match validate(&spec, &self.admission) {
            Err(e) => {
                let f = Failure {
                    meta: meta0(fallback_id, spec.tenant.clone(), String::new()),
                    stage: Stage::Admit,
                    error: e.to_string(),
                    cancelled_at: None,
                };
                Err(f)
            }
            Ok(v) => {
                let meta = meta0(v.job_id.clone(), v.tenant.clone(), v.model_id.clone());
                match to_request(&v, &self.store) {
                    Ok(req) => {
                        self.ctx.events.emit(JobEvent::Accepted {
                            job_id: v.job_id.clone(),
                        });
                        Ok(AdmittedJob { meta, req })
                    }
                    Err(error) => Err(Failure {
                        meta,
                        stage: Stage::Admit,
                        error,
                        cancelled_at: None,
                    }),
                }
            }
        }
    }
}

/// The runtime request for a validated job. A first frame given by key is
/// read from the object store and decoded like an inline image.
pub fn to_request(v: &ValidatedJob, store: &OutputStore) -> Result<GenerateRequest, String> {
    let image = match &v.image {
        None => None,
        Some(ImageInput::Decoded(img)) => Some(img.clone()),
        Some(ImageInput::Key(k)) => {
            let path = object_store::path::Path::parse(k)
                .map_err(|e| format!("invalid `image` key `{k}`: {e}"))?;
            let bytes = store
                .get_blocking(&path)
                .map_err(|e| format!("invalid `image` key `{k}`: {e}"))?;
            Some(
                vidflow_operators::decode_image(&bytes, v.width, v.height)
                    .map_err(|e| e.to_string())?,
            )
        }
    };
    Ok(GenerateRequest {
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
    })
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

/// FNV-1a of the job id: stable across builds and Rust versions, so every
/// process of a cluster agrees on who owns a job.
pub fn route(job_id: &str) -> u64 {
    job_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Which worker feeds a spec into the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intake {
    /// Worker 0 of this process sends every spec; the exchange spreads them.
    /// Specs without an id get a generated one first.
    Worker0,
    /// Every worker (of every process) holds the same spec list and sends
    /// only the specs it owns (`owner(job_id, peers)`), so a multi-process
    /// cluster shares a job list with no job data on the wire. Every spec
    /// must carry a job id.
    Partitioned,
}

/// Called on the timely worker thread for each result as it leaves the
/// graph (before `run_jobs_with` returns).
pub type ResultHook = Arc<dyn Fn(&JobResult) + Send + Sync>;

/// How `run_jobs_with` runs: the timely configuration (one process with
/// threads, or one process of a cluster), intake, and a per-result hook.
pub struct RunOptions {
    pub timely: timely::Config,
    pub intake: Intake,
    pub on_result: Option<ResultHook>,
}

impl RunOptions {
    /// `workers` threads in this process, worker 0 feeding.
    pub fn process(workers: usize) -> RunOptions {
        RunOptions {
            timely: timely::Config::process(workers.max(1)),
            intake: Intake::Worker0,
            on_result: None,
        }
    }
}

/// The timely configuration for process `process` of a cluster of
/// `addresses.len()` processes (one `host:port` per process, same list and
/// order in every process) with `threads` workers each. One address is a
/// plain multi-threaded process.
pub fn cluster_config(threads: usize, process: usize, addresses: Vec<String>) -> timely::Config {
    let threads = threads.max(1);
    let communication = if addresses.len() > 1 {
        timely::CommunicationConfig::Cluster {
            threads,
            process,
            addresses,
            report: false,
            zerocopy: false,
        }
    } else {
        timely::CommunicationConfig::Process(threads)
    };
    timely::Config {
        communication,
        worker: timely::WorkerConfig::default(),
    }
}

/// Reads a timely hosts file: one `host:port` per line, process 0 first;
/// blank lines and `#` comments are skipped. Exactly `processes` entries
/// are used (an error if there are fewer).
pub fn read_hostfile(path: &std::path::Path, processes: usize) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading hosts file {}: {e}", path.display()))?;
    let hosts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .take(processes)
        .map(str::to_string)
        .collect();
    if hosts.len() < processes {
        return Err(format!(
            "hosts file {} has {} addresses, but --processes is {processes}",
            path.display(),
            hosts.len()
        ));
    }
    Ok(hosts)
}

/// The global worker index (of `peers`) that owns a job: the one the graph's
/// exchange routes it to, in any process of the cluster.
pub fn owner(job_id: &str, peers: usize) -> usize {
    (route(job_id) % peers.max(1) as u64) as usize
}

/// What the graph does with each result as it leaves (on the worker).
pub type Deliver = Rc<dyn Fn(JobResult)>;

/// The job pipeline on a stream of specs already spread over workers:
/// admit → prompt safety → encode → denoise → decode → frame safety → output, every result (completed,
/// failed or cancelled) handed to `deliver`. Returns the results stream for
/// probing.
pub fn pipeline<'s>(
    specs: Stream<'s, u64, Vec<JobSpec>>,
    engine: &Arc<Engine>,
    deliver: Deliver,
) -> Stream<'s, u64, Vec<Msg<JobResult>>> {
    let admit_engine = engine.clone();
    let admitted = specs.map(move |s| admit_engine.admit(s));
    let checked = offload(admitted, "safety-prompt", engine.safety_prompt.clone());
    let encoded = offload(checked, "encode", engine.encode.clone());
    let denoised = offload(encoded, "denoise", engine.denoise.clone());
    let decoded = offload(denoised, "decode", engine.decode.clone());
    let decoded = offload(decoded, "safety-visual", engine.safety_visual.clone());
    let events = engine.ctx.events.clone();
    offload(decoded, "output", engine.output.clone()).inspect(move |r: &Msg<JobResult>| {
        let res = match r {
            Ok(r) => r.clone(),
            Err(f) => {
                if f.cancelled_at.is_none() {
                    events.emit(JobEvent::Failed {
                        job_id: f.meta.job_id.clone(),
                        stage: f.stage,
                        error: f.error.clone(),
                    });
                }
                JobResult::from_failure(f.clone())
            }
        };
        deliver(res);
    })
}

/// Runs a bounded set of jobs through the graph with `workers` timely
/// workers in this process and returns one result per job (any order).
pub fn run_jobs(
    engine: Arc<Engine>,
    workers: usize,
    specs: Vec<JobSpec>,
) -> Result<Vec<JobResult>, DataflowError> {
    run_jobs_with(engine, specs, RunOptions::process(workers))
}

/// Runs a bounded set of jobs through the graph as `opts` says and returns
/// the results of the jobs this process ran (any order). In a cluster every
/// process calls this with the same specs (`Intake::Partitioned`); each
/// gets back the results of the jobs its workers own.
pub fn run_jobs_with(
    engine: Arc<Engine>,
    specs: Vec<JobSpec>,
    opts: RunOptions,
) -> Result<Vec<JobResult>, DataflowError> {
    let RunOptions {
        timely: config,
        intake,
        on_result,
    } = opts;
    let (tx, rx) = channel::<JobResult>();
    let tx = Arc::new(Mutex::new(tx));
    // Ids are fixed before jobs spread over workers, so a job keeps its id
    // (and default seed) wherever it runs.
    if intake == Intake::Partitioned && specs.iter().any(|s| s.job_id.is_none()) {
        return Err(DataflowError::Timely(
            "partitioned intake needs a job id on every spec".into(),
        ));
    }
    let specs: Vec<JobSpec> = specs
        .into_iter()
        .map(|mut s| {
            if s.job_id.is_none() {
                s.job_id = Some(vidflow_operators::generate_job_id());
            }
            s
        })
        .collect();
    let specs = Arc::new(specs);
    let guards = timely::execute(config, move |worker| {
        let engine = engine.clone();
        let tx = tx.clone();
        let on_result = on_result.clone();
        let mut input =
            InputHandle::<u64, timely::container::CapacityContainerBuilder<Vec<JobSpec>>>::new();
        let probe = ProbeHandle::new();
        worker.dataflow::<u64, _, _>(|scope| {
            let specs = scope
                .input_from(&mut input)
                .exchange(|s: &JobSpec| route(s.job_id.as_deref().unwrap_or("")));
            let deliver: Deliver = Rc::new(move |res: JobResult| {
                if let Some(hook) = &on_result {
                    hook(&res);
                }
                if let Ok(tx) = tx.lock() {
                    let _ = tx.send(res);
                }
            });
            pipeline(specs, &engine, deliver).probe_with(&probe);
        });
        match intake {
            Intake::Worker0 => {
                if worker.index() == 0 {
                    for s in specs.iter() {
                        input.send(s.clone());
                    }
                }
            }
            Intake::Partitioned => {
                let (me, peers) = (worker.index(), worker.peers());
                for s in specs.iter() {
                    if owner(s.job_id.as_deref().unwrap_or(""), peers) == me {
                        input.send(s.clone());
                    }
                }
            }
        }
        input.advance_to(1);
        drop(input);
        while !probe.done() {
            worker.step_or_park(None);
        }
    })
    .map_err(DataflowError::Timely)?;
    for g in guards.join() {
        g.map_err(DataflowError::Timely)?;
    }
    Ok(rx.try_iter().collect())
}
