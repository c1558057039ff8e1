//! The demo model: a small LTX-Video trained on synthetic shapes
//! (`scripts/demo_model/`), shipped in the repository as a diffusers-format
//! checkpoint. It is the embedded default because its output follows the prompt
//! (colour, shape, motion) while running on a CPU in seconds; the untrained
//! built-in tiny model (`tiny`) stays for tests that only need speed.
//!
//! Besides the usual components, the checkpoint folder carries what the training
//! script knows about its world, so nothing here restates it: `world.json` (the
//! palette and vocabulary), `eval_prompts.jsonl` (captions of held-out
//! colour/shape pairs with the attributes they ask for) and, in
//! `model_index.json`, `_vidflow_demo` (native size, frame rate, steps,
//! guidance and the label every output carries).

pub mod judge;
mod pins;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{GpuError, Result};

/// Where the checkpoint lives in the source tree.
pub fn default_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/ltx-demo"))
}

/// Checks every shipped file of the demo model against its pinned sha256
/// (`pins.rs`): a checkpoint that is not the one whose quality and parity
/// were measured does not load. ~10 MB read, a few tens of milliseconds.
pub fn verify(dir: &Path) -> Result<()> {
    for (rel, expected) in pins::FILES {
        let path = dir.join(rel);
        if !path.is_file() {
            return Err(GpuError::ModelMissing { path });
        }
        let found = crate::nsfw::sha256_file(&path)?;
        if found != *expected {
            return Err(GpuError::DemoPin {
                path,
                expected: expected.to_string(),
                found,
            });
        }
    }
    Ok(())
}

/// Shapes of the demo world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
}

/// Motions of the demo world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Motion {
    Left,
    Right,
    Up,
    Down,
    Growing,
    Shrinking,
}

impl Motion {
    /// Moving along an axis (as opposed to growing or shrinking).
    pub fn is_direction(self) -> bool {
        matches!(
            self,
            Motion::Left | Motion::Right | Motion::Up | Motion::Down
        )
    }
}

/// The world's palette and vocabulary (`world.json`, written by the trainer).
#[derive(Debug, Clone, Deserialize)]
pub struct World {
    pub colours: BTreeMap<String, [u8; 3]>,
    pub backgrounds: BTreeMap<String, [u8; 3]>,
    pub shapes: Vec<Shape>,
    pub motions: Vec<Motion>,
    /// Colour/shape pairs the transformer never saw in training.
    pub held_out_pairs: Vec<(String, Shape)>,
}

/// One object a caption asks for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Expected {
    pub colour: String,
    pub shape: Shape,
    pub motion: Motion,
}

/// A caption with what it asks for (a line of `eval_prompts.jsonl`).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct EvalPrompt {
    pub prompt: String,
    pub background: String,
    pub objects: Vec<Expected>,
}

/// What `model_index.json` says under `_vidflow_demo`.
#[derive(Debug, Clone, Deserialize)]
pub struct DemoInfo {
    pub label: String,
    pub width: usize,
    pub height: usize,
    pub num_frames: usize,
    pub fps: f64,
    pub steps: usize,
    pub guidance_scale: f64,
}

