//! A long job as a chain of segments (`vidflow_gpu::pipeline::chain`),
//! checkpointed per segment so a stopped chain resumes where it stopped and
//! its MP4 is the same bytes as an uninterrupted run's.
//!
//! Each segment's new frames are encoded on their own (a fresh encoder:
//! the part's bytes depend on its frames alone) and stored as a part under
//! `checkpoints/<tenant>/<job>/chain/`, with the segment's tail frames (what
//! the next segment is conditioned on) and a state naming the last finished
//! segment and the request's hash. The finished video is the parts joined
//! by re-muxing (`mp4::concat_mp4`). What a chain holds in memory is one
//! segment's frames and the encoded parts, never the raw video.
//!
//! Nothing in the graph calls this stage: it and its checkpoint format
//! are tested on their own.

use std::cell::RefCell;

use object_store::path::Path;
use vidflow_connectors::mp4::{concat_mp4, Mp4Writer};
use vidflow_connectors::store::OutputStore;
use vidflow_gpu::pipeline::chain::ChainPlan;
use vidflow_gpu::pipeline::{Flow, GenerateRequest, LtxPipeline, RgbFrames, StepInfo};

use crate::checkpoint::request_hash;
use crate::error::StageError;

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
fn load(store: &OutputStore, base: &str, req: &GenerateRequest) -> Option<(usize, RgbFrames)> {
    let st = store
        .get_capped_blocking(&Path::from(format!("{base}/state.json")), 1 << 16)
        .ok()?;
    let st: State = serde_json::from_slice(&st).ok()?;
    if st.request != request_hash(req) || st.done == 0 {
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

/// Runs (or resumes) `req` as the chain `plan` and returns the MP4.
/// `on_step(segment, step)` sees every denoising step (progress, cancels).
pub fn run_chain(
    pipeline: &LtxPipeline,
    store: &OutputStore,
    tenant: &str,
    job_id: &str,
    req: &GenerateRequest,
    plan: &ChainPlan,
    on_step: &mut dyn FnMut(usize, &StepInfo) -> Flow,
) -> Result<Vec<u8>, StageError> {
    let base = dir(tenant, job_id);
    let (from, tail) = match load(store, &base, req) {
        Some((done, tail)) => (done, Some(tail)),
        None => (0, None),
    };
    if from < plan.segments.len() {
        let new_writer = || Mp4Writer::new(req.width as u32, req.height as u32, req.fps, 0);
        let writer = RefCell::new(new_writer()?);
        let failed: RefCell<Option<StageError>> = RefCell::new(None);
        let mut emit = |f: &[u8]| -> Result<(), vidflow_gpu::GpuError> {
            writer
                .borrow_mut()
                .push(f)
                .map_err(|e| vidflow_gpu::GpuError::invalid("frames", e.to_string()))
        };
        let mut on_segment = |k: usize, t: &RgbFrames| -> Flow {
            let part = match new_writer()
                .map(|w| writer.replace(w))
                .and_then(|w| w.finish())
            {
                Ok(p) => p,
                Err(e) => {
                    *failed.borrow_mut() = Some(e.into());
                    return Flow::Stop;
                }
            };
            let state = State {
                done: k + 1,
                request: request_hash(req),
                width: t.width,
                height: t.height,
                tail_frames: t.frames,
            };
            let put = |name: String, bytes: Vec<u8>| {
                store.put_atomic_blocking(&Path::from(format!("{base}/{name}")), bytes)
            };
            // The part and tail first, the state last: a crash in between
            // leaves the previous state, which still names a complete set.
            let r = put(format!("part-{k:05}.mp4"), part)
                .and_then(|_| put("tail.rgb".into(), t.data.clone()))
                .and_then(|_| {
                    put(
                        "state.json".into(),
                        serde_json::to_vec(&state).unwrap_or_default(),
                    )
                });
            match r {
                Ok(_) => Flow::Continue,
                Err(e) => {
                    *failed.borrow_mut() = Some(e.into());
                    Flow::Stop
                }
            }
        };
        let r = pipeline.generate_chain(req, plan, from, tail, on_step, &mut emit, &mut on_segment);
        if let Some(e) = failed.borrow_mut().take() {
            return Err(e);
        }
        r?;
    }
    let parts: Vec<Vec<u8>> = (0..plan.segments.len())
        .map(|k| {
            store
                .get_capped_blocking(
                    &Path::from(format!("{base}/part-{k:05}.mp4")),
                    MAX_PART_BYTES,
                )
                .map_err(StageError::from)
        })
        .collect::<Result<_, _>>()?;
    let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
    Ok(concat_mp4(&refs, req.fps)?)
}

/// Deletes a finished chain's checkpoints.
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

    fn req() -> GenerateRequest {
        GenerateRequest {
            prompt: b"a long walk along the shore".to_vec(),
            width: 64,
            height: 64,
            num_frames: 41,
            fps: 24.0,
            steps: 2,
            seed: 5,
            ..Default::default()
        }
    }

    #[test]
    fn a_stopped_chain_resumes_to_the_same_mp4_bytes() {
        let p = vidflow_gpu::tiny::pipeline().unwrap();
        let plan = ChainPlan::new(41, 17, 9, 8).unwrap();
        let r = req();
        let whole_store = testkit::memory_store();
        let whole = run_chain(&p, &whole_store, "acme", "j", &r, &plan, &mut |_, _| {
            Flow::Continue
        })
        .unwrap();

        // Stopped in segment 2's first step (segments 0 and 1 checkpointed),
        // then run again: it resumes at segment 2.
        let store = testkit::memory_store();
        let stopped = run_chain(&p, &store, "acme", "j", &r, &plan, &mut |k, _| {
            if k == 2 {
                Flow::Stop
            } else {
                Flow::Continue
            }
        });
        assert!(stopped.is_err());
        let mut seen = Vec::new();
        let resumed = run_chain(&p, &store, "acme", "j", &r, &plan, &mut |k, _| {
            seen.push(k);
            Flow::Continue
        })
        .unwrap();
        assert_eq!(seen.first(), Some(&2), "resumed at segment 2");
        assert_eq!(resumed, whole, "byte-identical MP4");
        let d = vidflow_connectors::mp4::decode_mp4(
            &whole,
            vidflow_connectors::mp4::VideoLimits {
                max_side: 4096,
                max_pixels: 1 << 24,
                max_frames: 100,
            },
        )
        .unwrap();
        assert_eq!(d.frames, 41);

        // Another request never resumes from these checkpoints.
        let other = GenerateRequest {
            seed: 6,
            ..r.clone()
        };
        let mut first = None;
        run_chain(&p, &store, "acme", "j", &other, &plan, &mut |k, _| {
            first.get_or_insert(k);
            Flow::Continue
        })
        .unwrap();
        assert_eq!(first, Some(0));
        clear_chain(&store, "acme", "j");
        assert!(store
            .list_blocking(&Path::from(dir("acme", "j")))
            .unwrap()
            .is_empty());
    }
}
