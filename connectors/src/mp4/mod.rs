//! RGB frames → H.264 (yuv420p) in an MP4 container.
//!
//! Encoding is done by Cisco's OpenH264 (the `openh264` crate, built from
//! source), muxing by `muxide` (pure Rust: `avc1` sample entry with an `avcC`
//! built from the stream's SPS/PPS, `moov` before `mdat` for fast start).
//!
//! Output is deterministic: the same frames and parameters give the same
//! bytes (the encoder runs single-threaded, and nothing time-dependent is
//! written into the container).

mod concat;
mod decode;
mod demux;

pub use concat::concat_mp4;
pub use decode::{
    decode_frames, decode_mp4, DecodedVideo, VideoInfo, VideoInputError, VideoLimits,
};

use muxide::api::{MuxerBuilder, VideoCodec};
use openh264::encoder::{
    Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, VuiConfig,
};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use openh264::{OpenH264API, Timestamp};

use crate::error::OutputError;

/// Smallest accepted width/height (pixels).
pub const MIN_DIM: u32 = 16;
/// Largest accepted long side (pixels): OpenH264 encodes up to 3840x2160
/// (landscape) or 2160x3840 (portrait).
pub const MAX_DIM: u32 = 3840;
/// Largest accepted short side (pixels), see [`MAX_DIM`].
pub const MAX_SHORT_DIM: u32 = 2160;
/// Accepted frame rates: `MIN_FPS <= fps <= MAX_FPS`.
pub const MIN_FPS: f64 = 0.01;
/// See [`MIN_FPS`].
pub const MAX_FPS: f64 = 1000.0;
/// The MP4 media timescale (ticks per second) the muxer writes: 90 kHz, so
/// frame durations are exact integers for 24, 25, 30, 50, 60 fps and for the
/// NTSC rates (24000/1001 → 3753.75 ticks: durations alternate 3753/3754 and
/// never drift more than half a tick).
pub const MEDIA_TIMESCALE: u32 = 90_000;
/// Key frame (IDR) interval in seconds, so long videos stay seekable.
pub const KEYFRAME_INTERVAL_S: f64 = 2.0;

/// Encodes `frames` RGB8 frames into an H.264 (yuv420p) MP4.
///
/// `rgb` holds `frames * height * width * 3` bytes: frame-major, then rows,
/// then pixels, each pixel R,G,B (HWC). The MP4 has exactly `frames` video
/// samples, each lasting `1 / fps` seconds (on the 90 kHz timescale, see
/// [`MEDIA_TIMESCALE`]); with `frames == 1` the single sample's duration is
/// one tick (the muxer derives durations from timestamp deltas).
///
/// Colour: RGB is converted to BT.601 limited-range YCbCr 4:2:0 and the SPS
/// says so (VUI: SMPTE 170M primaries, transfer and matrix).
///
/// Errors: [`OutputError::Invalid`] naming the field (`width`, `height`,
/// `frames`, `fps` or `rgb`) when an argument is out of range; encoder and
/// muxer failures otherwise.
pub fn encode_mp4(
    rgb: &[u8],
    width: u32,
    height: u32,
    frames: u32,
    fps: f64,
) -> Result<Vec<u8>, OutputError> {
    let frame_len = validate(rgb.len(), width, height, frames, fps)?;
    let mut w = Mp4Writer::new(width, height, fps, rgb.len() / 50)?;
    for frame in rgb.chunks_exact(frame_len) {
        w.push(frame)?;
    }
    w.finish()
}

/// An H.264 MP4 muxer writing `moov` before `mdat` (fast start) into memory.
pub(crate) fn fast_start_muxer(
    width: u32,
    height: u32,
    fps: f64,
    capacity: usize,
) -> Result<muxide::api::Muxer<Vec<u8>>, OutputError> {
    MuxerBuilder::new(Vec::with_capacity(capacity))
        .video(VideoCodec::H264, width, height, fps)
        .with_fast_start(true)
        .build()
        .map_err(|source| OutputError::Mux {
            frame: None,
            source,
        })
}

/// [`encode_mp4`] one frame at a time, for videos produced in pieces (a
/// long video's segments): memory is the encoder's state and the encoded
/// stream (the output file), never the raw frames. The same frames give
/// the same bytes as [`encode_mp4`].
pub struct Mp4Writer {
    encoder: Encoder,
    muxer: muxide::api::Muxer<Vec<u8>>,
    yuv: YUVBuffer,
    annexb: Vec<u8>,
    size: (usize, usize),
    fps: f64,
    index: u32,
}

