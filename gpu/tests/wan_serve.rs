//! Wan 2.1 as the serving stages run it, on the built-in tiny models: the
//! batched CFG step equals the reference-shaped sampling loop (two batch-1
//! passes, the path the golden cases check), a job's velocity is the same
//! in a batch as alone, a run resumed from a checkpoint snapshot continues
//! bit-exactly, and image-to-video takes exactly one image.

use candle_core::{Device, Tensor};
use vidflow_gpu::model::{Conditioning, Model};
use vidflow_gpu::pipeline::{GenerateRequest, RgbImage};
use vidflow_gpu::wan;

fn model(i2v: bool) -> Model {
    Model::from(wan::tiny::pipeline(i2v).unwrap().0)
}

fn request(seed: u64, guidance: f64) -> GenerateRequest {
    GenerateRequest {
        prompt: b"a paper boat on a pond".to_vec(),
        negative_prompt: b"blurry".to_vec(),
        width: 64,
        height: 48,
        num_frames: 9,
        fps: 16.0,
        steps: 4,
        guidance_scale: guidance,
        seed,
        ..Default::default()
    }
}

fn text(m: &Model, req: &GenerateRequest) -> Conditioning {
    let pos = m.encode_prompt(&req.prompt).unwrap();
    let neg = m.encode_prompt(&req.negative_prompt).unwrap();
    m.text_condition(&pos, Some(&neg), req.guidance_scale)
        .unwrap()
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
        .to_scalar()
        .unwrap()
}

fn image(w: usize, h: usize) -> RgbImage {
    RgbImage {
        width: w,
        height: h,
        data: (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect(),
    }
}

#[test]
fn the_serving_steps_match_the_reference_sampling_loop() {
    let m = model(false);
    let Model::Wan(p) = &m else { unreachable!() };
    let req = request(3, 4.0);
    let cond = text(&m, &req);
    let mut st = m.prepare(&req).unwrap();
    let noise = st.latents.clone();
    while st.step < st.schedule.steps() {
        m.step(&mut st, &cond).unwrap();
    }
    let pos = p.encode_prompt(&req.prompt).unwrap().embeds;
    let neg = p.encode_prompt(&req.negative_prompt).unwrap().embeds;
    let r = wan::pipeline::denoise(
        &p.transformer,
        &p.sampler,
        wan::pipeline::WanDenoise {
            latents: noise,
            text: &pos,
            negative: Some(&neg),
            guidance: req.guidance_scale,
            steps: req.steps,
            shift: None,
            condition: None,
            image: None,
        },
    )
    .unwrap();
    let err = max_abs(&st.latents, &r.latents);
    assert!(err < 1e-5, "serving vs reference loop: {err}");
    let v = m.decode_video(&st, &req).unwrap();
    assert_eq!((v.width, v.height, v.frames), (64, 48, 9));
    assert!(v.untrained);
}

#[test]
fn a_job_steps_the_same_in_a_batch_as_alone() {
    let m = model(false);
    let (ra, rb) = (request(1, 4.0), request(2, 1.0));
    let (ta, tb) = (text(&m, &ra), text(&m, &rb));
    let (sa, sb) = (m.prepare(&ra).unwrap(), m.prepare(&rb).unwrap());
    let both = m.velocity_batched(&[(&sa, &ta), (&sb, &tb)]).unwrap();
    let alone_a = m.velocity_batched(&[(&sa, &ta)]).unwrap();
    let alone_b = m.velocity_batched(&[(&sb, &tb)]).unwrap();
    let (ea, eb) = (
        max_abs(&both[0], &alone_a[0]),
        max_abs(&both[1], &alone_b[0]),
    );
    // Bit for bit: every GEMM runs per batch row on the CPU.
    assert!(ea == 0.0 && eb == 0.0, "batched vs alone: {ea} {eb}");
}

#[test]
fn a_resumed_snapshot_continues_bit_exactly() {
    let m = model(false);
    let req = request(9, 4.0);
    let cond = text(&m, &req);
    let mut whole = m.prepare(&req).unwrap();
    let mut snaps = Vec::new();
    while whole.step < whole.schedule.steps() {
        snaps.push((whole.step, whole.snapshot().unwrap()));
        m.step(&mut whole, &cond).unwrap();
    }
    let want: Vec<f32> = whole.latents.flatten_all().unwrap().to_vec1().unwrap();
    for (step, snap) in snaps {
        let mut st = m.prepare(&req).unwrap();
        assert_eq!(snap.dims(), st.snapshot_dims().as_slice());
        st.restore(step, &snap).unwrap();
        while st.step < st.schedule.steps() {
            m.step(&mut st, &cond).unwrap();
        }
        let got: Vec<f32> = st.latents.flatten_all().unwrap().to_vec1().unwrap();
        assert!(got == want, "resumed at step {step}");
    }
    // A snapshot of another shape is refused.
    let mut st = m.prepare(&req).unwrap();
    let bad = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(st
        .restore(1, &bad)
        .unwrap_err()
        .to_string()
        .contains("checkpoint"));
}

#[test]
fn image_to_video_takes_exactly_one_image_at_the_video_size() {
    let m = model(true);
    let mut req = request(4, 1.0);
    req.image = Some(image(64, 48));
    let cond = text(&m, &req);
    let mut st = m.prepare(&req).unwrap();
    let w = st.wan.as_ref().unwrap();
    assert_eq!(w.condition.as_ref().unwrap().dims(), &[1, 8, 3, 6, 8]);
    assert_eq!(w.image_tokens.as_ref().unwrap().dims()[0], 1);
    while st.step < st.schedule.steps() {
        m.step(&mut st, &cond).unwrap();
    }
    let v = m.decode_video(&st, &req).unwrap();
    assert_eq!((v.width, v.height, v.frames), (64, 48, 9));

    req.image = None;
    let e = m.prepare(&req).err().unwrap().to_string();
    assert!(e.contains("image") && e.contains("needs an image"), "{e}");
    req.image = Some(image(32, 32));
    let e = m.prepare(&req).err().unwrap().to_string();
    assert!(e.contains("video's size"), "{e}");
    let t2v = model(false);
    req.image = Some(image(64, 48));
    let e = t2v.prepare(&req).err().unwrap().to_string();
    assert!(e.contains("takes no image"), "{e}");
    req.image = None;
    req.num_frames = 10;
    let e = t2v.prepare(&req).err().unwrap().to_string();
    assert!(e.contains("4n+1"), "{e}");
}

#[test]
fn a_written_checkpoint_loads_from_files_as_the_built_in_model() {
    for i2v in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        wan::tiny::write_checkpoint(tmp.path(), i2v).unwrap();
        let files = Model::from(
            wan::serve::WanPipeline::from_dir_on(tmp.path(), &Device::Cpu, candle_core::DType::F32)
                .unwrap(),
        );
        assert!(files.untrained());
        let built = model(i2v);
        let mut req = request(6, 4.0);
        if i2v {
            req.image = Some(image(64, 48));
        }
        let video = |m: &Model| {
            let cond = text(m, &req);
            let mut st = m.prepare(&req).unwrap();
            while st.step < st.schedule.steps() {
                m.step(&mut st, &cond).unwrap();
            }
            m.decode_video(&st, &req).unwrap().rgb
        };
        assert!(
            video(&files) == video(&built),
            "i2v {i2v}: files differ from built-in"
        );
        assert_eq!(files.lora_targets(), built.lora_targets());
    }
}
