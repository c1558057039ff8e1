//! Long videos as a chain of overlapping segments: each segment after the
//! first is a conditioned generation whose first `overlap` frames are held
//! to the previous segment's last `overlap` frames (a video condition at
//! frame 0, strength 1), so the chain continues the picture. This file
//! plans the cut and builds each segment's request; the chain itself runs
//! in `vidflow-operators` (`chain.rs`), segment by segment through the
//! ordinary stages, so what a chain holds is one segment's frames, never
//! the whole video.
//!
//! A segment depends only on the request, its index and the previous
//! segment's tail, so a chain stopped after segment k resumes from that
//! tail and gives the same frames.

use super::{ConditionInput, GenerateRequest, LtxPipeline, RgbFrames, Video};
use crate::error::{GpuError, Result};

/// One segment of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentPlan {
    pub index: usize,
    /// Frames generated (8k+1).
    pub frames: usize,
    /// Output frame of the segment's first frame.
    pub start: usize,
    /// Frames of the segment that are new (emitted): the first segment's
    /// all, a later one's after its overlap, the last one's up to the end.
    pub emit_from: usize,
    pub emit: usize,
}

/// How a video of `total_frames` is cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainPlan {
    pub total_frames: usize,
    pub segment_frames: usize,
    pub overlap: usize,
    pub segments: Vec<SegmentPlan>,
}

impl ChainPlan {
    /// Segments of `segment_frames` (8k+1) overlapping by `overlap` (8k+1,
    /// fewer than a segment); the last is shortened to the 8k+1 that covers
    /// the rest. `temporal` is the VAE's temporal compression (8).
    pub fn new(
        total_frames: usize,
        segment_frames: usize,
        overlap: usize,
        temporal: usize,
    ) -> Result<Self> {
        let form = |n: usize| n >= 1 && (n - 1) % temporal == 0;
        if !form(segment_frames) || !form(overlap) || overlap >= segment_frames {
            return Err(GpuError::invalid(
                "chain",
                format!(
                    "segments of {segment_frames} frames overlapping by {overlap}: both must be {temporal}k+1, the overlap shorter"
                ),
            ));
        }
        if total_frames == 0 {
            return Err(GpuError::invalid("num_frames", "must be at least 1"));
        }
        let mut segments = Vec::new();
        let first = segment_frames.min(round_up(total_frames, temporal));
        segments.push(SegmentPlan {
            index: 0,
            frames: first,
            start: 0,
            emit_from: 0,
            emit: first.min(total_frames),
        });
        let mut done = first.min(total_frames);
        while done < total_frames {
            let rest = total_frames - done;
            let frames = segment_frames.min(round_up(overlap + rest, temporal));
            let emit = (frames - overlap).min(rest);
            segments.push(SegmentPlan {
                index: segments.len(),
                frames,
                start: done - overlap,
                emit_from: overlap,
                emit,
            });
            done += emit;
        }
        Ok(ChainPlan {
            total_frames,
            segment_frames,
            overlap,
            segments,
        })
    }

    /// Denoising steps of the whole chain at `steps` per segment.
    pub fn total_steps(&self, steps: usize) -> usize {
        self.segments.len() * steps
    }
}

/// The smallest `temporal * k + 1` >= n.
fn round_up(n: usize, temporal: usize) -> usize {
    (n.max(1) - 1).div_ceil(temporal) * temporal + 1
}

/// Seed of segment `index`: the job's seed for the first, then one apart
/// (segments must not repeat one another's noise).
pub fn segment_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_add(index as u64)
}

impl LtxPipeline {
    /// Segment `seg`'s request: the job's, at the segment's length and seed,
    /// conditioned on `tail` (the previous segment's last `overlap` frames).
    pub fn segment_request(
        &self,
        req: &GenerateRequest,
        seg: &SegmentPlan,
        tail: Option<&RgbFrames>,
    ) -> GenerateRequest {
        let mut r = GenerateRequest {
            num_frames: seg.frames,
            seed: segment_seed(req.seed, seg.index),
            ..req.clone()
        };
        if let Some(t) = tail {
            r.image = None;
            r.conditions = vec![ConditionInput {
                frames: t.clone(),
                frame_index: 0,
                strength: 1.0,
            }];
        }
        r
    }
}

/// The last `overlap` frames of a segment's video: what the next segment
/// is conditioned on.
pub fn tail(video: &Video, overlap: usize) -> RgbFrames {
    let per = video.width * video.height * 3;
    let n = overlap.min(video.frames);
    RgbFrames {
        width: video.width,
        height: video.height,
        frames: n,
        data: video.rgb[(video.frames - n) * per..].to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_cover_the_video_exactly_with_8k_plus_1_segments() {
        for total in [1, 9, 17, 25, 41, 121, 1441, 2881] {
            for (seg, ov) in [(17, 9), (121, 17), (257, 25)] {
                let p = ChainPlan::new(total, seg, ov, 8).unwrap();
                let emitted: usize = p.segments.iter().map(|s| s.emit).sum();
                assert_eq!(emitted, total, "{total} {seg} {ov}: {p:?}");
                for s in &p.segments {
                    assert!((s.frames - 1) % 8 == 0 && s.frames <= seg, "{s:?}");
                    assert!(s.emit_from + s.emit <= s.frames, "{s:?}");
                }
                for w in p.segments.windows(2) {
                    // Each segment starts `overlap` frames before the new ones.
                    assert_eq!(w[1].start + ov, w[0].start + w[0].emit_from + w[0].emit);
                }
            }
        }
        let p = ChainPlan::new(41, 17, 9, 8).unwrap();
        let shape: Vec<(usize, usize, usize)> = p
            .segments
            .iter()
            .map(|s| (s.start, s.frames, s.emit))
            .collect();
        assert_eq!(
            shape,
            vec![(0, 17, 17), (8, 17, 8), (16, 17, 8), (24, 17, 8)]
        );
        assert!(ChainPlan::new(41, 16, 9, 8).is_err());
        assert_eq!(p.total_steps(3), 12);
        assert!(ChainPlan::new(41, 17, 17, 8).is_err());
    }

    #[test]
    fn a_later_segment_is_the_job_at_its_length_and_seed_held_to_the_tail() {
        let p = crate::tiny::pipeline().unwrap();
        let plan = ChainPlan::new(41, 17, 9, 8).unwrap();
        let req = GenerateRequest {
            prompt: b"a long walk".to_vec(),
            width: 64,
            height: 64,
            num_frames: 41,
            steps: 3,
            seed: 5,
            ..Default::default()
        };
        let first = p.segment_request(&req, &plan.segments[0], None);
        assert_eq!((first.num_frames, first.seed), (17, 5));
        assert!(first.conditions.is_empty());
        let video = Video {
            width: 64,
            height: 64,
            frames: 17,
            fps: 24.0,
            rgb: (0..64 * 64 * 3 * 17)
                .map(|i| (i / (64 * 64 * 3)) as u8)
                .collect(),
            untrained: true,
        };
        let t = tail(&video, plan.overlap);
        assert_eq!(t.frames, 9);
        assert_eq!(t.data[0], 8, "the tail starts at frame 17 - 9");
        let second = p.segment_request(&req, &plan.segments[1], Some(&t));
        assert_eq!((second.num_frames, second.seed), (17, 6));
        assert_eq!(second.conditions.len(), 1);
        let c = &second.conditions[0];
        assert_eq!((c.frame_index, c.strength, c.frames.frames), (0, 1.0, 9));
    }
}
