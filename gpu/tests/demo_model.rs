//! The shipped demo model (`gpu/models/ltx-demo`, trained on synthetic shapes by
//! `scripts/demo_model/train.py`) against diffusers on the same weights: the case
//! file holds diffusers' `LTXPipeline` output for one prompt and one packed
//! initial noise (`scripts/demo_model/reference.py`); vidflow encodes the same
//! prompt itself and samples from the same noise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use vidflow_gpu::pipeline::{Flow, GenerateRequest, LtxPipeline};

fn model_dir() -> PathBuf {
    std::env::var_os("VIDFLOW_DEMO_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| vidflow_gpu::demo::default_dir().to_path_buf())
}

fn case_path() -> PathBuf {
    std::env::var_os("VIDFLOW_DEMO_PARITY_CASE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ltx_demo_parity.safetensors")
        })
}

struct Case {
    tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

impl Case {
    fn load(path: &Path) -> Case {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = md.metadata().clone().unwrap_or_default();
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
        Case { tensors, meta }
    }
    fn t(&self, k: &str) -> &Tensor {
        &self.tensors[k]
    }
    fn num<T: std::str::FromStr>(&self, k: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        self.meta[k].parse().unwrap()
    }
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn demo_model_matches_diffusers() {
    let case = Case::load(&case_path());
    let p = LtxPipeline::from_dir(&model_dir()).unwrap();
    assert!(!p.untrained);

    // The prompt through our tokenizer and T5 gives the reference's embeddings.
    let prompt = case.meta["prompt"].clone();
    let pos = p.encode_prompt(prompt.as_bytes()).unwrap();
    let neg = p.encode_prompt(b"").unwrap();
    let ids = case.t("prompt_ids").to_dtype(DType::F32).unwrap();
    let n = case
        .t("prompt_attention_mask")
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let ours_mask = pos.mask.sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(n, ours_mask, "token count");
    assert!(ids.dims() == [1, 128]);
    let de = max_abs(&pos.embeds, case.t("prompt_embeds"));
    let dn = max_abs(&neg.embeds, case.t("negative_prompt_embeds"));
    eprintln!("T5 embeddings: max |diff| {de:.2e} (prompt), {dn:.2e} (empty negative)");
    assert!(de < 1e-4 && dn < 1e-4);

    let req = GenerateRequest {
        prompt: prompt.into_bytes(),
        width: case.num("width"),
        height: case.num("height"),
        num_frames: case.num("num_frames"),
        fps: case.num("fps"),
        steps: case.num("steps"),
        guidance_scale: case.num("guidance_scale"),
        ..Default::default()
    };
    let mut st = p.prepare(&req).unwrap();
    st.latents = case.t("latents").clone();
    let text = p
        .text_condition(&pos, Some(&neg), req.guidance_scale)
        .unwrap();
    p.denoise(&mut st, &text, &mut |_| Flow::Continue).unwrap();
    let video = p.decode_video(&st, &req).unwrap();
    let want: Vec<u8> = case.t("video").flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(video.rgb.len(), want.len());
    let (mut sum, mut max) = (0u64, 0u8);
    for (a, b) in video.rgb.iter().zip(&want) {
        let d = a.abs_diff(*b);
        sum += d as u64;
        max = max.max(d);
    }
    let mad = sum as f64 / want.len() as f64;
    eprintln!(
        "vidflow vs diffusers ({}): mean |pixel diff| {mad:.4} of 255, max {max}",
        case.meta["reference"]
    );
    assert!(mad < 0.5, "mean |pixel diff| {mad} of 255");
}

fn demo_request(prompt: &str, seed: u64) -> GenerateRequest {
    vidflow_gpu::demo::info(&model_dir())
        .unwrap()
        .unwrap()
        .request(prompt, seed)
}

fn judge_frames(v: &[u8], frames: usize) -> vidflow_gpu::demo::judge::Judgement {
    use vidflow_gpu::demo::{judge, World};
    let world = World::load(&model_dir()).unwrap();
    judge::judge(
        &world,
        judge::Frames {
            width: 96,
            height: 96,
            frames,
            rgb: v,
        },
    )
}

/// Image-to-video keeps the given first frame (same object, colour, shape and
/// place, judged) and keeps its colour through the clip.
#[test]
fn demo_i2v_keeps_the_first_frame_and_follows_the_prompt() {
    use vidflow_gpu::pipeline::RgbImage;
    let p = LtxPipeline::from_dir(&model_dir()).unwrap();
    let src = p
        .generate(
            &demo_request("a yellow circle moving right on a gray background", 3),
            &mut |_| Flow::Continue,
        )
        .unwrap();
    let frame = src.width * src.height * 3;
    let first = src.rgb[..frame].to_vec();
    let want = judge_frames(&first, 1);
    assert_eq!(want.objects[0].colour, "yellow", "{want:?}");
    let req = GenerateRequest {
        image: Some(RgbImage {
            width: src.width,
            height: src.height,
            data: first.clone(),
        }),
        ..demo_request("a yellow circle moving down on a gray background", 4)
    };
    let v = p.generate(&req, &mut |_| Flow::Continue).unwrap();
    let got = judge_frames(&v.rgb[..frame], 1);
    let (a, b) = (&want.objects[0], &got.objects[0]);
    let moved = ((a.start.0 - b.start.0).powi(2) + (a.start.1 - b.start.1).powi(2)).sqrt();
    let mad = v.rgb[..frame]
        .iter()
        .zip(&first)
        .map(|(x, y)| x.abs_diff(*y) as f64)
        .sum::<f64>()
        / frame as f64;
    eprintln!("i2v frame 0: centroid moved {moved:.2} px, mean |diff| {mad:.2} of 255");
    assert_eq!(
        (&got.background, &b.colour, b.shape),
        (&want.background, &a.colour, a.shape)
    );
    assert!(moved < 2.0, "frame 0 object moved {moved} px");
    assert!(mad < 6.0, "frame 0 differs by {mad} of 255 on average");
    let whole = judge_frames(&v.rgb, v.frames);
    assert_eq!(whole.objects[0].colour, "yellow", "{whole:?}");
}

/// The shipped weights follow colour, background and motion words on the
/// first 24 held-out captions (colour/shape pairs never trained on), seeds
/// 0..23 as `vidflow eval prompts` uses them. Measured with these weights
/// (2026-12-07): colour 24, background 24, motion 19, shape 4 of 24 (shape
/// is not learned yet: docs/BENCHMARKS.md). The floors leave two
/// generations of room for float differences between machines.
#[test]
fn the_shipped_model_follows_colour_background_and_motion_words() {
    let p = LtxPipeline::from_dir(&model_dir()).unwrap();
    let world = vidflow_gpu::demo::World::load(&model_dir()).unwrap();
    let prompts = vidflow_gpu::demo::eval_prompts(&model_dir()).unwrap();
    let (mut colour, mut background, mut motion) = (0, 0, 0);
    for (i, want) in prompts.iter().take(24).enumerate() {
        let v = p
            .generate(&demo_request(&want.prompt, i as u64), &mut |_| {
                Flow::Continue
            })
            .unwrap();
        let seen = vidflow_gpu::demo::judge::judge(
            &world,
            vidflow_gpu::demo::judge::Frames {
                width: v.width,
                height: v.height,
                frames: v.frames,
                rgb: &v.rgb,
            },
        );
        let s = vidflow_gpu::demo::score(want, &seen);
        colour += s.colour as u32;
        background += s.background as u32;
        motion += s.motion as u32;
    }
    eprintln!("of 24: colour {colour}, background {background}, motion {motion}");
    assert!(
        colour >= 22 && background >= 22,
        "colour {colour}, background {background}"
    );
    assert!(motion >= 17, "motion {motion} of 24");
}