impl Mp4Writer {
    /// A writer for `width` x `height` frames at `fps` (checked as
    /// [`encode_mp4`] checks them); `capacity` sizes the output buffer.
    pub fn new(width: u32, height: u32, fps: f64, capacity: usize) -> Result<Self, OutputError> {
        let one = width as usize * height as usize * 3;
        validate(one, width, height, 1, fps)?;
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), encoder_config(fps))
            .map_err(|source| OutputError::Encoder {
                frame: None,
                source,
            })?;
        let muxer = fast_start_muxer(width, height, fps, capacity)?;
        Ok(Mp4Writer {
            encoder,
            muxer,
            yuv: YUVBuffer::new(width as usize, height as usize),
            annexb: Vec::new(),
            size: (width as usize, height as usize),
            fps,
            index: 0,
        })
    }

    /// Frames written so far.
    pub fn frames(&self) -> u32 {
        self.index
    }

    /// Encodes one RGB8 frame (HWC, `width * height * 3` bytes).
    pub fn push(&mut self, frame: &[u8]) -> Result<(), OutputError> {
        let (w, h) = self.size;
        if frame.len() != w * h * 3 {
            return Err(OutputError::invalid(
                "rgb",
                format!("{} bytes", frame.len()),
                format!("one {w}x{h} RGB8 frame ({} bytes)", w * h * 3),
            ));
        }
        let index = self.index;
        self.yuv.read_rgb8(RgbSliceU8::new(frame, (w, h)));
        let ts_ms = (f64::from(index) * 1000.0 / self.fps).round() as u64;
        let bitstream = self
            .encoder
            .encode_at(&self.yuv, Timestamp::from_millis(ts_ms))
            .map_err(|source| OutputError::Encoder {
                frame: Some(index),
                source,
            })?;
        let frame_type = bitstream.frame_type();
        self.annexb.clear();
        bitstream.write_vec(&mut self.annexb);
        if matches!(frame_type, FrameType::Skip | FrameType::Invalid) || self.annexb.is_empty() {
            return Err(OutputError::DroppedFrame { index });
        }
        let pts = f64::from(index) / self.fps;
        self.muxer
            .write_video(pts, &self.annexb, frame_type == FrameType::IDR)
            .map_err(|source| OutputError::Mux {
                frame: Some(index),
                source,
            })?;
        self.index += 1;
        Ok(())
    }

    /// The finished MP4 (at least one frame must have been pushed).
    pub fn finish(mut self) -> Result<Vec<u8>, OutputError> {
        if self.index == 0 {
            return Err(OutputError::invalid("frames", 0, "at least 1 frame"));
        }
        self.muxer
            .finish_in_place()
            .map_err(|source| OutputError::Mux {
                frame: None,
                source,
            })?;
        Ok(self.muxer.into_writer())
    }
}

/// Checks the arguments of [`encode_mp4`]; returns the byte length of one frame.
fn validate(
    rgb_len: usize,
    width: u32,
    height: u32,
    frames: u32,
    fps: f64,
) -> Result<usize, OutputError> {
    for (field, value) in [("width", width), ("height", height)] {
        if !(MIN_DIM..=MAX_DIM).contains(&value) || value % 2 != 0 {
            return Err(OutputError::invalid(
                field,
                value,
                format!("an even number of pixels in {MIN_DIM}..={MAX_DIM} (yuv420p needs even dimensions)"),
            ));
        }
    }
    if width.min(height) > MAX_SHORT_DIM {
        let field = if height <= width { "height" } else { "width" };
        let value = width.min(height);
        return Err(OutputError::invalid(
            field,
            value,
            format!("at most {MAX_SHORT_DIM} on the short side (OpenH264 encodes up to {MAX_DIM}x{MAX_SHORT_DIM})"),
        ));
    }
    if frames == 0 {
        return Err(OutputError::invalid("frames", frames, "at least 1"));
    }
    if !fps.is_finite() || !(MIN_FPS..=MAX_FPS).contains(&fps) {
        return Err(OutputError::invalid(
            "fps",
            fps,
            format!("a finite frame rate in {MIN_FPS}..={MAX_FPS}"),
        ));
    }
    let frame_len = width as usize * height as usize * 3;
    let expected = frame_len.checked_mul(frames as usize);
    if expected != Some(rgb_len) {
        let expected = match expected {
            Some(n) => {
                format!("{n} bytes (frames {frames} x height {height} x width {width} x 3, RGB8)")
            }
            None => format!(
                "frames {frames} x height {height} x width {width} x 3 bytes, which overflows"
            ),
        };
        return Err(OutputError::invalid(
            "rgb",
            format!("{rgb_len} bytes"),
            expected,
        ));
    }
    Ok(frame_len)
}

