//! The compute behind each offloaded stage: prompt encoding (with a cache),
//! step-level batched denoising, VAE decode, and MP4 output. Plain threads
//! and channels; the timely wiring is in `graph.rs`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vidflow_connectors::store::OutputStore;
use vidflow_gpu::pipeline::{DenoiseState, GenerateRequest, LtxPipeline, PromptEmbeds, Video};
use vidflow_gpu::transformer::TextCond;

use crate::events::{EventSink, JobEvent, Stage};
use crate::offload::{Executor, Reply};

/// What every stage carries about a job besides its tensors.
#[derive(Clone, Debug)]
pub struct JobMeta {
    pub job_id: String,
    pub tenant: String,
    pub model_id: String,
    /// UTC date of admission, `yyyy-mm-dd`: part of the output key.
    pub date: chrono::NaiveDate,
    /// Seconds spent per stage, in order.
    pub timings: Vec<(Stage, f64)>,
    /// Batch sizes of this job's denoising steps.
    pub batch_sizes: Vec<usize>,
    /// This job's share of its batched denoising steps' time.
    pub denoise_accel_s: f64,
    /// Step of the checkpoint this run resumed from.
    pub resumed_from: Option<usize>,
    pub tier: vidflow_operators::Tier,
    /// Safety decisions so far (prompt, then frames), for the record.
    pub safety: Vec<vidflow_operators::safety::Decision>,
}

/// A job that left the pipeline early, and why.
#[derive(Clone, Debug)]
pub struct Failure {
    pub meta: JobMeta,
    pub stage: Stage,
    pub error: String,
    pub cancelled_at: Option<usize>,
}

pub type Msg<T> = Result<T, Failure>;

#[derive(Clone)]
pub struct AdmittedJob {
    pub meta: JobMeta,
    pub req: GenerateRequest,
}

#[derive(Clone)]
pub struct EncodedJob {
    pub meta: JobMeta,
    pub req: GenerateRequest,
    pub state: DenoiseState,
    pub text: Arc<TextCond>,
}

#[derive(Clone)]
pub struct DenoisedJob {
    pub meta: JobMeta,
    pub req: GenerateRequest,
    pub state: DenoiseState,
}

#[derive(Clone)]
pub struct DecodedJob {
    pub meta: JobMeta,
    pub video: Arc<Video>,
}

/// The end of a job's path: stored output or failure.
#[derive(Clone, Debug, serde::Serialize)]
pub struct JobResult {
    pub job_id: String,
    pub tenant: String,
    /// completed, failed or cancelled.
    pub status: String,
    pub error: Option<String>,
    pub key: Option<String>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub untrained: bool,
    pub timings: Vec<(String, f64)>,
    pub batch_sizes: Vec<usize>,
    /// Accelerator-seconds attributed to the job: its encode and decode,
    /// plus its fair share of every batched denoising step.
    #[serde(default)]
    pub accel_s: f64,
    /// Where a failed job stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_stage: Option<Stage>,
    /// Denoising steps a cancelled job had taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<usize>,
    /// The job's safety decisions (to the `safety` analytics table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub safety: Vec<vidflow_operators::safety::Decision>,
}

/// Models by id, shared by all stages and workers of a process.
pub type Models = Arc<HashMap<String, Arc<LtxPipeline>>>;

/// Shared pieces every stage may need.
#[derive(Clone)]
pub struct StageCtx {
    pub models: Models,
    pub events: EventSink,
    pub cancelled: Arc<Mutex<HashSet<String>>>,
    /// Denoising checkpoints (off in the embedded CLI).
    pub checkpoints: Option<crate::checkpoint::Checkpoints>,
}

impl StageCtx {
    pub(crate) fn model(&self, id: &str) -> Result<&Arc<LtxPipeline>, String> {
        self.models
            .get(id)
            .ok_or_else(|| format!("model `{id}` is not loaded in this worker"))
    }

    pub(crate) fn is_cancelled(&self, job_id: &str) -> bool {
        self.cancelled
            .lock()
            .map(|s| s.contains(job_id))
            .unwrap_or(false)
    }

