//! The limits a job spec is checked against, shared by validation and
//! by the checks on the mode defaults in `configs/modes.toml`.

/// W and H must be multiples of this (VAE 32x spatial compression).
pub const SIZE_MULTIPLE: u32 = 32;
/// Smallest accepted width or height.
pub const MIN_SIDE: u32 = 256;
/// Largest accepted width or height.
pub const MAX_SIDE: u32 = 3840;
/// Largest accepted frame area: the 4K preset, 3840x2176.
pub const MAX_PIXELS: u64 = 3840 * 2176;
/// Frame counts are 8n+1 (VAE 8x temporal compression plus the first frame).
pub const FRAME_MULTIPLE: u32 = 8;
/// 120 s at 24 fps. Videos longer than one pass (`[chain]` in
/// `configs/models.toml`) are generated as a chain of segments, so the
/// memory a job takes does not grow with this.
pub const MAX_FRAMES: u32 = 2881;
pub const MIN_FPS: f64 = 1.0;
pub const MAX_FPS: f64 = 60.0;
pub const DEFAULT_FPS: f64 = 24.0;
pub const MAX_STEPS: u32 = 200;
pub const MAX_GUIDANCE: f64 = 20.0;

/// Host bytes per output pixel per frame while a job's video is decoded
/// and stored: the VAE's f32 output and its post-processed f32 copy (4 + 4
/// bytes x 3 channels, alive together), the RGB8 frames (3), and in the
/// output stage the cropped RGB8 copy (3). Measured against peak RSS in
/// tests/security.rs.
pub const HOST_BYTES_PER_PIXEL_FRAME: u64 = 30;

/// The host memory a job's frames take at their peak (see
/// [`HOST_BYTES_PER_PIXEL_FRAME`]); model weights and activations are not
/// included (they are per process, not per job).
pub fn host_frame_bytes(width: u32, height: u32, num_frames: u32) -> u64 {
    width as u64 * height as u64 * num_frames as u64 * HOST_BYTES_PER_PIXEL_FRAME
}
