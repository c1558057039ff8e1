//! A long job as a chain of segments (`vidflow_gpu::pipeline::chain`): each
//! segment goes through the same stages as a short job (encode, the shared
//! denoiser and its scheduler, decode, frame safety), conditioned on the
//! previous segment's last frames, and is checkpointed so that a stopped
//! chain resumes at the segment where it stopped and its MP4 is the same
//! bytes as an uninterrupted run's.
//!
//! Each segment's new frames are encoded on their own (a fresh encoder:
//! the part's bytes depend on its frames alone) and stored as a part under
//! `checkpoints/<tenant>/<job>/chain/`, with the segment's tail frames (what
//! the next segment is conditioned on) and a state naming the last finished
//! segment and the request's hash. Within a segment, the denoiser's step
//! checkpoints apply as for any job. The finished video is the parts joined
//! by re-muxing (`mp4::concat_mp4`), stored once at the job's output key.
//! What a chain holds in memory is one segment's frames and the encoded
//! parts, never the raw video.

use std::time::Instant;

use object_store::path::Path;
use vidflow_connectors::mp4::{concat_mp4, Mp4Writer};
use vidflow_connectors::store::OutputStore;
use vidflow_gpu::pipeline::chain::{self, ChainPlan};
use vidflow_gpu::pipeline::{GenerateRequest, RgbFrames};
use vidflow_job::event::Stage;
use vidflow_job::result::{ChainSpan, Failure};

use crate::checkpoint::request_hash;
use crate::encode::TextCache;
use crate::error::StageError;
use crate::safety_record::Safety;
use crate::{AdmittedJob, DecodedJob, DenoisedJob, EncodedJob, JobResult, Msg, StageCtx};

/// Largest stored part or tail read back (a part is one segment's H.264).
const MAX_PART_BYTES: u64 = 1 << 30;

fn dir(tenant: &str, job_id: &str) -> String {
    format!("checkpoints/{tenant}/{job_id}/chain")
}

#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    /// Segments finished (their parts and the last one's tail are stored).
    done: usize,
    request: String,
    width: usize,
    height: usize,
    tail_frames: usize,
}

/// Where a chain resumes: the segments already done and the last tail.
fn load(store: &OutputStore, base: &str, request: &str) -> Option<(usize, RgbFrames)> {
    let st = store
        .get_capped_blocking(&Path::from(format!("{base}/state.json")), 1 << 16)
        .ok()?;
    let st: State = serde_json::from_slice(&st).ok()?;
    if st.request != request || st.done == 0 {
        return None;
    }
    let data = store
        .get_capped_blocking(&Path::from(format!("{base}/tail.rgb")), MAX_PART_BYTES)
        .ok()?;
    if data.len() != st.width * st.height * 3 * st.tail_frames {
        return None;
    }
    Some((
        st.done,
        RgbFrames {
            width: st.width,
            height: st.height,
            frames: st.tail_frames,
            data,
        },
    ))
}

/// What a chain needs from the process: the models and events, the store
/// for its checkpoints and output, the frame checker, a prompt cache, and
/// the denoiser a segment joins (the graph's shared one, so segments are
/// scheduled and step-batched with every other job).
pub struct ChainStage<'a> {
    pub ctx: &'a StageCtx,
    pub store: &'a OutputStore,
    pub safety: &'a Safety,
    pub cache: &'a mut TextCache,
    pub denoise: &'a mut dyn FnMut(EncodedJob) -> Msg<DenoisedJob>,
}

