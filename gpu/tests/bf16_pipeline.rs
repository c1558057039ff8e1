//! The bf16 path a GPU runs (bf16 weights and activations; latents, the
//! scheduler and the frames f32), end to end on the CPU with the tiny model
//! loaded from a checkpoint: text-to-video with CFG, image-to-video and a
//! tiled decode stay close to the f32 run.

use candle_core::{DType, Device};
use vidflow_gpu::pipeline::{Flow, GenerateRequest, LtxPipeline, RgbImage, Video};
use vidflow_gpu::tiny;
use vidflow_gpu::vae::DecodeTiling;

fn run(p: &LtxPipeline, req: &GenerateRequest) -> Video {
    p.generate(req, &mut |_| Flow::Continue).unwrap()
}

/// Mean absolute difference of two videos' RGB8 bytes.
fn mad(a: &Video, b: &Video) -> f64 {
    assert_eq!((a.frames, a.width, a.height), (b.frames, b.width, b.height));
    let sum: u64 = a
        .rgb
        .iter()
        .zip(&b.rgb)
        .map(|(x, y)| x.abs_diff(*y) as u64)
        .sum();
    sum as f64 / a.rgb.len() as f64
}

#[test]
fn bf16_generation_tracks_f32() {
    let dir = tempfile::tempdir().unwrap();
    tiny::write_checkpoint(dir.path()).unwrap();
    let mut f32p = LtxPipeline::from_dir(dir.path()).unwrap();
    let mut bf16p = LtxPipeline::from_dir_on(dir.path(), &Device::Cpu, DType::BF16).unwrap();
    assert!(bf16p.untrained);
    let base = GenerateRequest {
        prompt: b"a red kite over the dunes".to_vec(),
        width: 96,
        height: 64,
        num_frames: 17,
        steps: 3,
        guidance_scale: 3.0,
        seed: 5,
        ..Default::default()
    };
    let i2v = GenerateRequest {
        image: Some(RgbImage {
            width: 96,
            height: 64,
            data: (0..96 * 64 * 3).map(|i| (i * 7 % 251) as u8).collect(),
        }),
        ..base.clone()
    };
    for (name, req) in [("t2v", &base), ("i2v", &i2v)] {
        let want = run(&f32p, req);
        let got = run(&bf16p, req);
        assert!(got.untrained);
        let d = mad(&got, &want);
        eprintln!("{name}: bf16 vs f32 mean |diff| {d:.3} of 255");
        assert!(d < 2.0, "{name}: bf16 drifts {d} of 255 from f32");
    }
    // A budget far below the clip's decode forces tiles on both axes.
    let long = GenerateRequest {
        width: 512,
        height: 64,
        num_frames: 57,
        steps: 2,
        ..base.clone()
    };
    let (sc, tc) = (bf16p.spatial_compression(), bf16p.temporal_compression());
    let latent = (
        (long.num_frames - 1) / tc + 1,
        long.height / sc,
        long.width / sc,
    );
    let plan = DecodeTiling::plan(&bf16p.vae.config, latent, 2, 1);
    assert!(
        plan.tile < latent.2 && plan.tile_frames < latent.0,
        "{plan:?} does not tile {latent:?} in space and time"
    );
    let whole = run(&bf16p, &long);
    bf16p.decode_budget_bytes = 1;
    f32p.decode_budget_bytes = 1;
    let tiled = run(&bf16p, &long);
    let want = run(&f32p, &long);
    // The untrained decoder's receptive field crosses these small tiles, so
    // tiled and whole differ by a lot; what must hold is that bf16 tiles
    // track f32 tiles.
    assert!(mad(&tiled, &whole) > 0.0, "the tiled decode did not run");
    let d = mad(&tiled, &want);
    eprintln!("bf16 vs f32, both decoded as {plan:?}: mean |diff| {d:.3} of 255");
    assert!(
        d < 2.0,
        "tiled bf16 decode drifts {d} of 255 from tiled f32"
    );
}
