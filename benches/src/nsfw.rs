//! Cost of the visual safety check per video: open_nsfw on K frames sampled
//! from a synthetic 832x480 clip, end to end (checks, resize, crop, network),
//! against the budget of 500 ms p95 per video on a 2-core CPU.
//!
//! Needs the model (`bash scripts/setup-models.sh`); the path follows
//! `VIDFLOW_MODEL_CACHE` like the service.

use std::time::Instant;

use anyhow::{Context, Result};
use vidflow_gpu::nsfw::{default_model_path, FrameRef, NsfwClassifier, MODEL_VERSION};

const WIDTH: usize = 832;
const HEIGHT: usize = 480;
/// 2 s at 24 fps plus the first frame, the default `generate` length.
const CLIP_FRAMES: usize = 49;
const RUNS: usize = 20;

/// A moving gradient with a drifting bright square: cheap to make, and every
/// frame differs so nothing is accidentally cached.
fn clip() -> Vec<Vec<u8>> {
    (0..CLIP_FRAMES)
        .map(|t| {
            let mut f = vec![0u8; WIDTH * HEIGHT * 3];
            for y in 0..HEIGHT {
                for x in 0..WIDTH {
                    let i = (y * WIDTH + x) * 3;
                    let inside = (x + 800 - t * 8) % 800 < 160 && (y + t * 4) % 480 < 160;
                    f[i] = if inside {
                        230
                    } else {
                        ((x + t * 5) * 255 / WIDTH) as u8
                    };
                    f[i + 1] = if inside {
                        180
                    } else {
                        (y * 255 / HEIGHT) as u8
                    };
                    f[i + 2] = ((x + y + t) % 256) as u8;
                }
            }
            f
        })
        .collect()
}

/// K frames spread evenly over the clip, as the safety stage samples them.
fn sample(clip: &[Vec<u8>], k: usize) -> Vec<FrameRef<'_>> {
    (0..k)
        .map(|i| FrameRef {
            width: WIDTH,
            height: HEIGHT,
            rgb: &clip[(2 * i + 1) * clip.len() / (2 * k)],
        })
        .collect()
}

fn percentiles(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    serde_json::json!({"p50_ms": at(0.5), "p95_ms": at(0.95), "max_ms": at(1.0)})
}

fn time(mut f: impl FnMut() -> Result<()>) -> Result<serde_json::Value> {
    f()?; // warm-up: first-run allocations
    let mut v = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(percentiles(v))
}

pub fn run() -> Result<serde_json::Value> {
    let path = default_model_path();
    let t = Instant::now();
    let clf = NsfwClassifier::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let clip = clip();
    let mut per_k = serde_json::Map::new();
    for k in [1usize, 3, 5, 8] {
        eprintln!("nsfw: K = {k} ...");
        let frames = sample(&clip, k);
        let t = time(|| {
            clf.score_frames(&frames)?;
            Ok(())
        })?;
        per_k.insert(format!("k{k}"), t);
    }
    Ok(serde_json::json!({
        "model": MODEL_VERSION,
        "frame": format!("{WIDTH}x{HEIGHT}"),
        "runs": RUNS,
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "load_ms": load_ms,
        "score": per_k,
    }))
}
