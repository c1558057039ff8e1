//! A long video as a chain of segments (the tiny model): exactly the asked
//! frame count comes out, frame by frame, and a chain resumed after a
//! segment from that segment's tail gives the same frames as one run.

use vidflow_gpu::pipeline::chain::ChainPlan;
use vidflow_gpu::pipeline::{Flow, GenerateRequest, RgbFrames};
use vidflow_gpu::tiny;

fn req() -> GenerateRequest {
    GenerateRequest {
        prompt: b"a long walk along the shore".to_vec(),
        width: 64,
        height: 64,
        num_frames: 41,
        steps: 3,
        seed: 5,
        ..Default::default()
    }
}

#[test]
fn a_chain_emits_every_frame_once_and_resumes_to_the_same_frames() {
    let p = tiny::pipeline().unwrap();
    let r = req();
    let plan = ChainPlan::new(r.num_frames, 17, 9, 8).unwrap();
    assert_eq!(plan.segments.len(), 4);
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut tails: Vec<RgbFrames> = Vec::new();
    let mut steps = 0;
    p.generate_chain(
        &r,
        &plan,
        0,
        None,
        &mut |_, _| {
            steps += 1;
            Flow::Continue
        },
        &mut |f| {
            frames.push(f.to_vec());
            Ok(())
        },
        &mut |_, t| {
            tails.push(t.clone());
            Flow::Continue
        },
    )
    .unwrap();
    assert_eq!(frames.len(), 41);
    assert_eq!(steps, plan.total_steps(3));
    assert!(frames.iter().all(|f| f.len() == 64 * 64 * 3));
    assert_eq!(tails[0].frames, 9);

    // Stopped after segment 1, resumed from its tail: frames 25.. again.
    let mut again: Vec<Vec<u8>> = Vec::new();
    p.generate_chain(
        &r,
        &plan,
        2,
        Some(tails[1].clone()),
        &mut |_, _| Flow::Continue,
        &mut |f| {
            again.push(f.to_vec());
            Ok(())
        },
        &mut |_, _| Flow::Continue,
    )
    .unwrap();
    assert_eq!(again.len(), 41 - 25);
    assert!(again == frames[25..], "resumed frames differ");

    // A stop after a segment is a cancel naming it.
    let e = p
        .generate_chain(
            &r,
            &plan,
            0,
            None,
            &mut |_, _| Flow::Continue,
            &mut |_| Ok(()),
            &mut |i, _| if i == 1 { Flow::Stop } else { Flow::Continue },
        )
        .unwrap_err();
    assert!(e.to_string().contains('1'), "{e}");
}
