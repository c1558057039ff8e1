//! `vidflow model ...`: golden checks, checkpoint info, a sampling run.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use sha2::{Digest, Sha256};
use vidflow_gpu::golden::check_case;
use vidflow_gpu::info::{estimate_vram, inspect_dir, summarize, EstimateInput};
use vidflow_gpu::pipeline::{Flow, GenerateRequest, LtxPipeline, RgbImage};
use vidflow_gpu::tiny;

/// The name that selects the built-in tiny model instead of a directory.
pub const BUILTIN_TINY: &str = "builtin:tiny";

#[derive(Subcommand)]
pub enum ModelCmd {
    /// Run golden case folders (kind from case.json); exit 1 if any fails.
    Check {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Components, parameter counts, dtypes and a VRAM estimate.
    Info {
        /// A diffusers-format checkpoint directory, or `builtin:tiny`.
        model: String,
        #[command(flatten)]
        shape: ShapeArgs,
        /// Activation precision for the estimate.
        #[arg(long, default_value = "bf16", value_parser = ["bf16", "f16", "f32"])]
        dtype: String,
        /// Estimate without classifier-free guidance (batch 1).
        #[arg(long)]
        no_cfg: bool,
    },
    /// The model registry: each configured model's architecture, sampler,
    /// kinds, size and frame rules, and memory estimate.
    List(crate::model_list::ListArgs),
    /// Write the built-in tiny model as a diffusers-format directory.
    ExportTiny { dir: PathBuf },
    /// Generate one clip and write its frames as PPM images.
    Sample(SampleArgs),
}

#[derive(Args, Clone)]
pub struct ShapeArgs {
    #[arg(long, default_value_t = 768)]
    pub width: usize,
    #[arg(long, default_value_t = 512)]
    pub height: usize,
    #[arg(long, default_value_t = 121)]
    pub frames: usize,
}

#[derive(Args)]
pub struct SampleArgs {
    /// A diffusers-format checkpoint directory, or `builtin:tiny`.
    #[arg(long, default_value = BUILTIN_TINY)]
    model: String,
    #[arg(long, default_value = "a red fox running through snow")]
    prompt: String,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    #[arg(long, default_value_t = 96)]
    width: usize,
    #[arg(long, default_value_t = 64)]
    height: usize,
    #[arg(long, default_value_t = 9)]
    frames: usize,
    #[arg(long, default_value_t = 25.0)]
    fps: f64,
    #[arg(long, default_value_t = 8)]
    steps: usize,
    #[arg(long, default_value_t = 3.0)]
    guidance: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// First frame (binary PPM, P6) for image-to-video.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Output folder for frame_NNN.ppm.
    #[arg(long, default_value = "out/sample")]
    out: PathBuf,
}

pub fn run(cmd: ModelCmd) -> Result<i32> {
    match cmd {
        ModelCmd::Check { dirs } => check(&dirs),
        ModelCmd::Info {
            model,
            shape,
            dtype,
            no_cfg,
        } => info(&model, &shape, &dtype, no_cfg),
        ModelCmd::ExportTiny { dir } => {
            tiny::write_checkpoint(&dir).with_context(|| format!("writing {}", dir.display()))?;
            println!(
                "wrote the built-in tiny model (UNTRAINED) to {}",
                dir.display()
            );
            Ok(0)
        }
        ModelCmd::Sample(a) => sample(a),
        ModelCmd::List(a) => crate::model_list::list(a),
    }
}

fn check(dirs: &[PathBuf]) -> Result<i32> {
    let mut failed = 0;
    println!(
        "{:<48} {:<20} {:>12} {:>20}  result",
        "case", "kind", "max_abs_err", "tolerance (a/r)"
    );
    for d in dirs {
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| d.display().to_string());
        match check_case(d) {
            Ok(r) => {
                let pass = r.pass();
                if !pass {
                    failed += 1;
                }
                println!(
                    "{:<48} {:<20} {:>12.3e} {:>20}  {}",
                    name,
                    r.kind,
                    r.max_abs_err(),
                    format!("{:e}/{:e}", r.tolerance.atol, r.tolerance.rtol),
                    if pass { "PASS" } else { "FAIL" }
                );
                if !pass {
                    for t in r.tensors.iter().filter(|t| !t.pass) {
                        println!(
                            "    {}: max abs err {:.3e}, exceeds tolerance by {:.3e}",
                            t.name, t.max_abs_err, t.worst_excess
                        );
                    }
                }
            }
            Err(e) => {
                failed += 1;
                println!(
                    "{:<48} {:<20} {:>12} {:>20}  FAIL ({e})",
                    name, "?", "-", "-"
                );
            }
        }
    }
    println!("{} passed, {} failed", dirs.len() - failed, failed);
    Ok(if failed == 0 { 0 } else { 1 })
}