    pub(crate) fn fail(&self, meta: JobMeta, stage: Stage, error: String) -> Failure {
        Failure {
            meta,
            stage,
            error,
            cancelled_at: None,
        }
    }
}

/// A stage with one worker thread running `work` on each item in turn;
/// failures pass straight through.
pub struct ThreadStage<I, O> {
    tx: Mutex<Sender<(I, Reply<Msg<O>>)>>,
}

impl<I: Send + 'static, O: Send + 'static> ThreadStage<I, O> {
    pub fn spawn(name: &str, mut work: impl FnMut(I) -> Msg<O> + Send + 'static) -> Self {
        let (tx, rx) = channel::<(I, Reply<Msg<O>>)>();
        std::thread::Builder::new()
            .name(format!("vidflow-{name}"))
            .spawn(move || {
                while let Ok((item, reply)) = rx.recv() {
                    reply.send(work(item));
                }
            })
            .expect("spawning a stage thread");
        ThreadStage { tx: Mutex::new(tx) }
    }
}

impl<I: Send + 'static, O: Send + 'static> Executor<Msg<I>, Msg<O>> for ThreadStage<I, O> {
    fn submit(&self, item: Msg<I>, reply: Reply<Msg<O>>) {
        match item {
            Err(f) => reply.send(Err(f)),
            Ok(i) => {
                if let Ok(tx) = self.tx.lock() {
                    let _ = tx.send((i, reply));
                }
            }
        }
    }
}

pub(crate) fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Prompt embeddings keyed by (text encoder = model id, prompt bytes). A
/// platform sees the same prompts (and the empty negative prompt) again and
/// again; T5-XXL is the costliest per-job step before denoising.
pub struct PromptCache {
    map: HashMap<(String, Vec<u8>), PromptEmbeds>,
    order: VecDeque<(String, Vec<u8>)>,
    capacity: usize,
    pub hits: u64,
    pub misses: u64,
}

impl PromptCache {
    pub fn new(capacity: usize) -> Self {
        PromptCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            hits: 0,
            misses: 0,
        }
    }

    pub fn get_or_encode(
        &mut self,
        model_id: &str,
        p: &LtxPipeline,
        prompt: &[u8],
    ) -> vidflow_gpu::Result<PromptEmbeds> {
        let key = (model_id.to_string(), prompt.to_vec());
        if let Some(e) = self.map.get(&key) {
            self.hits += 1;
            return Ok(e.clone());
        }
        self.misses += 1;
        let e = p.encode_prompt(prompt)?;
        if self.map.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        self.order.push_back(key.clone());
        self.map.insert(key, e.clone());
        Ok(e)
    }
}

/// Encode stage: prompt (cached) and negative prompt, initial latents.
pub fn encode_stage(ctx: StageCtx) -> ThreadStage<AdmittedJob, EncodedJob> {
    let mut cache = PromptCache::new(1024);
    ThreadStage::spawn("encode", move |j: AdmittedJob| {
        let t0 = Instant::now();
        let AdmittedJob { mut meta, req } = j;
        ctx.events.emit(JobEvent::Progress {
            job_id: meta.job_id.clone(),
            stage: Stage::Encode,
            step: 0,
            total: req.steps,
            eta_s: None,
            batch: 0,
        });
        let res = (|| -> Result<EncodedJob, String> {
            let p = ctx.model(&meta.model_id)?;
            let pos = cache
                .get_or_encode(&meta.model_id, p, &req.prompt)
                .map_err(|e| e.to_string())?;
            let neg = if req.guidance_scale > 1.0 {
                Some(
                    cache
                        .get_or_encode(&meta.model_id, p, &req.negative_prompt)
                        .map_err(|e| e.to_string())?,
                )
            } else {
                None
            };
            let text = p
                .text_condition(&pos, neg.as_ref(), req.guidance_scale)
                .map_err(|e| e.to_string())?;
            let mut state = p.prepare(&req).map_err(|e| e.to_string())?;
            if let Some(ck) = &ctx.checkpoints {
                if let Some(r) = ck.resume(&meta.tenant, &meta.job_id, &req, &mut state) {
                    for (key, why) in &r.rejected {
                        tracing::warn!(job_id = %meta.job_id, checkpoint = %key, reason = %why, "checkpoint failed its checks; trying an older one");
                    }
                    if r.step > 0 {
                        tracing::info!(job_id = %meta.job_id, from_step = r.step, "resumed from checkpoint");
                        meta.resumed_from = Some(r.step);
                    }
                }
            }
            meta.timings.push((Stage::Encode, secs(t0)));
            Ok(EncodedJob {
                meta: meta.clone(),
                req: req.clone(),
                state,
                text: Arc::new(text),
            })
        })();
        res.map_err(|e| ctx.fail(meta, Stage::Encode, e))
    })
}

