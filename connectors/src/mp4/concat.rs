//! One MP4 from several: the H.264 samples of each part, in order, re-muxed
//! without re-encoding. A video made in segments can so encode each segment
//! on its own (a fresh encoder, an IDR first: the segment's bytes depend on
//! its frames alone) and keep the encoded segment as its checkpoint; the
//! whole video is these parts joined, the same bytes however often the
//! chain was stopped and resumed.

use super::decode::{avcc_to_annexb, push_nal};
use super::demux::{video_track, VideoTrack};
use crate::error::OutputError;

fn bad(part: usize, m: impl std::fmt::Display) -> OutputError {
    OutputError::invalid(
        "parts",
        format!("part {part}"),
        format!("a readable H.264 MP4 ({m})"),
    )
}

/// Joins `parts` (MP4s of the same size, each starting with a key frame) into
/// one MP4 at `fps`.
pub fn concat_mp4(parts: &[&[u8]], fps: f64) -> Result<Vec<u8>, OutputError> {
    let tracks: Vec<VideoTrack> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| video_track(p).map_err(|m| bad(i, m)))
        .collect::<Result<_, _>>()?;
    let first = tracks
        .first()
        .ok_or_else(|| OutputError::invalid("parts", 0, "at least one MP4"))?;
    let (w, h) = (first.width, first.height);
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut muxer = super::fast_start_muxer(w, h, fps, total)?;
    let mut index = 0u32;
    let mut annexb = Vec::new();
    for (i, (t, bytes)) in tracks.iter().zip(parts).enumerate() {
        if (t.width, t.height) != (w, h) {
            return Err(bad(
                i,
                format!("{}x{}, the first part is {w}x{h}", t.width, t.height),
            ));
        }
        for (k, &(from, to)) in t.samples.iter().enumerate() {
            annexb.clear();
            if k == 0 {
                push_nal(&mut annexb, &t.sps);
                push_nal(&mut annexb, &t.pps);
            }
            let key = avcc_to_annexb(&bytes[from..to], t.nal_length, &mut annexb)
                .map_err(|m| bad(i, m))?;
            if k == 0 && !key {
                return Err(bad(i, "its first sample is not a key frame"));
            }
            muxer
                .write_video(f64::from(index) / fps, &annexb, key)
                .map_err(|source| OutputError::Mux {
                    frame: Some(index),
                    source,
                })?;
            index += 1;
        }
    }
    muxer.finish_in_place().map_err(|source| OutputError::Mux {
        frame: None,
        source,
    })?;
    Ok(muxer.into_writer())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mp4::{decode_mp4, encode_mp4, VideoLimits};

    fn clip(w: u32, h: u32, n: u32, salt: u32) -> Vec<u8> {
        (0..w * h * 3 * n)
            .map(|i| ((i / 3 + salt * 40 + i % 3 * 70) % 256) as u8)
            .collect()
    }

    #[test]
    fn joined_parts_decode_to_every_parts_frames_in_order() {
        let (w, h) = (64, 48);
        let parts: Vec<Vec<u8>> = [(9, 0), (8, 1), (8, 2)]
            .iter()
            .map(|&(n, s)| encode_mp4(&clip(w, h, n, s), w, h, n, 24.0).unwrap())
            .collect();
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        let joined = concat_mp4(&refs, 24.0).unwrap();
        assert_eq!(joined, concat_mp4(&refs, 24.0).unwrap(), "deterministic");
        let lim = VideoLimits {
            max_side: 4096,
            max_pixels: 1 << 24,
            max_frames: 100,
        };
        let all = decode_mp4(&joined, lim).unwrap();
        assert_eq!(all.frames, 25);
        assert!((all.fps - 24.0).abs() < 0.01, "{}", all.fps);
        let each: Vec<u8> = parts
            .iter()
            .flat_map(|p| decode_mp4(p, lim).unwrap().rgb)
            .collect();
        assert_eq!(
            all.rgb, each,
            "the same pictures as each part decoded alone"
        );
        let other = encode_mp4(&clip(32, 32, 1, 0), 32, 32, 1, 24.0).unwrap();
        let e = concat_mp4(&[&parts[0], &other], 24.0).unwrap_err();
        assert!(e.to_string().contains("part 1"), "{e}");
    }
}