fn gib(b: u64) -> String {
    format!("{:.3} GiB", b as f64 / (1u64 << 30) as f64)
}

fn info(model: &str, shape: &ShapeArgs, dtype: &str, no_cfg: bool) -> Result<i32> {
    let act_bytes = if dtype == "f32" { 4 } else { 2 };
    let (comps, tcfg, vcfg, tok) = if model == BUILTIN_TINY {
        let p = tiny::pipeline()?;
        let shapes = [
            (
                "transformer",
                tiny::seeded_weights(&tiny::transformer_config().tensor_shapes(), 0, "t")?,
            ),
            (
                "vae",
                tiny::seeded_weights(
                    &vidflow_gpu::vae::expected_tensor_shapes(&tiny::vae_config()),
                    0,
                    "v",
                )?,
            ),
            (
                "text_encoder",
                tiny::seeded_weights(
                    &vidflow_gpu::t5::expected_tensor_shapes(&tiny::t5_config()),
                    0,
                    "e",
                )?,
            ),
        ];
        let comps: Vec<_> = shapes.iter().map(|(n, w)| summarize(n, w)).collect();
        (
            comps,
            p.transformer.config.clone(),
            p.vae.config.clone(),
            "byte-level (ByT5)".to_string(),
        )
    } else {
        let dir = Path::new(model);
        let i = inspect_dir(dir)?;
        let Some(t) = i.transformer else {
            bail!("{}: no transformer/config.json", dir.display())
        };
        let Some(v) = i.vae else {
            bail!("{}: no vae/config.json", dir.display())
        };
        (i.components, t, v, i.tokenizer)
    };
    println!("model: {model}");
    if model == BUILTIN_TINY {
        println!("note: the built-in tiny model is UNTRAINED (seeded weights); its videos are noise-like");
    }
    println!(
        "{:<14} {:>16} {:>12} {:>8}  dtypes",
        "component", "params", "bytes", "tensors"
    );
    for c in &comps {
        let dt: Vec<String> = c.dtypes.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        println!(
            "{:<14} {:>16} {:>12} {:>8}  {}",
            c.name,
            c.params,
            gib(c.bytes),
            c.tensors,
            dt.join(" ")
        );
    }
    println!("tokenizer: {tok}");
    println!(
        "transformer: {} layers, {} heads x {} = {} wide, in/out {}/{}, caption {}",
        tcfg.num_layers,
        tcfg.num_attention_heads,
        tcfg.attention_head_dim,
        tcfg.inner_dim(),
        tcfg.in_channels,
        tcfg.out_channels,
        tcfg.caption_channels
    );
    println!(
        "vae: latent {} ch, compression {}x spatial, {}x temporal, timestep conditioning {}",
        vcfg.latent_channels,
        vcfg.spatial_compression(),
        vcfg.temporal_compression(),
        vcfg.timestep_conditioning
    );
    // Weights in the activation dtype (what a GPU run would hold).
    let weight_params: u64 = comps.iter().map(|c| c.params).sum();
    let weights_bytes = weight_params * act_bytes;
    let est = estimate_vram(
        &tcfg,
        &vcfg,
        weights_bytes,
        &EstimateInput {
            width: shape.width,
            height: shape.height,
            frames: shape.frames,
            act_bytes,
            cfg_batch: if no_cfg { 1 } else { 2 },
            text_len: vidflow_gpu::pipeline::DEFAULT_MAX_TEXT_LEN,
        },
    );
    let s = vcfg.spatial_compression();
    let t = vcfg.temporal_compression();
    println!(
        "VRAM estimate for {}x{}, {} frames ({}, {}): latent {}x{}x{}x{}",
        shape.width,
        shape.height,
        shape.frames,
        dtype,
        if no_cfg { "no CFG" } else { "CFG batch 2" },
        (shape.frames.saturating_sub(1)) / t + 1,
        shape.height / s,
        shape.width / s,
        vcfg.latent_channels
    );
    println!("  weights               {}", gib(est.weights_bytes));
    println!("  latents               {}", gib(est.latent_bytes));
    println!(
        "  transformer workspace {}",
        gib(est.transformer_workspace_bytes)
    );
    println!("  vae decode workspace  {}", gib(est.vae_workspace_bytes));
    println!("  total                 {}", gib(est.total_bytes));
    Ok(0)
}