/// Decode stage: latents to RGB frames.
pub fn decode_stage(ctx: StageCtx) -> ThreadStage<DenoisedJob, DecodedJob> {
    ThreadStage::spawn("decode", move |j: DenoisedJob| {
        crate::faults::point("decode");
        let t0 = Instant::now();
        let DenoisedJob {
            mut meta,
            req,
            state,
        } = j;
        let total = state.schedule.steps();
        ctx.events.emit(JobEvent::Progress {
            job_id: meta.job_id.clone(),
            stage: Stage::Decode,
            step: total,
            total,
            eta_s: None,
            batch: 0,
        });
        let res = (|| -> Result<Video, String> {
            let p = ctx.model(&meta.model_id)?;
            let v = p.decode_latents(&state, &req).map_err(|e| e.to_string())?;
            let frames = vidflow_gpu::pipeline::postprocess(&v).map_err(|e| e.to_string())?;
            let (_, f, _, h, w) = frames.dims5().map_err(|e| e.to_string())?;
            Ok(Video {
                width: w,
                height: h,
                frames: f,
                fps: req.fps,
                rgb: vidflow_gpu::pipeline::to_rgb8(&frames).map_err(|e| e.to_string())?,
                untrained: p.untrained,
            })
        })();
        match res {
            Ok(video) => {
                meta.timings.push((Stage::Decode, secs(t0)));
                Ok(DecodedJob {
                    meta,
                    video: Arc::new(video),
                })
            }
            Err(e) => Err(ctx.fail(meta, Stage::Decode, e)),
        }
    })
}

/// Output stage: MP4 encode and atomic store; emits the terminal event.
pub fn output_stage(ctx: StageCtx, store: Arc<OutputStore>) -> ThreadStage<DecodedJob, JobResult> {
    ThreadStage::spawn("output", move |j: DecodedJob| {
        let t0 = Instant::now();
        let DecodedJob { mut meta, video } = j;
        let res = (|| -> Result<_, String> {
            let (rgb, w, h) = crop_to_encoder_limits(&video);
            let mp4 = vidflow_connectors::mp4::encode_mp4(
                &rgb,
                w as u32,
                h as u32,
                video.frames as u32,
                video.fps,
            )
            .map_err(|e| e.to_string())?;
            let key = vidflow_connectors::store::output_key(&meta.tenant, meta.date, &meta.job_id)
                .map_err(|e| e.to_string())?;
            crate::faults::point("output_write");
            store
                .put_atomic_blocking(&key, mp4)
                .map_err(|e| e.to_string())
        })();
        match res {
            Ok(obj) => {
                meta.timings.push((Stage::Output, secs(t0)));
                let accel_s = accel_seconds(&meta);
                ctx.events.emit(JobEvent::Completed {
                    job_id: meta.job_id.clone(),
                    key: obj.key.to_string(),
                    size: obj.size,
                    sha256: obj.sha256_hex.clone(),
                    untrained: video.untrained,
                });
                Ok(JobResult {
                    job_id: meta.job_id,
                    tenant: meta.tenant,
                    status: "completed".into(),
                    error: None,
                    key: Some(obj.key.to_string()),
                    size: Some(obj.size),
                    sha256: Some(obj.sha256_hex),
                    untrained: video.untrained,
                    timings: meta
                        .timings
                        .iter()
                        .map(|(s, t)| (format!("{s:?}").to_lowercase(), *t))
                        .collect(),
                    accel_s,
                    batch_sizes: meta.batch_sizes,
                    failed_stage: None,
                    cancelled_at: None,
                    safety: meta.safety,
                })
            }
            Err(e) => Err(ctx.fail(meta, Stage::Output, e)),
        }
    })
}

