//! MP4 (H.264) → RGB frames, for input videos (video-to-video, extension,
//! video conditions).
//!
//! Demuxing is ours (`demux.rs`, which says why); decoding is OpenH264's,
//! the same library that encodes our outputs, so a video we wrote comes
//! back through the stack that made it. Colour: BT.601 limited range, as we
//! encode.
//!
//! Everything here runs on untrusted bytes, so it is bounded before it costs
//! memory: the caller caps the file size, the header's frame size and sample
//! count are checked against [`VideoLimits`] before any sample is decoded,
//! and decoding stops at `max_frames`.

use openh264::decoder::Decoder;

use super::demux::video_track;
use super::MIN_DIM;

/// Bounds of an input video, checked from its header before decoding.
#[derive(Debug, Clone, Copy)]
pub struct VideoLimits {
    /// Largest width or height, pixels.
    pub max_side: u32,
    /// Largest width x height, pixels.
    pub max_pixels: u64,
    /// Most frames decoded (later ones are never touched).
    pub max_frames: u32,
}

/// An input video's frames, RGB8, frame after frame, rows, pixels (HWC).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedVideo {
    pub width: u32,
    pub height: u32,
    /// From the track's sample durations (the mean rate).
    pub fps: f64,
    /// Frames decoded (at most `max_frames`).
    pub frames: u32,
    /// Frames the file holds (may exceed `frames`).
    pub total_frames: u32,
    pub rgb: Vec<u8>,
}

/// Why an input video cannot be used. Messages name what is wrong with the
/// file; the caller names the field it came from.
#[derive(Debug, thiserror::Error)]
pub enum VideoInputError {
    /// Not an MP4 we can read (no `moov`, broken boxes, ...).
    #[error("not a readable MP4: {0}")]
    Container(String),
    /// No video track, or one whose codec is not H.264.
    #[error("unsupported video: {0} (H.264 in MP4 is supported)")]
    Unsupported(String),
    /// The header declares a size or length beyond the limits.
    #[error("{0}")]
    TooLarge(String),
    /// The H.264 stream did not decode.
    #[error("H.264 decode failed at sample {sample}: {source}")]
    Decode {
        sample: u32,
        #[source]
        source: openh264::Error,
    },
    /// A decoded picture's size differs from the track header's.
    #[error("sample {sample} decoded to {got_w}x{got_h}, the track says {want_w}x{want_h}")]
    SizeChange {
        sample: u32,
        got_w: usize,
        got_h: usize,
        want_w: u32,
        want_h: u32,
    },
    /// No picture came out.
    #[error("the video decoded to no frames")]
    Empty,
}

/// What a video's header says (and how many frames were decoded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    /// From the track's duration (0 when it does not say).
    pub fps: f64,
    /// Frames the file holds.
    pub total_frames: u32,
    /// Frames handed to the callback.
    pub decoded: u32,
}

/// Decodes the first video track of an MP4 to RGB8 frames (see the module
/// doc for the bounds).
pub fn decode_mp4(bytes: &[u8], limits: VideoLimits) -> Result<DecodedVideo, VideoInputError> {
    let mut rgb = Vec::new();
    let info = decode_frames(bytes, limits, &mut |_, _, f| {
        rgb.extend_from_slice(f);
        true
    })?;
    Ok(DecodedVideo {
        width: info.width,
        height: info.height,
        fps: info.fps,
        frames: info.decoded,
        total_frames: info.total_frames,
        rgb,
    })
}