impl ChainStage<'_> {
    /// Runs (or resumes) `job` as a chain cut by `chain`: every segment through
    /// encode, the denoiser, decode and frame safety, its part stored;
    /// then the joined MP4 stored at the job's key (`completed`). A
    /// segment's failure (a cancel, a blocked frame) is the job's.
    pub fn run(&mut self, job: AdmittedJob, chain: &vidflow_job::ChainConfig) -> Msg<JobResult> {
        let AdmittedJob { mut meta, req } = job;
        let planned = self.ctx.model(&meta.model_id).and_then(|p| {
            plan_for(chain, &req, p.temporal_compression()).map(|plan| (p.clone(), plan))
        });
        let (pipeline, plan) = match planned {
            Ok(x) => x,
            Err(e) => return Err(Failure::new(meta, Stage::Encode, e)),
        };
        // Admission sends only chain-capable (LTX) models' jobs here.
        let Some(ltx) = pipeline.as_ltx() else {
            let e = vidflow_gpu::GpuError::invalid(
                "frames",
                format!(
                    "{} generates one pass at most: no chained segments",
                    pipeline.name()
                ),
            );
            return Err(Failure::new(meta, Stage::Encode, e));
        };
        let base = dir(&meta.tenant, &meta.job_id);
        // What the stored state must name to be resumed from.
        let request = request_hash(&req);
        let (from, mut tail) = match load(self.store, &base, &request) {
            Some((done, tail)) => (done, Some(tail)),
            None => (0, None),
        };
        if from > 0 {
            tracing::info!(job_id = %meta.job_id, segment = from, segments = plan.segments.len(), "chain resumed");
        }
        let segments = plan.segments.len();
        let mut predicted = None;
        // The job's queue wait is its first segment's; a later segment
        // reaches the denoiser as a fresh arrival (its deadline counted
        // from then), or a started chain would outrank every job that
        // arrived after it.
        let submitted_ms = meta.submitted_ms;
        let mut first_wait = None;
        for seg in plan.segments.iter().skip(from) {
            if first_wait.is_some() {
                meta.submitted_ms = Some(vidflow_job::event::now_ms());
            }
            meta.chain = Some(ChainSpan {
                segment: seg.index,
                segments,
                steps_before: seg.index * req.steps,
                steps_total: segments * req.steps,
            });
            let r = ltx.segment_request(&req, seg, tail.as_ref());
            let decoded = self.segment(AdmittedJob { meta, req: r })?;
            meta = decoded.meta;
            predicted.get_or_insert(meta.predicted_accel_s);
            first_wait.get_or_insert(meta.queue_wait_s);
            let v = &decoded.video;
            let t0 = Instant::now();
            let stored = (|| -> Result<RgbFrames, StageError> {
                let (rgb, w, h) = crate::output::crop_to_encoder_limits(v);
                let mut part = Mp4Writer::new(w as u32, h as u32, v.fps, 0)?;
                let per = w * h * 3;
                for f in seg.emit_from..seg.emit_from + seg.emit {
                    part.push(&rgb[f * per..(f + 1) * per])?;
                }
                let t = chain::tail(v, plan.overlap);
                let state = State {
                    done: seg.index + 1,
                    request: request.clone(),
                    width: t.width,
                    height: t.height,
                    tail_frames: t.frames,
                };
                let put = |name: String, bytes: Vec<u8>| {
                    self.store
                        .put_atomic_blocking(&Path::from(format!("{base}/{name}")), bytes)
                };
                // The part and tail first, the state last: a crash in
                // between leaves the previous state, which still names a
                // complete set.
                put(format!("part-{:05}.mp4", seg.index), part.finish()?)?;
                put("tail.rgb".into(), t.data.clone())?;
                put("state.json".into(), serde_json::to_vec(&state)?)?;
                Ok(t)
            })();
            match stored {
                Ok(t) => tail = Some(t),
                Err(e) => return Err(Failure::new(meta, Stage::Output, e)),
            }
            meta.timings
                .push((Stage::Output, t0.elapsed().as_secs_f64()));
            // The segment's step checkpoints belong to its request; the
            // chain's own state now covers it.
            if let Some(ck) = &self.ctx.checkpoints {
                ck.clear(&meta.tenant, &meta.job_id);
            }
            tracing::info!(job_id = %meta.job_id, segment = seg.index, segments, "chain segment stored");
        }
        if let Some(p) = predicted {
            meta.predicted_accel_s = p;
        }
        if let Some(w) = first_wait {
            meta.queue_wait_s = w;
        }
        meta.submitted_ms = submitted_ms;
        meta.chain = None;
        let t0 = Instant::now();
        let joined = (0..segments)
            .map(|k| {
                self.store.get_capped_blocking(
                    &Path::from(format!("{base}/part-{k:05}.mp4")),
                    MAX_PART_BYTES,
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(StageError::from)
            .and_then(|parts| {
                let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
                Ok(concat_mp4(&refs, req.fps)?)
            });
        let mp4 = match joined {
            Ok(m) => m,
            Err(e) => return Err(Failure::new(meta, Stage::Output, e)),
        };
        let (tenant, job_id) = (meta.tenant.clone(), meta.job_id.clone());
        let done =
            crate::output::store_video(self.ctx, self.store, meta, mp4, pipeline.untrained(), t0)?;
        clear_chain(self.store, &tenant, &job_id);
        Ok(done)
    }

    /// One segment through the stages a short job takes.
    fn segment(&mut self, job: AdmittedJob) -> Msg<DecodedJob> {
        let encoded = crate::encode::encode(self.ctx, self.cache, job)?;
        let denoised = (self.denoise)(encoded)?;
        let decoded = crate::decode::decode(self.ctx, denoised)?;
        crate::frame_safety::check_frames(self.safety, decoded)
    }
}

/// The chain `req` is cut into under `chain` (one segment when a single
/// pass holds it), for a model whose VAE compresses time by `temporal`.
pub fn plan_for(
    chain: &vidflow_job::ChainConfig,
    req: &GenerateRequest,
    temporal: usize,
) -> Result<ChainPlan, StageError> {
    Ok(ChainPlan::new(
        req.num_frames,
        chain.segment_frames as usize,
        chain.overlap_frames as usize,
        temporal,
    )?)
}

/// Deletes a chain's checkpoints (after its video is stored).
pub fn clear_chain(store: &OutputStore, tenant: &str, job_id: &str) {
    let base = Path::from(dir(tenant, job_id));
    if let Ok(keys) = store.list_blocking(&base) {
        for k in keys {
            let _ = store.delete_blocking(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;
    use vidflow_job::event::JobEvent;

    fn admitted(ctx: &StageCtx, seed: u64) -> AdmittedJob {
        let spec = vidflow_job::JobSpec::from_json(&format!(
            r#"{{"job_id": "long-1", "tenant": "acme", "tier": "standard", "kind": "t2v",
                "prompt": "a long walk along the shore", "resolution": "256x256",
                "frames": 41, "steps": 2, "guidance": 1.0, "seed": {seed}}}"#
        ))
        .unwrap();
        let v = vidflow_job::validate(&spec, &testkit::admission()).unwrap();
        crate::admit::prepare(ctx, &testkit::memory_store(), v, testkit::date()).unwrap()
    }

    /// Runs the chain; `stop_at` fails the denoising of that segment (as a
    /// cancel or a crash would end the run there). Returns the result and
    /// the segments denoised.
    fn run(
        ctx: &StageCtx,
        store: &OutputStore,
        safety: &Safety,
        job: AdmittedJob,
        stop_at: Option<usize>,
    ) -> (Msg<JobResult>, Vec<usize>) {
        let plan = vidflow_job::ChainConfig {
            segment_frames: 17,
            overlap_frames: 9,
        };
        let mut seen = Vec::new();
        let mut cache = TextCache::new(4);
        let mut denoise = |j: EncodedJob| {
            let k = j.meta.chain.expect("a segment knows its place").segment;
            seen.push(k);
            if Some(k) == stop_at {
                return Err(Failure::cancelled(j.meta, 0));
            }
            crate::denoise::run_alone(ctx, j)
        };
        let r = ChainStage {
            ctx,
            store,
            safety,
            cache: &mut cache,
            denoise: &mut denoise,
        }
        .run(job, &plan);
        (r, seen)
    }

    #[test]
    fn a_stopped_chain_resumes_to_the_same_mp4_bytes() {
        let (ctx, events) = testkit::ctx();
        let (safety, records) = testkit::safety();
        let whole_store = testkit::memory_store();
        let (whole, seen) = run(&ctx, &whole_store, &safety, admitted(&ctx, 5), None);
        let whole = whole.unwrap();
        assert_eq!(seen, vec![0, 1, 2, 3]);
        let key = Path::from(whole.key.clone().unwrap());
        let whole_mp4 = whole_store.get_blocking(&key).unwrap();
        let d = vidflow_connectors::mp4::decode_mp4(
            &whole_mp4,
            vidflow_connectors::mp4::VideoLimits {
                max_side: 4096,
                max_pixels: 1 << 24,
                max_frames: 100,
            },
        )
        .unwrap();
        assert_eq!(d.frames, 41);
        // Progress counts the chain's 4 x 2 steps; every segment's frames
        // had their own safety decision; the chain's checkpoints are gone.
        let steps: Vec<(usize, usize)> = events
            .try_iter()
            .filter_map(|e| match e {
                JobEvent::Progress {
                    stage: Stage::Denoise,
                    step,
                    total,
                    ..
                } => Some((step, total)),
                _ => None,
            })
            .collect();
        assert_eq!(steps, (1..=8).map(|s| (s, 8)).collect::<Vec<_>>());
        assert_eq!(whole.safety.len(), 4, "one frame decision per segment");
        let recorded = records
            .list_blocking(&Path::from("safety/acme/long-1"))
            .unwrap();
        assert_eq!(recorded.len(), 4, "{recorded:?}");
        assert!(whole_store
            .list_blocking(&Path::from(dir("acme", "long-1")))
            .unwrap()
            .is_empty());

        // Stopped in segment 2 (segments 0 and 1 stored), then run again:
        // it resumes at segment 2 and stores the same bytes.
        let store = testkit::memory_store();
        let (stopped, _) = run(&ctx, &store, &safety, admitted(&ctx, 5), Some(2));
        assert!(stopped.unwrap_err().cancelled_at.is_some());
        let (resumed, seen) = run(&ctx, &store, &safety, admitted(&ctx, 5), None);
        resumed.unwrap();
        assert_eq!(seen, vec![2, 3], "resumed at segment 2");
        assert_eq!(store.get_blocking(&key).unwrap(), whole_mp4);

        // Another request never resumes from a chain's checkpoints.
        let store = testkit::memory_store();
        let _ = run(&ctx, &store, &safety, admitted(&ctx, 5), Some(2));
        let (_, seen) = run(&ctx, &store, &safety, admitted(&ctx, 6), None);
        assert_eq!(seen.first(), Some(&0));
    }
}