impl DemoInfo {
    /// A text-to-video request at the model's native settings.
    pub fn request(&self, prompt: &str, seed: u64) -> crate::pipeline::GenerateRequest {
        crate::pipeline::GenerateRequest {
            prompt: prompt.as_bytes().to_vec(),
            width: self.width,
            height: self.height,
            num_frames: self.num_frames,
            fps: self.fps,
            steps: self.steps,
            guidance_scale: self.guidance_scale,
            seed,
            ..Default::default()
        }
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| GpuError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn bad(path: &Path, e: impl std::fmt::Display) -> GpuError {
    GpuError::config(path.display().to_string(), e.to_string())
}

/// The demo description of a checkpoint folder; `None` for any other model.
pub fn info(dir: &Path) -> Result<Option<DemoInfo>> {
    let path = dir.join("model_index.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&path, e))?;
    match v.get("_vidflow_demo") {
        None => Ok(None),
        Some(d) => serde_json::from_value(d.clone())
            .map(Some)
            .map_err(|e| bad(&path, format!("_vidflow_demo: {e}"))),
    }
}

impl World {
    pub fn load(dir: &Path) -> Result<World> {
        let path = dir.join("world.json");
        serde_json::from_str(&read(&path)?).map_err(|e| bad(&path, e))
    }
}

/// The held-out captions shipped with the model.
pub fn eval_prompts(dir: &Path) -> Result<Vec<EvalPrompt>> {
    let path: PathBuf = dir.join("eval_prompts.jsonl");
    read(&path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| bad(&path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// How one generation did against its caption.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Score {
    pub colour: bool,
    pub shape: bool,
    pub motion: bool,
    pub background: bool,
}

impl Score {
    /// Every asked-for attribute seen.
    pub fn all(&self) -> bool {
        self.colour && self.shape && self.motion && self.background
    }
}

/// Scores a judgement against what the caption asked for. With one object
/// asked, the largest seen object answers; with several, each is looked up
/// by its colour (a missing colour fails all three of its attributes), and an
/// attribute holds only if it holds for every object.
pub fn score(want: &EvalPrompt, seen: &judge::Judgement) -> Score {
    let mut s = Score {
        colour: true,
        shape: true,
        motion: true,
        background: seen.background == want.background,
    };
    for w in &want.objects {
        let found = if want.objects.len() == 1 {
            seen.objects.first()
        } else {
            seen.objects.iter().find(|o| o.colour == w.colour)
        };
        match found {
            Some(o) => {
                s.colour &= o.colour == w.colour;
                s.shape &= o.shape == w.shape;
                s.motion &= o.motion == w.motion;
            }
            None => {
                s = Score {
                    colour: false,
                    shape: false,
                    motion: false,
                    ..s
                };
            }
        }
    }
    s
}

/// Replaces the transformer with seeded random weights of the same
/// configuration: the baseline `vidflow eval prompts` reports next to the
/// trained model (the VAE and text encoder stay the trained ones, so the
/// baseline isolates what the trained transformer contributes).
pub fn randomize_transformer(p: &mut crate::pipeline::LtxPipeline, seed: u64) -> Result<()> {
    let cfg = p.transformer.config.clone();
    let w = crate::tiny::seeded_weights(&cfg.tensor_shapes(), seed, "random-weight baseline")?;
    p.transformer = crate::transformer::LtxTransformer::load(&w, &cfg)?;
    p.name = format!("{} (transformer replaced by seeded random weights)", p.name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::judge::{Judgement, SeenObject};
    use super::*;

    fn seen(colour: &str, shape: Shape, motion: Motion, pixels: usize) -> SeenObject {
        SeenObject {
            colour: colour.into(),
            shape,
            motion,
            pixels,
            start: (0.0, 0.0),
            end: (0.0, 0.0),
            area_ratio: 1.0,
        }
    }

    fn want(objects: &[(&str, Shape, Motion)]) -> EvalPrompt {
        EvalPrompt {
            prompt: String::new(),
            background: "black".into(),
            objects: objects
                .iter()
                .map(|(c, s, m)| Expected {
                    colour: c.to_string(),
                    shape: *s,
                    motion: *m,
                })
                .collect(),
        }
    }

    #[test]
    fn one_object_is_scored_by_the_largest_seen() {
        let w = want(&[("red", Shape::Square, Motion::Left)]);
        let j = Judgement {
            background: "black".into(),
            objects: vec![
                seen("red", Shape::Circle, Motion::Left, 900),
                seen("orange", Shape::Square, Motion::Left, 200),
            ],
        };
        let s = score(&w, &j);
        assert_eq!(
            s,
            Score {
                colour: true,
                shape: false,
                motion: true,
                background: true
            }
        );
        assert!(!s.all());
        let empty = Judgement {
            background: "gray".into(),
            objects: vec![],
        };
        assert_eq!(score(&w, &empty), Score::default());
    }

    #[test]
    fn two_objects_are_matched_by_colour() {
        let w = want(&[
            ("red", Shape::Square, Motion::Left),
            ("blue", Shape::Circle, Motion::Up),
        ]);
        let j = Judgement {
            background: "black".into(),
            objects: vec![
                seen("blue", Shape::Circle, Motion::Up, 900),
                seen("red", Shape::Square, Motion::Left, 800),
            ],
        };
        assert!(score(&w, &j).all());
        let missing = Judgement {
            objects: vec![seen("blue", Shape::Circle, Motion::Up, 900)],
            ..j
        };
        assert!(!score(&w, &missing).colour);
    }
}
