//! Orchestration benchmark: what the dataflow costs on top of the model.
//!
//! - overhead: N jobs one at a time through the embedded graph, against the
//!   same work done by direct calls (prompt encode, steps, decode, MP4,
//!   store). The difference is the graph's cost, per job and per step.
//! - throughput: M same-shape jobs submitted together with step batching
//!   (max batch M) against max batch 1 (one job per step).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use vidflow_connectors::store::{output_key, OutputStore};
use vidflow_dataflow::{run_jobs, Engine, EngineConfig, EventSink};
use vidflow_gpu::pipeline::{postprocess, to_rgb8, Flow};
use vidflow_operators::{validate, AdmissionConfig, JobSpec};

fn spec(i: usize, res: &str, frames: u32, steps: u32) -> JobSpec {
    serde_json::from_value(serde_json::json!({
        "job_id": format!("bench-{i}"), "tenant": "bench", "tier": "standard", "kind": "t2v",
        "prompt": format!("benchmark prompt {i}"), "resolution": res, "frames": frames,
        "fps": 24.0, "mode": "realtime", "steps": steps, "seed": i
    }))
    .expect("static spec")
}

fn engine(dir: &std::path::Path, max_batch: usize) -> Result<Arc<Engine>> {
    Ok(Engine::new(
        &EngineConfig {
            scheduling: Default::default(),
            admission: AdmissionConfig::builtin_tiny(),
            out_dir: dir.to_path_buf(),
            max_batch,
            workers: 1,
            checkpoint_every: 0,
            checkpoint_every_tier: Default::default(),
            safety: vidflow_operators::safety_record::SafetyConfig::in_repo(std::path::Path::new(
                concat!(env!("CARGO_MANIFEST_DIR"), "/.."),
            )),
        },
        EventSink::discard(),
    )?)
}

pub fn run(jobs: usize, res: &str, frames: u32, steps: u32) -> Result<serde_json::Value> {
    let tmp = tempfile::tempdir()?;
    let adm = AdmissionConfig::builtin_tiny();
    let model = vidflow_gpu::tiny::pipeline()?;
    let store = OutputStore::local(tmp.path().join("direct"))?;
    // Direct calls: the model work and the output work, no graph. Job 0 of
    // each path is a warm-up (allocator, page faults, thread start).
    let mut t = Instant::now();
    for i in 0..=jobs {
        if i == 1 {
            t = Instant::now();
        }
        let v = validate(&spec(i, res, frames, steps), &adm)?;
        let req = vidflow_operators::admit::to_request(&v, &store)?;
        let mut st = model.prepare(&req)?;
        let pos = model.encode_prompt(&req.prompt)?;
        let neg = model.encode_prompt(&req.negative_prompt)?;
        let text = model.text_condition(&pos, Some(&neg), req.guidance_scale)?;
        model.denoise(&mut st, &text, &mut |_| Flow::Continue)?;
        let frames_t = postprocess(&model.decode_latents(&st, &req)?)?;
        let (_, f, _, h, w) = frames_t.dims5()?;
        let mp4 = vidflow_connectors::mp4::encode_mp4(
            &to_rgb8(&frames_t)?,
            w as u32,
            h as u32,
            f as u32,
            req.fps,
        )?;
        let key = output_key("bench", vidflow_operators::admit::today_utc(), &v.job_id)?;
        store.put_atomic_blocking(&key, mp4)?;
    }
    let direct_s = t.elapsed().as_secs_f64();
    // The same jobs through the graph, one at a time.
    let e = engine(&tmp.path().join("graph"), 1)?;
    let mut t = Instant::now();
    for i in 0..=jobs {
        if i == 1 {
            t = Instant::now();
        }
        let r = run_jobs(e.clone(), 1, vec![spec(i, res, frames, steps)])?;
        anyhow::ensure!(r[0].status == "completed", "{:?}", r[0].error);
    }
    let graph_s = t.elapsed().as_secs_f64();
    let per_job_ms = (graph_s - direct_s) / jobs as f64 * 1e3;
    // Throughput: all jobs at once, batched vs not.
    let all: Vec<JobSpec> = (0..jobs)
        .map(|i| spec(100 + i, res, frames, steps))
        .collect();
    let mut tp = serde_json::Map::new();
    for mb in [1usize, jobs] {
        let e = engine(&tmp.path().join(format!("tp{mb}")), mb)?;
        let t = Instant::now();
        let r = run_jobs(e, 1, all.clone())?;
        let s = t.elapsed().as_secs_f64();
        anyhow::ensure!(r.iter().all(|r| r.status == "completed"));
        let maxb = r
            .iter()
            .flat_map(|r| r.batch_sizes.iter().copied())
            .max()
            .unwrap_or(0);
        tp.insert(
            format!("max_batch_{mb}"),
            serde_json::json!({"seconds": s, "jobs_per_s": jobs as f64 / s, "largest_batch": maxb}),
        );
    }
    Ok(serde_json::json!({
        "jobs": jobs, "resolution": res, "frames": frames, "steps": steps,
        "direct_s": direct_s, "graph_one_at_a_time_s": graph_s,
        "overhead_per_job_ms": per_job_ms,
        "overhead_per_step_ms": per_job_ms / steps as f64,
        "throughput": tp,
    }))
}