/// LTX generates sizes in multiples of 32, so "4K" is generated at
/// 3840x2176; H.264 encoders stop at 3840x2160. Such frames are centre-cropped
/// to the limit (8 rows off top and bottom for 4K) rather than failing a job
/// that has already been paid for in compute.
fn crop_to_encoder_limits(v: &Video) -> (std::borrow::Cow<'_, [u8]>, usize, usize) {
    use vidflow_connectors::mp4::{MAX_DIM, MAX_SHORT_DIM};
    let (long, short) = (MAX_DIM as usize, MAX_SHORT_DIM as usize);
    let (mw, mh) = if v.width >= v.height {
        (long, short)
    } else {
        (short, long)
    };
    let (tw, th) = (v.width.min(mw) & !1, v.height.min(mh) & !1);
    if (tw, th) == (v.width, v.height) {
        return (std::borrow::Cow::Borrowed(&v.rgb), tw, th);
    }
    let (x0, y0) = ((v.width - tw) / 2, (v.height - th) / 2);
    let mut out = Vec::with_capacity(v.frames * tw * th * 3);
    for f in 0..v.frames {
        for y in 0..th {
            let row = (f * v.height + y0 + y) * v.width + x0;
            out.extend_from_slice(&v.rgb[row * 3..(row + tw) * 3]);
        }
    }
    (std::borrow::Cow::Owned(out), tw, th)
}

/// Accelerator-seconds of a job: encode + decode + its denoise share.
fn accel_seconds(m: &JobMeta) -> f64 {
    m.denoise_accel_s
        + m.timings
            .iter()
            .filter(|(s, _)| matches!(s, Stage::Encode | Stage::Decode))
            .map(|(_, t)| t)
            .sum::<f64>()
}

impl JobResult {
    /// The terminal record of a job that failed or was cancelled.
    pub fn from_failure(f: Failure) -> Self {
        let accel_s = accel_seconds(&f.meta);
        JobResult {
            job_id: f.meta.job_id,
            tenant: f.meta.tenant,
            status: if f.cancelled_at.is_some() {
                "cancelled".into()
            } else {
                "failed".into()
            },
            error: Some(f.error),
            key: None,
            size: None,
            sha256: None,
            untrained: false,
            timings: f
                .meta
                .timings
                .iter()
                .map(|(s, t)| (format!("{s:?}").to_lowercase(), *t))
                .collect(),
            accel_s,
            batch_sizes: f.meta.batch_sizes,
            failed_stage: f.cancelled_at.is_none().then_some(f.stage),
            cancelled_at: f.cancelled_at,
            safety: f.meta.safety,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_k_is_cropped_to_the_encoder_limit_centred() {
        let (w, h, f) = (3840usize, 2176usize, 1usize);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| ((i / 3 / w) % 251) as u8).collect();
        let v = Video {
            width: w,
            height: h,
            frames: f,
            fps: 24.0,
            rgb,
            untrained: true,
        };
        let (out, tw, th) = crop_to_encoder_limits(&v);
        assert_eq!((tw, th), (3840, 2160));
        assert_eq!(out.len(), tw * th * 3);
        // First output row is input row 8.
        assert_eq!(out[0], 8);
        let small = Video {
            width: 256,
            height: 256,
            frames: 1,
            fps: 24.0,
            rgb: vec![1; 256 * 256 * 3],
            untrained: true,
        };
        assert!(matches!(
            crop_to_encoder_limits(&small).0,
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
