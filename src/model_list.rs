//! `vidflow model list`: the model registry as admission sees it, each
//! model with its family's rules and what one job of a reference shape
//! costs in GPU and host memory.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use vidflow_operators::config::Geometry;
use vidflow_operators::AdmissionConfig;

#[derive(Args)]
pub struct ListArgs {
    /// A config folder with `models.toml` and `modes.toml` (default: the
    /// embedded configuration).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Shape of the job the memory estimates are for.
    #[arg(long, default_value_t = 832)]
    width: u32,
    #[arg(long, default_value_t = 480)]
    height: u32,
    /// Frames (default: 5 s at the model's rate, rounded to its rule).
    #[arg(long)]
    frames: Option<u32>,
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

pub fn list(a: ListArgs) -> Result<i32> {
    let cfg = match &a.config {
        Some(dir) => AdmissionConfig::load(dir)?,
        None => AdmissionConfig::builtin_default()?,
    };
    for m in &cfg.models {
        let r = &m.rules;
        let fps = r.fps.unwrap_or(vidflow_operators::validate::DEFAULT_FPS);
        let rule = vidflow_operators::validate::FrameRule {
            multiple: r.frame_multiple,
            max: r.max_frames,
        };
        let frames = match a.frames {
            Some(f) => f,
            None => rule.from_seconds("seconds", 5.0, fps)?,
        };
        let pass = if m.chains() {
            cfg.chain.pass_frames(frames)
        } else {
            frames
        };
        let est = m.estimate(a.width, a.height, pass, 3.0);
        let host = vidflow_operators::limits::host_frame_bytes(a.width, a.height, pass);
        let kinds: Vec<&str> = m.kinds.iter().map(|k| k.as_str()).collect();
        let marks = [
            (m.id == cfg.default_model, "default"),
            (m.untrained, "UNTRAINED"),
        ];
        let marks: Vec<&str> = marks
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, s)| *s)
            .collect();
        println!(
            "{}{}",
            m.id,
            if marks.is_empty() {
                String::new()
            } else {
                format!("  ({})", marks.join(", "))
            }
        );
        let width = match &m.geometry {
            Geometry::Ltx { transformer, .. } => transformer.inner_dim(),
            Geometry::Wan { transformer, .. } => transformer.dim(),
        };
        println!(
            "  architecture {} (width {width}), path {}, dtype {:?}",
            m.architecture.as_str(),
            m.path,
            m.dtype
        );
        println!(
            "  sampler {:?}, steps {}, kinds {}",
            r.sampler,
            m.steps
                .map_or("from the mode".to_string(), |s| s.to_string()),
            kinds.join(", ")
        );
        println!(
            "  sides multiple of {}, frames {}n+1 up to {}{}, {}",
            r.size_multiple,
            r.frame_multiple,
            r.max_frames,
            if m.chains() {
                format!(" (chained beyond {})", cfg.chain.segment_frames)
            } else {
                String::new()
            },
            match r.fps {
                Some(f) => format!("{f} fps"),
                None => "any fps (24 by default)".to_string(),
            }
        );
        println!(
            "  one {}x{} job of {frames} frames (CFG): VRAM {} (weights {}), host {}",
            a.width,
            a.height,
            gib(est.total_bytes),
            gib(est.weights_bytes),
            gib(host)
        );
    }
    Ok(0)
}