fn encoder_config(fps: f64) -> EncoderConfig {
    let gop = (fps * KEYFRAME_INTERVAL_S).round().max(1.0) as u32;
    EncoderConfig::new()
        // Usage type stays the default (camera, real time): OpenH264 rejects
        // its own "non real time" usage with a single spatial layer.
        .profile(Profile::High)
        .complexity(Complexity::High)
        // Constant quality: rate control off encodes every frame at
        // OpenH264's layer QP (26). Measured on a 256x160 noisy moving
        // pattern (like the untrained model's output): Y-PSNR 36.7 dB at
        // ~1 Mbit/s, vs 28.2 dB for Quality rate control at 256 kbit/s. The
        // bitrate modes also need frame skipping, which must stay off.
        .rate_control_mode(RateControlMode::Off)
        .max_frame_rate(FrameRate::from_hz(fps as f32))
        // Every input frame must become a sample: never skip for rate control.
        .skip_frames(false)
        .intra_frame_period(IntraFramePeriod::from_num_frames(gop))
        // One thread: identical bytes on every machine (slicing depends on
        // the thread count), and the dataflow already runs jobs in parallel.
        .num_threads(1)
        .vui(VuiConfig::bt601())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streaming_writer_gives_encode_mp4s_bytes() {
        let (w, h, n) = (64u32, 48u32, 9u32);
        let rgb: Vec<u8> = (0..(w * h * 3 * n)).map(|i| (i % 251) as u8).collect();
        let whole = encode_mp4(&rgb, w, h, n, 8.0).unwrap();
        let mut wr = Mp4Writer::new(w, h, 8.0, 0).unwrap();
        for f in rgb.chunks_exact((w * h * 3) as usize) {
            wr.push(f).unwrap();
        }
        assert_eq!(wr.frames(), n);
        assert_eq!(wr.finish().unwrap(), whole);
        let mut wr = Mp4Writer::new(w, h, 8.0, 0).unwrap();
        let e = wr.push(&rgb[..10]).unwrap_err();
        assert!(e.to_string().contains("rgb"), "{e}");
        assert!(Mp4Writer::new(w, h, 8.0, 0).unwrap().finish().is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let ok = vec![0u8; 32 * 32 * 3 * 2];
        let field = |r: Result<usize, OutputError>| r.unwrap_err().field().unwrap();
        assert_eq!(validate(ok.len(), 32, 32, 2, 24.0).unwrap(), 32 * 32 * 3);
        assert_eq!(field(validate(ok.len(), 33, 32, 2, 24.0)), "width");
        assert_eq!(field(validate(ok.len(), 32, 31, 2, 24.0)), "height");
        assert_eq!(field(validate(ok.len(), 8, 32, 2, 24.0)), "width");
        assert_eq!(field(validate(ok.len(), 32, 9000, 2, 24.0)), "height");
        assert_eq!(field(validate(ok.len(), 3840, 2162, 2, 24.0)), "height");
        assert_eq!(field(validate(ok.len(), 2162, 3840, 2, 24.0)), "width");
        assert_eq!(field(validate(ok.len(), 3842, 64, 2, 24.0)), "width");
        assert!(validate(3840 * 2160 * 3, 3840, 2160, 1, 24.0).is_ok());
        assert!(validate(3840 * 2160 * 3, 2160, 3840, 1, 24.0).is_ok());
        assert_eq!(field(validate(0, 32, 32, 0, 24.0)), "frames");
        assert_eq!(field(validate(ok.len(), 32, 32, 2, 0.0)), "fps");
        assert_eq!(field(validate(ok.len(), 32, 32, 2, -24.0)), "fps");
        assert_eq!(field(validate(ok.len(), 32, 32, 2, f64::NAN)), "fps");
        assert_eq!(field(validate(ok.len(), 32, 32, 2, f64::INFINITY)), "fps");
        assert_eq!(field(validate(ok.len() - 1, 32, 32, 2, 24.0)), "rgb");
        assert_eq!(field(validate(ok.len(), 32, 32, 3, 24.0)), "rgb");
    }
}
