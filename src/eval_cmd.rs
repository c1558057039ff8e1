//! `vidflow eval prompts`: does a demo-world model draw what its captions ask
//! for? Generates each held-out caption shipped with the model, judges the
//! frames (`vidflow_gpu::demo::judge`) and reports accuracy per attribute with
//! 95% intervals, next to the same model with a random-weight transformer.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use vidflow_gpu::demo::{self, judge, EvalPrompt, Score, World};
use vidflow_gpu::pipeline::{Flow, LtxPipeline};
use vidflow_operators::safety::eval::wilson95;

#[derive(Subcommand)]
pub enum EvalCmd {
    /// Prompt-following of a demo-world model over its held-out captions.
    Prompts(PromptsArgs),
}

#[derive(Args)]
pub struct PromptsArgs {
    /// The model folder (default: the shipped demo model, checked against its pins).
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// Captions to use (default: the model's `eval_prompts.jsonl`).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Use only the first N captions.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the first generation (caption i uses seed + i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Override the model's sampling steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Override the model's guidance scale.
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Skip the random-weight baseline.
    #[arg(long)]
    pub no_baseline: bool,
    /// Write one JSON line per generation (prompt, what was seen, score) here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(cmd: EvalCmd) -> Result<i32> {
    match cmd {
        EvalCmd::Prompts(a) => prompts(a),
    }
}

#[derive(Default)]
struct Tally {
    n: usize,
    colour: usize,
    shape: usize,
    motion: usize,
    background: usize,
    all: usize,
}

impl Tally {
    fn add(&mut self, s: Score) {
        self.n += 1;
        self.colour += s.colour as usize;
        self.shape += s.shape as usize;
        self.motion += s.motion as usize;
        self.background += s.background as usize;
        self.all += s.all() as usize;
    }
    fn cell(&self, k: usize) -> String {
        let (lo, hi) = wilson95(k, self.n);
        format!(
            "{:5.1}% [{:4.1}-{:5.1}]",
            100.0 * k as f64 / self.n.max(1) as f64,
            100.0 * lo,
            100.0 * hi
        )
    }
}

fn run_set(
    p: &LtxPipeline,
    world: &World,
    info: &demo::DemoInfo,
    prompts: &[EvalPrompt],
    a: &PromptsArgs,
    label: &str,
    mut log: Option<&mut std::fs::File>,
) -> Result<(Tally, f64)> {
    let mut t = Tally::default();
    let start = Instant::now();
    for (i, want) in prompts.iter().enumerate() {
        let mut req = info.request(&want.prompt, a.seed + i as u64);
        req.steps = a.steps.unwrap_or(info.steps);
        req.guidance_scale = a.guidance.unwrap_or(info.guidance_scale);
        let v = p
            .generate(&req, &mut |_| Flow::Continue)
            .with_context(|| format!("generating {:?}", want.prompt))?;
        let seen = judge::judge(
            world,
            judge::Frames {
                width: v.width,
                height: v.height,
                frames: v.frames,
                rgb: &v.rgb,
            },
        );
        let s = demo::score(want, &seen);
        t.add(s);
        if let Some(f) = log.as_deref_mut() {
            let line = serde_json::json!({
                "model": label, "prompt": want.prompt, "seed": req.seed,
                "want": want, "score": s,
                "seen_background": seen.background,
                "seen": seen.objects.iter().map(|o| serde_json::json!({
                    "colour": o.colour, "shape": o.shape, "motion": o.motion,
                    "pixels": o.pixels, "area_ratio": o.area_ratio,
                    "start": [o.start.0, o.start.1], "end": [o.end.0, o.end.1],
                })).collect::<Vec<_>>(),
            });
            writeln!(f, "{line}")?;
        }
    }
    Ok((
        t,
        start.elapsed().as_secs_f64() / prompts.len().max(1) as f64,
    ))
}

fn prompts(a: PromptsArgs) -> Result<i32> {
    let dir = match &a.model_dir {
        Some(d) => d.clone(),
        None => {
            let d = demo::default_dir().to_path_buf();
            demo::verify(&d)?;
            d
        }
    };
    let Some(info) = demo::info(&dir)? else {
        bail!(
            "{} is not a demo-world model (no `_vidflow_demo` in its model_index.json)",
            dir.display()
        );
    };
    let world = World::load(&dir)?;
    let mut set = match &a.prompts {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .enumerate()
                .map(|(i, l)| {
                    serde_json::from_str(l)
                        .with_context(|| format!("{} line {}", f.display(), i + 1))
                })
                .collect::<Result<Vec<EvalPrompt>>>()?
        }
        None => demo::eval_prompts(&dir)?,
    };
    if let Some(n) = a.limit {
        set.truncate(n);
    }
    if set.is_empty() {
        bail!("no captions to evaluate");
    }
    let mut log = match &a.json {
        Some(p) => {
            Some(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => None,
    };
    let mut p = LtxPipeline::from_dir(&dir)?;
    println!(
        "{}: {} held-out captions (colour/shape pairs never in training), {}x{}, {} frames, {} steps, guidance {}",
        dir.display(),
        set.len(),
        info.width,
        info.height,
        info.num_frames,
        a.steps.unwrap_or(info.steps),
        a.guidance.unwrap_or(info.guidance_scale)
    );
    let mut rows = vec![(
        "trained".to_string(),
        run_set(&p, &world, &info, &set, &a, "trained", log.as_mut())?,
    )];
    if !a.no_baseline {
        demo::randomize_transformer(&mut p, 0x6261_7365)?;
        rows.push((
            "random transformer".to_string(),
            run_set(&p, &world, &info, &set, &a, "random", log.as_mut())?,
        ));
    }
    println!(
        "{:<20} {:>22} {:>22} {:>22} {:>22} {:>22} {:>8}",
        "model", "colour", "shape", "motion", "background", "all four", "s/video"
    );
    for (name, (t, secs)) in &rows {
        println!(
            "{:<20} {:>22} {:>22} {:>22} {:>22} {:>22} {:>8.2}",
            name,
            t.cell(t.colour),
            t.cell(t.shape),
            t.cell(t.motion),
            t.cell(t.background),
            t.cell(t.all),
            secs
        );
    }
    println!("(accuracy, Wilson 95% interval; judged from the frames by vidflow_gpu::demo::judge)");
    Ok(0)
}
