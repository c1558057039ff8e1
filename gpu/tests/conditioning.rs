//! Conditioned generation through the runtime's own loop (the tiny model):
//! keyframes are held where their strength is 1, batching keeps every
//! conditioned job's bits, video-to-video runs the schedule's tail, and bad
//! conditions are refused naming the field. Parity with the reference is
//! the golden cases' (`golden.rs`, `ltx_condition_*`).

use candle_core::{DType, Tensor};
use vidflow_gpu::pipeline::condition::{NoiseDraw, NoiseSource, SeededNoise};
use vidflow_gpu::pipeline::{
    ConditionInput, DenoiseState, GenerateRequest, LtxPipeline, RgbFrames, VideoToVideo,
};
use vidflow_gpu::tiny;
use vidflow_gpu::transformer::TextCond;

fn job(p: &LtxPipeline, req: &GenerateRequest) -> (DenoiseState, TextCond) {
    let st = p.prepare(req).unwrap();
    let pos = p.encode_prompt(&req.prompt).unwrap();
    let neg = p.encode_prompt(&req.negative_prompt).unwrap();
    let text = p
        .text_condition(&pos, Some(&neg), req.guidance_scale)
        .unwrap();
    (st, text)
}

fn run(p: &LtxPipeline, req: &GenerateRequest) -> DenoiseState {
    let (mut st, text) = job(p, req);
    while st.step < st.schedule.steps() {
        p.step(&mut st, &text).unwrap();
    }
    st
}

fn frames(w: usize, h: usize, n: usize, salt: usize) -> RgbFrames {
    RgbFrames {
        width: w,
        height: h,
        frames: n,
        data: (0..w * h * 3 * n)
            .map(|i| ((i * 7 + salt * 31) % 251) as u8)
            .collect(),
    }
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn base() -> GenerateRequest {
    GenerateRequest {
        prompt: b"a lighthouse at dusk".to_vec(),
        width: 96,
        height: 64,
        num_frames: 17,
        steps: 5,
        seed: 11,
        ..Default::default()
    }
}

/// The posterior sample a condition is encoded to, as the pipeline draws it.
fn encoded(p: &LtxPipeline, f: &RgbFrames, index: usize, seed: u64) -> Tensor {
    let px = Tensor::from_vec(f.data.clone(), (f.frames, f.height, f.width, 3), &p.device)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .affine(2.0 / 255.0, -1.0)
        .unwrap()
        .permute((3, 0, 1, 2))
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .contiguous()
        .unwrap();
    let (mean, std) = p.vae.encode(&px).unwrap();
    let eps = SeededNoise(seed)
        .draw(NoiseDraw::Posterior(index), mean.dims(), &p.device)
        .unwrap();
    p.vae
        .normalize_latents(&(mean + (std * eps).unwrap()).unwrap())
        .unwrap()
}

#[test]
fn strength_one_keyframes_are_held_and_a_later_keyframe_adds_tokens() {
    let p = tiny::pipeline().unwrap();
    let first = frames(96, 64, 1, 1);
    let last = frames(96, 64, 1, 2);
    let req = GenerateRequest {
        conditions: vec![
            ConditionInput {
                frames: first.clone(),
                frame_index: 0,
                strength: 1.0,
            },
            ConditionInput {
                frames: last,
                frame_index: 16,
                strength: 1.0,
            },
        ],
        image_cond_noise_scale: 0.0,
        ..base()
    };
    let st = run(&p, &req);
    let g = st.grid;
    let hw = g.height * g.width;
    let cond = st.cond.as_ref().unwrap();
    // One latent frame of extra tokens for the keyframe at frame 16.
    assert_eq!(cond.extra, hw);
    assert_eq!(st.latents.dim(1).unwrap(), hw + g.tokens());
    // Latent frame 0 is exactly the encoded first frame; the rest moved.
    let video = st.video_latents().unwrap();
    let want = vidflow_gpu::pipeline::pack_latents(&encoded(&p, &first, 0, req.seed)).unwrap();
    assert_eq!(vals(&video.narrow(1, 0, hw).unwrap()), vals(&want));
    let init = cond
        .init
        .narrow(1, cond.extra + hw, g.tokens() - hw)
        .unwrap();
    let rest = video.narrow(1, hw, g.tokens() - hw).unwrap();
    assert_ne!(
        vals(&init),
        vals(&rest),
        "unconditioned tokens must be denoised"
    );

    // With the reference's re-noising, frame 0 stays within 0.15 * (t/1000)^2
    // of its encoding at every step.
    let st = run(
        &p,
        &GenerateRequest {
            image_cond_noise_scale: 0.15,
            ..req.clone()
        },
    );
    let t_last = *st.schedule.timesteps.last().unwrap() / 1000.0;
    let got = vals(&st.video_latents().unwrap().narrow(1, 0, hw).unwrap());
    let max = got
        .iter()
        .zip(vals(&want))
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max > 0.0 && max <= 0.15 * t_last * t_last * 6.0, "{max}");
}