fn read_ppm(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if start == i {
            bail!("{}: truncated PPM header", path.display());
        }
        fields.push(String::from_utf8_lossy(&bytes[start..i]).to_string());
    }
    i += 1;
    if fields[0] != "P6" || fields[3] != "255" {
        bail!(
            "{}: only binary 8-bit PPM (P6, maxval 255) is supported",
            path.display()
        );
    }
    let w: usize = fields[1]
        .parse()
        .with_context(|| format!("{}: bad width", path.display()))?;
    let h: usize = fields[2]
        .parse()
        .with_context(|| format!("{}: bad height", path.display()))?;
    let data = bytes
        .get(i..i + w * h * 3)
        .with_context(|| format!("{}: truncated pixel data", path.display()))?;
    Ok(RgbImage {
        width: w,
        height: h,
        data: data.to_vec(),
    })
}

fn sample(a: SampleArgs) -> Result<i32> {
    let pipe = if a.model == BUILTIN_TINY {
        vidflow_gpu::tiny::pipeline()?
    } else {
        // bf16 on a GPU (VIDFLOW_DEVICE; a CUDA build defaults to GPU 0).
        let device = vidflow_gpu::runtime_device()?;
        let dtype = if device.is_cuda() {
            candle_core::DType::BF16
        } else {
            candle_core::DType::F32
        };
        LtxPipeline::from_dir_on(Path::new(&a.model), &device, dtype)?
    };
    if pipe.untrained {
        eprintln!(
            "note: {}: output is from an UNTRAINED model (noise-like frames, not the prompt)",
            pipe.name
        );
    }
    let image = a.image.as_deref().map(read_ppm).transpose()?;
    let req = GenerateRequest {
        prompt: a.prompt.into_bytes(),
        negative_prompt: a.negative_prompt.into_bytes(),
        width: a.width,
        height: a.height,
        num_frames: a.frames,
        fps: a.fps,
        steps: a.steps,
        guidance_scale: a.guidance,
        seed: a.seed,
        image,
        ..Default::default()
    };
    let t0 = std::time::Instant::now();
    let video = pipe.generate(&req, &mut |s| {
        eprintln!("step {}/{} sigma {:.4}", s.step, s.total, s.sigma);
        Flow::Continue
    })?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let frame_len = video.width * video.height * 3;
    for (i, f) in video.rgb.chunks(frame_len).enumerate() {
        let mut ppm = format!("P6\n{} {}\n255\n", video.width, video.height).into_bytes();
        ppm.extend_from_slice(f);
        let p = a.out.join(format!("frame_{i:03}.ppm"));
        std::fs::write(&p, ppm).with_context(|| format!("writing {}", p.display()))?;
    }
    let sha = Sha256::digest(&video.rgb);
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    println!(
        "{} frames {}x{} at {} fps in {:.2}s -> {} (rgb sha256 {hex}){}",
        video.frames,
        video.width,
        video.height,
        video.fps,
        t0.elapsed().as_secs_f64(),
        a.out.display(),
        if video.untrained {
            " [UNTRAINED model]"
        } else {
            ""
        }
    );
    Ok(0)
}