/// Streams the first video track's frames (width, height, RGB8 HWC) to
/// `on_frame`, in order, one at a time (memory: one frame), until it
/// returns false or `max_frames` were given.
pub fn decode_frames(
    bytes: &[u8],
    limits: VideoLimits,
    on_frame: &mut dyn FnMut(u32, u32, &[u8]) -> bool,
) -> Result<VideoInfo, VideoInputError> {
    let track = video_track(bytes).map_err(|m| {
        if m.starts_with("codec ") || m.contains("no video track") {
            VideoInputError::Unsupported(m)
        } else {
            VideoInputError::Container(m)
        }
    })?;
    let (w, h) = (track.width, track.height);
    if w < MIN_DIM || h < MIN_DIM || w > limits.max_side || h > limits.max_side {
        return Err(VideoInputError::TooLarge(format!(
            "the video is {w}x{h}: each side must be {MIN_DIM}..={}",
            limits.max_side
        )));
    }
    if w as u64 * h as u64 > limits.max_pixels {
        return Err(VideoInputError::TooLarge(format!(
            "the video is {w}x{h}: at most {} pixels",
            limits.max_pixels
        )));
    }
    let total = track.samples.len() as u32;
    let fps = if track.seconds > 0.0 && total > 1 {
        total as f64 / track.seconds
    } else {
        0.0
    };
    let want = total.min(limits.max_frames);
    let mut frame = vec![0u8; w as usize * h as usize * 3];
    let mut dec = Decoder::new().map_err(|source| VideoInputError::Decode { sample: 0, source })?;
    let mut annexb = Vec::new();
    let mut frames = 0u32;
    let mut emit = |pic: &openh264::decoder::DecodedYUV<'_>, sample: u32| {
        use openh264::formats::YUVSource;
        let (pw, ph) = pic.dimensions();
        if (pw as u32, ph as u32) != (w, h) {
            return Err(VideoInputError::SizeChange {
                sample,
                got_w: pw,
                got_h: ph,
                want_w: w,
                want_h: h,
            });
        }
        pic.write_rgb8(&mut frame);
        frames += 1;
        Ok(on_frame(w, h, &frame) && frames < want)
    };
    let mut more = true;
    push_nal(&mut annexb, &track.sps);
    push_nal(&mut annexb, &track.pps);
    for (i, &(from, to)) in track.samples.iter().enumerate() {
        let sample_id = i as u32 + 1;
        avcc_to_annexb(&bytes[from..to], track.nal_length, &mut annexb)
            .map_err(|m| VideoInputError::Container(format!("sample {sample_id}: {m}")))?;
        let pic = dec
            .decode(&annexb)
            .map_err(|source| VideoInputError::Decode {
                sample: sample_id,
                source,
            })?;
        annexb.clear();
        if let Some(pic) = pic {
            more = emit(&pic, sample_id)?;
            if !more {
                break;
            }
        }
    }
    if more {
        let rest = dec
            .flush_remaining()
            .map_err(|source| VideoInputError::Decode {
                sample: total,
                source,
            })?;
        for pic in rest {
            if !emit(&pic, total)? {
                break;
            }
        }
    }
    if frames == 0 {
        return Err(VideoInputError::Empty);
    }
    Ok(VideoInfo {
        width: w,
        height: h,
        fps,
        total_frames: total,
        decoded: frames,
    })
}

pub(super) fn push_nal(out: &mut Vec<u8>, nal: &[u8]) {
    out.extend_from_slice(&[0, 0, 0, 1]);
    out.extend_from_slice(nal);
}

