//! An input file of a job, before and after admission: where it comes from
//! (`ImageInput`: a key confined to the tenant's prefix, or inline bytes
//! capped before their base64 is decoded), its header read without
//! decoding a pixel (`image_header`), and its pixels fitted to the job's
//! size (`decode_image`, `fit_frame`, `fit_rgb8`). Shared by the first
//! frame (`validate`) and the other media (`media`).

use std::io::Cursor;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use image::imageops::FilterType;
use image::ImageFormat;
use vidflow_gpu::pipeline::RgbImage;

use crate::error::JobError;

/// Largest encoded first frame (inline, or read from the store by key),
/// bytes.
pub const MAX_INLINE_IMAGE_BYTES: usize = 32 << 20;
/// Largest first frame, per side and in pixels, as its header declares
/// it: checked before any pixel is decoded, so a small file that declares
/// a huge image (a decompression bomb) costs nothing. A 4K video's frame
/// is 3840x2176; a larger source would only be scaled down.
pub const MAX_IMAGE_SIDE: u32 = 8192;
pub const MAX_IMAGE_PIXELS: u64 = 4096 * 4096;
/// Most memory the decoder may allocate for one first frame.
pub const MAX_IMAGE_DECODE_BYTES: u64 = 256 << 20;
/// Largest object-store key, bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// The first frame of an image-to-video job, still encoded: [`crate::validate::validate`]
/// checks its header (format, declared size) but decodes no pixel, so the
/// one decode of a job happens on the admission stage's own thread
/// ([`decode_image`]), never on an async runtime or the timely worker.
/// Serialisable because validated jobs cross timely's exchange (encoded
/// bytes are also far smaller than the frame).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ImageInput {
    /// An object-store key under the tenant's own prefix (`<tenant>/...`),
    /// not fetched by [`crate::validate::validate`]: admission reads it (at most
    /// [`MAX_INLINE_IMAGE_BYTES`]) and decodes it like an inline image.
    Key(String),
    /// PNG or JPEG bytes whose header passed [`image_header`].
    Inline(Vec<u8>),
}

/// A key is a relative path in the object store, and it must lie under
/// the tenant's own prefix: the store also holds other tenants' inputs and
/// outputs and the service's records, checkpoints and safety decisions.
pub(crate) fn check_key(field: &str, key: &str, tenant: &str) -> Result<(), JobError> {
    let bad = key.is_empty()
        || key.len() > MAX_KEY_LEN
        || key.starts_with('/')
        || key.contains('\\')
        || key.chars().any(char::is_control)
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        return Err(JobError::invalid(
            field,
            format!("{{\"key\": {key:?}}}"),
            format!(
                "key must be a relative object-store key of 1 to {MAX_KEY_LEN} bytes \
                 (segments separated by '/', none empty, '.' or '..')"
            ),
        ));
    }
    if key.split('/').next() != Some(tenant) || !key.contains('/') {
        return Err(JobError::invalid(
            field,
            format!("{{\"key\": {key:?}}}"),
            format!("key must be under the tenant's own prefix `{tenant}/`"),
        ));
    }
    Ok(())
}

/// Decodes an inline image's `inline_base64` (see [`decode_base64_capped`]).
pub(crate) fn decode_base64(b64: &str) -> Result<Vec<u8>, JobError> {
    decode_base64_capped("image", b64, MAX_INLINE_IMAGE_BYTES, "image")
}

/// Decodes `inline_base64` (standard alphabet, padding optional, a
/// `data:...;base64,` prefix and whitespace tolerated), refusing more than
/// `cap` decoded bytes before decoding any.
pub(crate) fn decode_base64_capped(
    field: &str,
    b64: &str,
    cap: usize,
    what: &str,
) -> Result<Vec<u8>, JobError> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    // Tolerate a data URL prefix and line breaks.
    let body = match b64.split_once(";base64,") {
        Some((head, rest)) if head.starts_with("data:") => rest,
        _ => b64,
    };
    let body: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if body.len() / 4 * 3 > cap {
        return Err(JobError::invalid(
            field,
            b64,
            format!(
                "inline {what} larger than {} MiB (upload it and send its key)",
                cap >> 20
            ),
        ));
    }
    ENGINE.decode(body.as_bytes()).map_err(|e| {
        JobError::invalid(
            field,
            b64,
            format!("inline_base64 is not valid base64: {e}"),
        )
    })
}

