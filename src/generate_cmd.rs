//! `vidflow generate`: one job through the embedded pipeline (in-process
//! intake, the timely graph, local object store), with a progress bar.

use std::path::PathBuf;
use std::sync::mpsc::channel;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use vidflow_dataflow::{run_jobs, Engine, EngineConfig, EventSink, JobEvent};
use vidflow_operators::config::ModelEntry;
use vidflow_operators::validate::NATIVE;
use vidflow_operators::{
    AdmissionConfig, ConditionSpec, ExtendSpec, ImageSource, JobKind, JobSpec, Mode, ModelProfile,
    Tier,
};

#[derive(Args)]
pub struct GenerateArgs {
    /// What the video shows.
    pub prompt: String,
    /// Also copy the MP4 here.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// First frame (PNG or JPEG) for image-to-video.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// A keyframe: `FILE@FRAME` or `FILE@FRAME:STRENGTH` (PNG/JPEG image or
    /// MP4 video; repeatable).
    #[arg(long = "keyframe", value_name = "FILE@FRAME[:STRENGTH]")]
    pub keyframes: Vec<String>,
    /// Video-to-video: the source MP4 (with --strength).
    #[arg(long, requires = "strength")]
    pub video: Option<PathBuf>,
    /// Video-to-video: how much of the schedule to re-run, (0, 1].
    #[arg(long)]
    pub strength: Option<f64>,
    /// Continue this MP4: its last frames start the new clip.
    #[arg(long, conflicts_with_all = ["video", "keyframes", "image"])]
    pub extend: Option<PathBuf>,
    /// native, 480p, 720p, 768p, 1080p, 4k or WxH. Default: the model's
    /// native size for the demo model (96x96), else 480p.
    #[arg(long)]
    pub resolution: Option<String>,
    /// Default: the demo model's native length (17 frames at 8 fps), else
    /// the mode's.
    #[arg(long)]
    pub seconds: Option<f64>,
    #[arg(long)]
    pub fps: Option<f64>,
    /// realtime, standard or cinema (step/guidance defaults from configs/modes.toml).
    #[arg(long, default_value = "realtime")]
    pub mode: String,
    #[arg(long)]
    pub steps: Option<u32>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// A configured model id (`vidflow model list`): `ltx-demo` (the
    /// default: a small LTX-Video trained on synthetic shapes), `ltx-tiny`,
    /// `wan-tiny` or `wan-tiny-i2v` (built in, untrained, fast).
    #[arg(long, conflicts_with = "model_dir")]
    pub model: Option<String>,
    /// A diffusers-format checkpoint instead of a configured model.
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// The family of `--model-dir`'s checkpoint: ltx or wan.
    #[arg(long, default_value = "ltx", value_parser = parse_architecture)]
    pub architecture: vidflow_operators::config::Architecture,
    /// Configuration folder (modes.toml, models.toml); default: built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Local object-store root for outputs.
    #[arg(long, default_value = "out/videos")]
    pub out_dir: PathBuf,
    #[arg(long, default_value = "local")]
    pub tenant: String,
    /// timely worker threads.
    #[arg(short = 'w', long, default_value_t = 1)]
    pub workers: usize,
    #[command(flatten)]
    pub safety: crate::safety_cmd::SafetyArgs,
}

fn parse_architecture(
    s: &str,
) -> std::result::Result<vidflow_operators::config::Architecture, String> {
    match s {
        "ltx" => Ok(vidflow_operators::config::Architecture::Ltx),
        "wan" => Ok(vidflow_operators::config::Architecture::Wan),
        other => Err(format!("`{other}`: ltx or wan")),
    }
}