#[test]
fn conditioned_jobs_batch_bit_identically_with_different_per_token_timesteps() {
    let p = tiny::pipeline().unwrap();
    let cond = |f: RgbFrames, s: f64| ConditionInput {
        frames: f,
        frame_index: 0,
        strength: s,
    };
    let reqs = [
        GenerateRequest {
            conditions: vec![cond(frames(96, 64, 9, 3), 1.0)],
            ..base()
        },
        GenerateRequest {
            conditions: vec![cond(frames(96, 64, 1, 4), 0.5)],
            seed: 12,
            steps: 7,
            ..base()
        },
        GenerateRequest {
            conditions: vec![cond(frames(96, 64, 1, 5), 0.8)],
            seed: 13,
            guidance_scale: 1.0,
            ..base()
        },
    ];
    let solo: Vec<Vec<f32>> = reqs.iter().map(|r| vals(&run(&p, r).latents)).collect();
    let mut jobs: Vec<(DenoiseState, TextCond)> = reqs.iter().map(|r| job(&p, r)).collect();
    // Job 1 starts two steps late: the batch mixes steps and timesteps.
    for _ in 0..2 {
        let (st, text) = &mut jobs[1];
        p.step(st, text).unwrap();
    }
    loop {
        let live: Vec<usize> = (0..jobs.len())
            .filter(|i| jobs[*i].0.step < jobs[*i].0.schedule.steps())
            .collect();
        if live.is_empty() {
            break;
        }
        let pairs: Vec<(&DenoiseState, &TextCond)> =
            live.iter().map(|i| (&jobs[*i].0, &jobs[*i].1)).collect();
        assert!(pairs.iter().all(|(s, _)| s.same_positions(pairs[0].0)));
        let vs = p.velocity_batched(&pairs).unwrap();
        for (i, v) in live.iter().zip(vs) {
            p.apply_velocity(&mut jobs[*i].0, &v).unwrap();
        }
    }
    for (i, (st, _)) in jobs.iter().enumerate() {
        assert_eq!(vals(&st.latents), solo[i], "job {i}");
    }
}

#[test]
fn a_later_keyframe_changes_the_positions_so_it_never_batches_with_frame_0_jobs() {
    let p = tiny::pipeline().unwrap();
    let a = job(
        &p,
        &GenerateRequest {
            conditions: vec![ConditionInput {
                frames: frames(96, 64, 1, 1),
                frame_index: 0,
                strength: 1.0,
            }],
            ..base()
        },
    );
    let b = job(
        &p,
        &GenerateRequest {
            conditions: vec![ConditionInput {
                frames: frames(96, 64, 1, 1),
                frame_index: 8,
                strength: 1.0,
            }],
            ..base()
        },
    );
    let plain = job(&p, &base());
    assert!(!a.0.same_positions(&b.0));
    assert!(!a.0.same_positions(&plain.0));
    assert_ne!(a.0.positions_key(), b.0.positions_key());
    assert_eq!(plain.0.positions_key(), 0);
    let e = p
        .velocity_batched(&[(&a.0, &a.1), (&b.0, &b.1)])
        .err()
        .unwrap();
    assert!(e.to_string().contains("conditioning layout"), "{e}");
}

#[test]
fn video_to_video_runs_the_schedules_tail_from_the_noised_source() {
    let p = tiny::pipeline().unwrap();
    let req = GenerateRequest {
        video_to_video: Some(VideoToVideo {
            frames: frames(96, 64, 17, 9),
            strength: 0.4,
        }),
        steps: 10,
        ..base()
    };
    let (st, _) = job(&p, &req);
    assert_eq!(st.schedule.steps(), 4, "int(10 * 0.4) steps");
    let done = run(&p, &req);
    assert_eq!(done.step, 4);
    let lat = vals(&done.latents);
    assert!(lat.iter().all(|v| v.is_finite()));
}