/// What an image's header says, read without decoding any pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
}

/// Reads and checks an image's header: PNG or JPEG, at most
/// [`MAX_IMAGE_SIDE`] per side and [`MAX_IMAGE_PIXELS`] in all, at most
/// [`MAX_INLINE_IMAGE_BYTES`] encoded. Errors name `image`.
pub fn image_header(bytes: &[u8]) -> Result<ImageHeader, JobError> {
    let value = format!("({} bytes)", bytes.len());
    let err = |reason: String| JobError::invalid("image", &value, reason);
    if bytes.len() > MAX_INLINE_IMAGE_BYTES {
        return Err(err(format!(
            "image larger than {} MiB",
            MAX_INLINE_IMAGE_BYTES >> 20
        )));
    }
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(format!("cannot read image: {e}")))?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => f,
        other => {
            return Err(err(format!(
                "must be a PNG or JPEG image (detected: {})",
                other
                    .map(|f| format!("{f:?}"))
                    .unwrap_or_else(|| "unknown".into())
            )))
        }
    };
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| err(format!("cannot read the {format:?} header: {e}")))?;
    if w == 0 || h == 0 {
        return Err(err("image has no pixels".into()));
    }
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE || w as u64 * h as u64 > MAX_IMAGE_PIXELS {
        return Err(err(format!(
            "image is {w}x{h}: at most {MAX_IMAGE_SIDE} per side and {MAX_IMAGE_PIXELS} pixels \
             (the header is checked before decoding)"
        )));
    }
    Ok(ImageHeader {
        format,
        width: w,
        height: h,
    })
}

/// An input picture at the job's size: the largest centred region of the
/// job's aspect, scaled (Lanczos). Used for first frames, keyframes and
/// every frame of an input video, so all inputs are converted alike.
pub fn fit_frame(img: image::RgbImage, width: u32, height: u32) -> image::RgbImage {
    let (sw, sh) = img.dimensions();
    if (sw, sh) == (width, height) || sw == 0 || sh == 0 {
        return img;
    }
    let scale = (width as f64 / sw as f64).max(height as f64 / sh as f64);
    let cw = ((width as f64 / scale).round() as u32).clamp(1, sw);
    let ch = ((height as f64 / scale).round() as u32).clamp(1, sh);
    let crop = image::imageops::crop_imm(&img, (sw - cw) / 2, (sh - ch) / 2, cw, ch).to_image();
    image::imageops::resize(&crop, width, height, FilterType::Lanczos3)
}

/// [`fit_frame`] on raw RGB8 bytes of a `sw` x `sh` frame (`None` when the
/// byte count does not match the size).
pub fn fit_rgb8(data: Vec<u8>, sw: u32, sh: u32, width: u32, height: u32) -> Option<Vec<u8>> {
    let img = image::RgbImage::from_raw(sw, sh, data)?;
    Some(fit_frame(img, width, height).into_raw())
}

/// Decodes PNG or JPEG bytes to RGB8 (alpha dropped, grey expanded) and
/// fits them to `width` x `height`: scaled to cover the frame keeping the
/// aspect ratio, centre-cropped, Lanczos3 resampling. Errors name `image`
/// and carry the decoder's message.
pub fn decode_image(bytes: &[u8], width: u32, height: u32) -> Result<RgbImage, JobError> {
    let value = format!("({} bytes)", bytes.len());
    let err = |reason: String| JobError::invalid("image", &value, reason);
    let format = image_header(bytes)?.format;
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_DECODE_BYTES);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| err(format!("cannot decode {format:?}: {e}")))?
        .to_rgb8();
    let (sw, sh) = img.dimensions();
    if sw == 0 || sh == 0 {
        return Err(err("image has no pixels".into()));
    }
    let fitted = fit_frame(img, width, height);
    Ok(RgbImage {
        width: width as usize,
        height: height as usize,
        data: fitted.into_raw(),
    })
}