pub fn run(a: GenerateArgs) -> Result<i32> {
    let mut admission = match &a.config {
        Some(dir) => AdmissionConfig::load(dir)?,
        None => AdmissionConfig::builtin_default()?,
    };
    if let Some(dir) = &a.model_dir {
        let entry = ModelEntry::new(
            "model-dir",
            &dir.display().to_string(),
            a.architecture,
            false,
        );
        let profile = ModelProfile::resolve(&entry, &std::env::current_dir()?)?;
        admission.models.push(profile);
        admission.default_model = "model-dir".into();
    }
    if let Some(id) = &a.model {
        if admission.model(id).is_none() {
            bail!(
                "unknown --model `{id}` (configured: {})",
                admission.model_ids().join(", ")
            );
        }
        admission.default_model = id.clone();
    }
    let demo = admission
        .model(&admission.default_model)
        .and_then(|m| m.demo.clone());
    let mode = match a.mode.as_str() {
        "realtime" => Mode::Realtime,
        "standard" => Mode::Standard,
        "cinema" => Mode::Cinema,
        other => bail!("invalid --mode `{other}` (realtime, standard or cinema)"),
    };
    let image = match &a.image {
        Some(p) => Some(ImageSource::InlineBase64(base64_encode(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        ))),
        None => None,
    };
    let inline = |p: &PathBuf| -> Result<ImageSource> {
        Ok(ImageSource::InlineBase64(base64_encode(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )))
    };
    let conditions = a
        .keyframes
        .iter()
        .map(|k| keyframe(k, &inline))
        .collect::<Result<Vec<_>>>()?;
    let video = a.video.as_ref().map(&inline).transpose()?;
    let extend = match &a.extend {
        Some(p) => Some(ExtendSpec {
            video: inline(p)?,
            overlap_frames: None,
        }),
        None => None,
    };
    let spec = JobSpec {
        job_id: None,
        tenant: a.tenant.clone(),
        tier: Tier::Standard,
        kind: if image.is_some() {
            JobKind::I2v
        } else if video.is_some() {
            JobKind::V2v
        } else {
            JobKind::T2v
        },
        prompt: a.prompt.clone(),
        negative_prompt: Some(a.negative_prompt.clone()).filter(|s| !s.is_empty()),
        image,
        resolution: a
            .resolution
            .clone()
            .unwrap_or_else(|| if demo.is_some() { NATIVE } else { "480p" }.to_string()),
        seconds: a.seconds,
        frames: None,
        fps: a.fps,
        mode,
        steps: a.steps,
        guidance: None,
        seed: a.seed,
        model: None,
        audio: false,
        conditions,
        video,
        strength: a.strength,
        extend,
        image_cond_noise_scale: None,
        lora: None,
    };
    let (tx, rx) = channel();
    let engine = Engine::new(
        &EngineConfig {
            scheduling: Default::default(),
            admission,
            out_dir: a.out_dir.clone(),
            max_batch: 8,
            workers: a.workers,
            checkpoint_every: 0,
            checkpoint_every_tier: Default::default(),
            safety: a.safety.config(),
        },
        EventSink::new(tx),
    )?;
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:<12} [{bar:30}] {pos}/{len} steps, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let watcher = {
        let bar = bar.clone();
        std::thread::spawn(move || {
            for e in rx {
                match e {
                    JobEvent::Progress {
                        stage, step, total, ..
                    } => {
                        bar.set_length(total.max(1) as u64);
                        bar.set_position(step as u64);
                        bar.set_message(stage.as_str());
                    }
                    JobEvent::Failed { error, .. } => bar.println(format!("failed: {error}")),
                    _ => {}
                }
            }
        })
    };
    let results = run_jobs(Arc::clone(&engine), a.workers, vec![spec])?;
    drop(engine);
    bar.finish_and_clear();
    let _ = watcher.join();
    let Some(r) = results.into_iter().next() else {
        bail!("the pipeline returned no result")
    };
    if r.status != vidflow_operators::JobStatus::Completed {
        bail!(
            "job {} {}: {}",
            r.job_id,
            r.status,
            r.error.unwrap_or_default()
        );
    }
    let key = r.key.unwrap_or_default();
    let path = a.out_dir.join(&key);
    if let Some(o) = &a.output {
        std::fs::copy(&path, o).with_context(|| format!("copying to {}", o.display()))?;
    }
    println!("job {}", r.job_id);
    println!("output {}", a.output.as_ref().unwrap_or(&path).display());
    println!(
        "sha256 {} ({} bytes)",
        r.sha256.unwrap_or_default(),
        r.size.unwrap_or(0)
    );
    if let Some(d) = &demo {
        println!("note: made by the {}; it knows only that world", d.label);
    }
    if r.untrained {
        println!("note: made by a built-in tiny model, which is UNTRAINED: the video is noise-like, not the prompt");
    }
    Ok(0)
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// `FILE@FRAME[:STRENGTH]` as a condition (an `.mp4` file is a video).
fn keyframe(arg: &str, inline: &dyn Fn(&PathBuf) -> Result<ImageSource>) -> Result<ConditionSpec> {
    let (file, at) = arg
        .rsplit_once('@')
        .with_context(|| format!("--keyframe {arg:?}: expected FILE@FRAME[:STRENGTH]"))?;
    let (frame, strength) = match at.split_once(':') {
        Some((f, s)) => (f, Some(s)),
        None => (at, None),
    };
    let frame_index: u32 = frame
        .parse()
        .with_context(|| format!("--keyframe {arg:?}: frame {frame:?} is not a number"))?;
    let strength = strength
        .map(|s| s.parse::<f64>())
        .transpose()
        .with_context(|| format!("--keyframe {arg:?}: strength is not a number"))?;
    let path = PathBuf::from(file);
    let src = inline(&path)?;
    let is_video = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("mp4"));
    Ok(ConditionSpec {
        image: (!is_video).then(|| src.clone()),
        video: is_video.then_some(src),
        frame_index,
        strength,
    })
}