#[test]
fn bad_conditions_are_refused_naming_the_field() {
    let p = tiny::pipeline().unwrap();
    let err = |r: GenerateRequest| p.prepare(&r).err().unwrap().to_string();
    let c = |f: RgbFrames, k: usize, s: f64| ConditionInput {
        frames: f,
        frame_index: k,
        strength: s,
    };
    let e = err(GenerateRequest {
        conditions: vec![c(frames(96, 64, 1, 0), 17, 1.0)],
        ..base()
    });
    assert!(
        e.contains("conditions[0].frame_index") && e.contains("past"),
        "{e}"
    );
    let e = err(GenerateRequest {
        conditions: vec![c(frames(64, 64, 1, 0), 0, 1.0)],
        ..base()
    });
    assert!(e.contains("conditions[0]") && e.contains("64x64"), "{e}");
    let e = err(GenerateRequest {
        conditions: vec![c(frames(96, 64, 1, 0), 0, 1.5)],
        ..base()
    });
    assert!(e.contains("conditions[0].strength"), "{e}");
    let e = err(GenerateRequest {
        conditions: vec![
            c(frames(96, 64, 1, 0), 0, 1.0),
            c(frames(96, 64, 0, 0), 4, 1.0),
        ],
        ..base()
    });
    assert!(e.contains("conditions[1]") && e.contains("0 frames"), "{e}");
    let e = err(GenerateRequest {
        video_to_video: Some(VideoToVideo {
            frames: frames(96, 64, 9, 0),
            strength: 0.5,
        }),
        ..base()
    });
    assert!(
        e.contains("video_to_video") && e.contains("9 frames"),
        "{e}"
    );
    let e = err(GenerateRequest {
        video_to_video: Some(VideoToVideo {
            frames: frames(96, 64, 17, 0),
            strength: 0.0,
        }),
        ..base()
    });
    assert!(e.contains("video_to_video.strength"), "{e}");
}

/// A video condition at a later frame (the reference's prefix path): its
/// first two latent frames become extra tokens at the condition's own
/// positions, and the latent frames after that prefix are blended in place
/// into the video's latents. At strength 1 with no re-noising, both hold
/// their encoding exactly to the end, and the unconditioned frames move.
#[test]
fn a_later_video_condition_keeps_its_prefix_as_tokens_and_blends_the_rest_in_place() {
    let p = tiny::pipeline().unwrap();
    let clip = frames(96, 64, 17, 6);
    let req = GenerateRequest {
        num_frames: 33,
        conditions: vec![ConditionInput {
            frames: clip.clone(),
            frame_index: 8,
            strength: 1.0,
        }],
        image_cond_noise_scale: 0.0,
        ..base()
    };
    let st = run(&p, &req);
    let g = st.grid;
    let hw = g.height * g.width;
    assert_eq!(g.frames, 5, "33 frames are 5 latent frames");
    let z = encoded(&p, &clip, 0, req.seed);
    assert_eq!(z.dim(2).unwrap(), 3, "17 frames are 3 latent frames");
    let cond = st.cond.as_ref().unwrap();
    assert_eq!(cond.extra, 2 * hw, "a two-latent-frame prefix of tokens");
    // The prefix tokens are the clip's first two latent frames.
    let prefix = vidflow_gpu::pipeline::pack_latents(&z.narrow(2, 0, 2).unwrap()).unwrap();
    assert_eq!(
        vals(&st.latents.narrow(1, 0, cond.extra).unwrap()),
        vals(&prefix)
    );
    // Frame 8 is latent frame 1; after the prefix (latent frames 1-2), the
    // clip's third latent frame lands in place at latent frame 3.
    let video = st.video_latents().unwrap();
    let third = vidflow_gpu::pipeline::pack_latents(&z.narrow(2, 2, 1).unwrap()).unwrap();
    assert_eq!(vals(&video.narrow(1, 3 * hw, hw).unwrap()), vals(&third));
    let mask = &cond.mask[cond.extra..];
    for f in 0..g.frames {
        let held = if f == 3 { 1.0 } else { 0.0 };
        assert!(
            mask[f * hw..(f + 1) * hw].iter().all(|m| *m == held),
            "frame {f}"
        );
    }
    // Unconditioned latent frames were denoised away from where they began.
    let init = cond.init.narrow(1, cond.extra, hw).unwrap();
    assert_ne!(vals(&init), vals(&video.narrow(1, 0, hw).unwrap()));
}
