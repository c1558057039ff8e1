//! `vidflow safety`: evaluate and try the safety policy.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use vidflow_operators::safety::{eval, models, prompt, Policy, VisualChecker};

/// Where the pipeline commands (`generate`, `backfill`) find the safety
/// policy and models.
#[derive(clap::Args, Clone)]
pub struct SafetyArgs {
    /// The safety policy the prompt and the frames are checked against.
    #[arg(long, default_value = "configs/safety.toml")]
    pub safety_policy: PathBuf,
    /// Safety model cache (default: $VIDFLOW_MODEL_CACHE or .cache/models;
    /// filled by `bash scripts/setup-models.sh`).
    #[arg(long)]
    pub models: Option<PathBuf>,
}

impl SafetyArgs {
    pub fn config(&self) -> vidflow_operators::safety_record::SafetyConfig {
        vidflow_operators::safety_record::SafetyConfig {
            policy: self.safety_policy.clone(),
            models_dir: self.models.clone().unwrap_or_else(models::default_dir),
        }
    }
}

#[derive(Subcommand)]
pub enum SafetyCmd {
    /// Block rate per category, false-positive rate and latency over a
    /// labelled JSONL prompt set (`prompt`, `label`, `category`, optional
    /// `style` and `negative_prompt`), each rate with a 95% interval.
    Eval {
        prompts: PathBuf,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// The figures only, no missed prompts: for a held-out set, whose
        /// prompts should not reach anyone tuning the policy.
        #[arg(long)]
        summary: bool,
        #[arg(long, default_value = "configs/safety.toml")]
        policy: PathBuf,
        /// Model cache (default: $VIDFLOW_MODEL_CACHE or .cache/models).
        #[arg(long)]
        models: Option<PathBuf>,
        /// Evaluate with this tenant's overrides.
        #[arg(long, default_value = "")]
        tenant: String,
        /// With --json: every prompt's decision and scores.
        #[arg(long)]
        details: bool,
    },
    /// The frame check over labelled images: `<dir>/<label>/*.png|jpg`
    /// with label `allow` or `block`.
    EvalVisual {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "configs/safety.toml")]
        policy: PathBuf,
        #[arg(long)]
        models: Option<PathBuf>,
    },
    /// The MiniLM embedding of every reading of every prompt of a
    /// labelled JSONL set, one JSON line each (`label`, `category`,
    /// `reading`, `text`, `rules_block` (whether the written rules alone
    /// block the prompt), `embedding`): the input of
    /// `scripts/safety/train_head.py`.
    Embed {
        prompts: PathBuf,
        out: PathBuf,
        #[arg(long, default_value = "configs/safety.toml")]
        policy: PathBuf,
        #[arg(long)]
        models: Option<PathBuf>,
    },
    /// Decide one prompt and print the decision as JSON.
    Check {
        prompt: String,
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, default_value = "configs/safety.toml")]
        policy: PathBuf,
        #[arg(long)]
        models: Option<PathBuf>,
    },
}

pub fn run(c: SafetyCmd) -> Result<i32> {
    match c {
        SafetyCmd::Eval {
            prompts,
            json,
            summary,
            policy,
            models: dir,
            tenant,
            details,
        } => {
            let text = std::fs::read_to_string(&prompts)
                .with_context(|| format!("reading {}", prompts.display()))?;
            let set = eval::parse_set(&text).with_context(|| prompts.display().to_string())?;
            let checker = prompt::load(&policy, &dir.unwrap_or_else(models::default_dir))?;
            let mut r = eval::run(&checker, &set, &tenant, details)?;
            if summary {
                // The table then prints no missed prompt either.
                r.misses.clear();
                r.details.clear();
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", eval::table(&r));
            }
            Ok(0)
        }
        SafetyCmd::Embed {
            prompts,
            out,
            policy,
            models: dir,
        } => {
            use std::io::Write;
            let text = std::fs::read_to_string(&prompts)
                .with_context(|| format!("reading {}", prompts.display()))?;
            let set = eval::parse_set(&text).with_context(|| prompts.display().to_string())?;
            let checker = prompt::load(&policy, &dir.unwrap_or_else(models::default_dir))?;
            let mut w = std::io::BufWriter::new(
                std::fs::File::create(&out).with_context(|| out.display().to_string())?,
            );
            for l in &set {
                let rules = !checker.check_rules("", &l.prompt)?.allowed;
                for (i, (t, e)) in checker.embed_readings(&l.prompt)?.iter().enumerate() {
                    let line = serde_json::json!({
                        "label": l.label,
                        "category": l.category,
                        "reading": i,
                        "text": t,
                        "rules_block": rules,
                        "embedding": e,
                    });
                    writeln!(w, "{line}")?;
                }
            }
            w.flush()?;
            eprintln!("{}: {} prompts embedded", out.display(), set.len());
            Ok(0)
        }
        SafetyCmd::Check {
            prompt: p,
            tenant,
            policy,
            models: dir,
        } => {
            let checker = prompt::load(&policy, &dir.unwrap_or_else(models::default_dir))?;
            let d = checker.check(&tenant, &p)?;
            println!("{}", serde_json::to_string_pretty(&d)?);
            Ok(if d.allowed { 0 } else { 3 })
        }
        SafetyCmd::EvalVisual {
            dir,
            json,
            policy,
            models: mdir,
        } => {
            let policy = Policy::load(&policy)?;
            let checker = VisualChecker::load(&mdir.unwrap_or_else(models::default_dir), &policy)?;
            let r = eval::eval_visual(&checker, &dir)?;
            if r.total() == 0 {
                bail!("{}: no images under allow/ or block/", dir.display());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", r.table());
            }
            Ok(0)
        }
    }
}