/// MP4 samples hold length-prefixed NAL units (`len` bytes of length, as
/// `avcC` declares); the decoder and the muxer want start codes. Returns
/// whether the sample holds an IDR slice (a key frame).
pub(super) fn avcc_to_annexb(sample: &[u8], len: usize, out: &mut Vec<u8>) -> Result<bool, String> {
    let mut key = false;
    let mut rest = sample;
    while !rest.is_empty() {
        if rest.len() < len {
            return Err("truncated NAL length".into());
        }
        let n = rest[..len].iter().fold(0usize, |a, b| a << 8 | *b as usize);
        rest = &rest[len..];
        if n > rest.len() {
            return Err(format!("NAL of {n} bytes overruns the sample"));
        }
        key |= rest.first().is_some_and(|b| b & 0x1f == 5);
        push_nal(out, &rest[..n]);
        rest = &rest[n..];
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mp4::encode_mp4;

    const LIMITS: VideoLimits = VideoLimits {
        max_side: 4096,
        max_pixels: 4096 * 4096,
        max_frames: 1441,
    };

    /// A moving gradient: a clip whose decode we can compare.
    fn clip(w: u32, h: u32, n: u32) -> Vec<u8> {
        let mut v = Vec::new();
        for f in 0..n {
            for y in 0..h {
                for x in 0..w {
                    v.push(((x * 4 + f * 9) % 256) as u8);
                    v.push(((y * 4) % 256) as u8);
                    v.push(((x + y + f * 5) % 256) as u8);
                }
            }
        }
        v
    }

    #[test]
    fn our_own_mp4_decodes_to_its_frames() {
        let (w, h, n) = (96, 64, 17);
        let src = clip(w, h, n);
        let mp4 = encode_mp4(&src, w, h, n, 24.0).unwrap();
        let d = decode_mp4(&mp4, LIMITS).unwrap();
        assert_eq!((d.width, d.height, d.frames, d.total_frames), (w, h, n, n));
        assert!((d.fps - 24.0).abs() < 0.01, "{}", d.fps);
        let mean: f64 = src
            .iter()
            .zip(&d.rgb)
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum::<f64>()
            / src.len() as f64;
        // Lossy H.264 plus 4:2:0 chroma: close, not equal.
        assert!(mean < 8.0, "mean |diff| {mean}");
    }

    #[test]
    fn decoding_stops_at_max_frames_and_checks_the_header_first() {
        let mp4 = encode_mp4(&clip(64, 48, 9), 64, 48, 9, 8.0).unwrap();
        let d = decode_mp4(
            &mp4,
            VideoLimits {
                max_frames: 3,
                ..LIMITS
            },
        )
        .unwrap();
        assert_eq!((d.frames, d.total_frames), (3, 9));
        assert_eq!(d.rgb.len(), 3 * 64 * 48 * 3);
        let e = decode_mp4(
            &mp4,
            VideoLimits {
                max_side: 32,
                ..LIMITS
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("64x48"), "{e}");
    }

    #[test]
    fn another_codec_is_named_as_unsupported() {
        let mut mp4 = encode_mp4(&clip(64, 48, 9), 64, 48, 9, 8.0).unwrap();
        let at = mp4.windows(4).position(|w| w == b"avc1").unwrap();
        mp4[at..at + 4].copy_from_slice(b"hvc1");
        let e = decode_mp4(&mp4, LIMITS).unwrap_err();
        assert!(matches!(e, VideoInputError::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("hvc1"), "{e}");
    }

    #[test]
    fn garbage_and_damaged_files_are_errors_not_panics() {
        let mp4 = encode_mp4(&clip(64, 48, 9), 64, 48, 9, 8.0).unwrap();
        assert!(decode_mp4(b"not an mp4 at all", LIMITS).is_err());
        assert!(decode_mp4(&[], LIMITS).is_err());
        // Truncations and byte flips all over the file (a cheap fuzz: every
        // one must come back as Ok or Err).
        let mut seed = 0x9E37_79B9_u64;
        for cut in (0..mp4.len()).step_by(97) {
            let _ = decode_mp4(&mp4[..cut], LIMITS);
        }
        let moov_end = 1 + mp4
            .windows(4)
            .position(|w| w == b"mdat")
            .unwrap_or(mp4.len() - 1);
        for k in 0..3000 {
            let mut m = mp4.clone();
            for _ in 0..(1 + k % 6) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Half the flips hit the header boxes, half anywhere.
                let span = if k % 2 == 0 { moov_end } else { m.len() };
                let i = (seed >> 33) as usize % span;
                m[i] ^= (seed >> 17) as u8 | 1;
            }
            let _ = decode_mp4(&m, LIMITS);
        }
    }
}
