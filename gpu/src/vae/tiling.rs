//! Tiled VAE decode: a 1080p or long clip decoded as overlapping spatial and
//! temporal tiles, blended with linear ramps, so the decode's working set is
//! bounded by the tile and not by the clip.
//!
//! Tiles form a grid (spans per axis), so the blend weights are separable:
//! each axis' ramps are normalised to sum to one at every position, and the
//! product of three normalised ramps is a partition of unity over the grid.
//! Blending is done one axis at a time (width, then height, then frames) by
//! cutting each axis into segments covered by a fixed set of tiles, so no
//! full-size accumulator is copied per tile.
//!
//! Not bit-identical to an untiled decode (the decoder's receptive field
//! crosses tile edges); a clip that fits the budget is decoded in one piece.

use candle_core::{DType, Tensor};

use super::{LtxVae, VaeConfig};
use crate::error::{GpuError, Result};

/// Tile sizes in latent units; `usize::MAX` on an axis means no split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeTiling {
    pub tile: usize,
    pub overlap: usize,
    pub tile_frames: usize,
    pub overlap_frames: usize,
}

/// Decode working-set budget used by the runtime and the admission estimate
/// unless configured otherwise.
pub const DEFAULT_DECODE_BUDGET_BYTES: u64 = 8 << 30;

/// Smallest tiles the planner goes down to (latent units): below this the
/// overlap would be most of the tile.
const MIN_TILE: usize = 8;
const MIN_TILE_FRAMES: usize = 4;

impl DecodeTiling {
    /// One piece: the plain decode.
    pub const WHOLE: DecodeTiling = DecodeTiling {
        tile: usize::MAX,
        overlap: 0,
        tile_frames: usize::MAX,
        overlap_frames: 0,
    };

    /// The largest tiles whose estimated working set fits `budget_bytes`,
    /// halving the larger axis (space or time) until it does or the tiles
    /// reach their minimum. A clip that fits is not split.
    pub fn plan(
        cfg: &VaeConfig,
        latent: (usize, usize, usize),
        act_bytes: u64,
        budget_bytes: u64,
    ) -> DecodeTiling {
        let (lf, lh, lw) = latent;
        let (mut tf, mut th) = (lf, lh.max(lw));
        let fits = |tf: usize, th: usize| {
            decode_workspace_bytes(cfg, (tf.min(lf), th.min(lh), th.min(lw)), act_bytes)
                <= budget_bytes
        };
        while !fits(tf, th) {
            let can_t = tf / 2 >= MIN_TILE_FRAMES;
            let can_s = th / 2 >= MIN_TILE;
            // Time first when the clip is long: temporal seams are the
            // least visible, and 1 latent frame is 8 video frames.
            if can_t && (tf >= th || !can_s) {
                tf = tf.div_ceil(2);
            } else if can_s {
                th = th.div_ceil(2);
            } else {
                break;
            }
        }
        let split_s = th < lh.max(lw);
        let split_t = tf < lf;
        DecodeTiling {
            tile: if split_s { th } else { usize::MAX },
            overlap: if split_s { (th / 4).max(2) } else { 0 },
            tile_frames: if split_t { tf } else { usize::MAX },
            overlap_frames: if split_t { (tf / 4).max(1) } else { 0 },
        }
    }

    pub fn is_whole(&self) -> bool {
        self.tile == usize::MAX && self.tile_frames == usize::MAX
    }
}

/// Estimated decode working set for a latent of (frames, height, width) on
/// the GPU path: the finest level's activations (~4 live in a resnet) plus
/// the im2col buffer of its 3x3x3 convolution (27 input taps per output
/// element), which dominates.
pub fn decode_workspace_bytes(
    cfg: &VaeConfig,
    latent: (usize, usize, usize),
    act_bytes: u64,
) -> u64 {
    let (lf, lh, lw) = latent;
    let tc = cfg.temporal_compression().max(1);
    let s = cfg.spatial_compression().max(1) as u64;
    let patch = cfg.patch_size.max(1) as u64;
    let frames = (lf.saturating_sub(1) * tc + 1) as u64;
    let c0 = cfg
        .decoder_block_out_channels
        .first()
        .copied()
        .unwrap_or(128) as u64;
    let finest = c0 * frames * (lh as u64 * s / patch) * (lw as u64 * s / patch);
    (4 + 27) * finest * act_bytes
}

/// Start and length of each tile along an axis of `n`, tiles of `tile` with
/// at least `overlap` shared; the last tile ends at `n`.
pub(crate) fn spans(n: usize, tile: usize, overlap: usize) -> Vec<(usize, usize)> {
    if tile >= n || n == 0 {
        return vec![(0, n)];
    }
    let stride = tile.saturating_sub(overlap).max(1);
    let mut v = Vec::new();
    let mut start = 0;
    loop {
        if start + tile >= n {
            let last = n - tile;
            if v.last().map(|(s, _)| *s) != Some(last) {
                v.push((last, tile));
            }
            return v;
        }
        v.push((start, tile));
        start += stride;
    }
}

/// Per-tile weights along one axis, normalised so they sum to 1 at every
/// position: ramps rise over the overlap with the previous tile and fall
/// over the overlap with the next. `spans` are in output units.
pub(crate) fn axis_weights(spans: &[(usize, usize)], n: usize) -> Vec<Vec<f32>> {
    let mut raw: Vec<Vec<f32>> = Vec::with_capacity(spans.len());
    for (i, &(start, len)) in spans.iter().enumerate() {
        let lead = if i > 0 {
            let (ps, pl) = spans[i - 1];
            (ps + pl).saturating_sub(start)
        } else {
            0
        };
        let trail = spans
            .get(i + 1)
            .map(|&(ns, _)| (start + len).saturating_sub(ns))
            .unwrap_or(0);
        raw.push(
            (0..len)
                .map(|p| {
                    let up = if lead > 0 {
                        ((p + 1) as f32 / (lead + 1) as f32).min(1.0)
                    } else {
                        1.0
                    };
                    let down = if trail > 0 {
                        ((len - p) as f32 / (trail + 1) as f32).min(1.0)
                    } else {
                        1.0
                    };
                    up * down
                })
                .collect(),
        );
    }
    let mut norm = vec![0f32; n];
    for (w, &(start, _)) in raw.iter().zip(spans) {
        for (p, v) in w.iter().enumerate() {
            norm[start + p] += v;
        }
    }
    for (w, &(start, _)) in raw.iter_mut().zip(spans) {
        for (p, v) in w.iter_mut().enumerate() {
            *v /= norm[start + p];
        }
    }
    raw
}

/// Blends tiles along `dim` (each `(start, tensor)` in output units, with
/// its normalised weights) into one tensor of length `n` on that axis.
fn blend_axis(
    tiles: &[(usize, Tensor)],
    weights: &[Vec<f32>],
    dim: usize,
    n: usize,
) -> Result<Tensor> {
    if tiles.len() == 1 {
        return Ok(tiles[0].1.clone());
    }
    let mut cuts: Vec<usize> = tiles
        .iter()
        .flat_map(|(s, t)| [*s, s + t.dim(dim).unwrap_or(0)])
        .collect();
    cuts.push(0);
    cuts.push(n);
    cuts.sort_unstable();
    cuts.dedup();
    let rank = tiles[0].1.rank();
    let mut pieces = Vec::new();
    for seg in cuts.windows(2) {
        let (a, b) = (seg[0], seg[1]);
        let mut acc: Option<Tensor> = None;
        for ((start, t), w) in tiles.iter().zip(weights) {
            let len = t.dim(dim)?;
            if a < *start || b > start + len {
                continue;
            }
            let part = t.narrow(dim, a - start, b - a)?.to_dtype(DType::F32)?;
            let mut shape = vec![1usize; rank];
            shape[dim] = b - a;
            let wt = Tensor::from_vec(w[a - start..b - start].to_vec(), shape, t.device())?;
            let part = part.broadcast_mul(&wt)?;
            acc = Some(match acc {
                Some(x) => (x + part)?,
                None => part,
            });
        }
        pieces.push(acc.ok_or_else(|| {
            GpuError::invalid(
                "decode tiling",
                format!("no tile covers {a}..{b} on axis {dim}"),
            )
        })?);
    }
    Ok(Tensor::cat(&pieces, dim)?.to_dtype(tiles[0].1.dtype())?)
}

impl LtxVae {
    /// [`LtxVae::decode`] in tiles (see the module doc); the same output
    /// shape. `DecodeTiling::WHOLE` (or a clip within one tile) is the plain
    /// decode.
    pub fn decode_tiled(
        &self,
        z: &Tensor,
        timestep: Option<f64>,
        tiling: DecodeTiling,
    ) -> Result<Tensor> {
        let dims = z.dims().to_vec();
        if dims.len() != 5 {
            return Err(GpuError::invalid(
                "latents",
                format!("expected [B, C, F, H, W], got shape {dims:?}"),
            ));
        }
        let tc = self.config.temporal_compression().max(1);
        let s = self.config.spatial_compression().max(1);
        tiled(z, tiling, tc, s, |t| self.decode(t, timestep))
    }
}

/// The tiling itself, over any decoder with temporal compression `tc` (the
/// first latent frame gives one frame, the others `tc`) and spatial `s`.
fn tiled(
    z: &Tensor,
    tiling: DecodeTiling,
    tc: usize,
    s: usize,
    decode: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let dims = z.dims();
    let (lf, lh, lw) = (dims[2], dims[3], dims[4]);
    let fs = spans(lf, tiling.tile_frames, tiling.overlap_frames);
    let hs = spans(lh, tiling.tile, tiling.overlap);
    let ws = spans(lw, tiling.tile, tiling.overlap);
    if fs.len() == 1 && hs.len() == 1 && ws.len() == 1 {
        return decode(z);
    }
    // Latent frames [f0, f0+n) decode to (n-1)*tc+1 frames whose first is
    // output frame f0*tc.
    let out_f = |(f0, n): (usize, usize)| (f0 * tc, (n - 1) * tc + 1);
    let px = |(a, n): (usize, usize)| (a * s, n * s);
    let (nf, nh, nw) = ((lf - 1) * tc + 1, lh * s, lw * s);
    let wf = axis_weights(&fs.iter().map(|&x| out_f(x)).collect::<Vec<_>>(), nf);
    let wh = axis_weights(&hs.iter().map(|&x| px(x)).collect::<Vec<_>>(), nh);
    let ww = axis_weights(&ws.iter().map(|&x| px(x)).collect::<Vec<_>>(), nw);
    let mut chunks = Vec::with_capacity(fs.len());
    for &(f0, fl) in &fs {
        let zf = z.narrow(2, f0, fl)?;
        let mut rows = Vec::with_capacity(hs.len());
        for &(h0, hl) in &hs {
            let mut cols = Vec::with_capacity(ws.len());
            for &(w0, wl) in &ws {
                let tile = decode(&zf.narrow(3, h0, hl)?.narrow(4, w0, wl)?)?;
                cols.push((w0 * s, tile));
            }
            rows.push((h0 * s, blend_axis(&cols, &ww, 4, nw)?));
        }
        chunks.push((out_f((f0, fl)).0, blend_axis(&rows, &wh, 3, nh)?));
    }
    blend_axis(&chunks, &wf, 2, nf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_the_axis_with_the_overlap() {
        assert_eq!(spans(10, 20, 2), vec![(0, 10)]);
        assert_eq!(spans(10, 4, 1), vec![(0, 4), (3, 4), (6, 4)]);
        assert_eq!(spans(11, 4, 1), vec![(0, 4), (3, 4), (6, 4), (7, 4)]);
        for n in 1..40 {
            for tile in 1..12 {
                for ov in 0..tile {
                    let sp = spans(n, tile, ov);
                    assert_eq!(sp[0].0, 0);
                    let (ls, ll) = *sp.last().unwrap();
                    assert_eq!(ls + ll, n, "n={n} tile={tile} ov={ov}");
                    for w in sp.windows(2) {
                        // Consecutive tiles touch or overlap: no gap.
                        assert!(w[1].0 <= w[0].0 + w[0].1);
                        assert!(w[1].0 > w[0].0);
                    }
                }
            }
        }
    }

    #[test]
    fn axis_weights_are_a_partition_of_unity() {
        for (n, tile, ov) in [(10, 4, 1), (100, 32, 8), (33, 16, 4), (57, 17, 9)] {
            let sp = spans(n, tile, ov);
            let w = axis_weights(&sp, n);
            let mut sum = vec![0f32; n];
            for (ws, &(s, l)) in w.iter().zip(&sp) {
                assert_eq!(ws.len(), l);
                for (p, v) in ws.iter().enumerate() {
                    assert!(*v > 0.0 && *v <= 1.0);
                    sum[s + p] += v;
                }
            }
            for (p, v) in sum.iter().enumerate() {
                assert!((v - 1.0).abs() < 1e-6, "n={n} p={p} sum={v}");
            }
        }
    }

    /// Blending constant tiles gives the constant back, whatever the cut.
    #[test]
    fn blend_axis_of_constant_tiles_is_constant() {
        let dev = candle_core::Device::Cpu;
        let sp = spans(23, 8, 3);
        let w = axis_weights(&sp, 23);
        let tiles: Vec<(usize, Tensor)> = sp
            .iter()
            .map(|&(s, l)| (s, Tensor::full(2.5f32, (1, 2, l), &dev).unwrap()))
            .collect();
        let out = blend_axis(&tiles, &w, 2, 23).unwrap();
        assert_eq!(out.dims(), &[1, 2, 23]);
        let v: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| (x - 2.5).abs() < 1e-5), "{v:?}");
    }

    #[test]
    fn plan_keeps_small_clips_whole_and_splits_big_ones() {
        let cfg: VaeConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        // 768x512, 121 frames, bf16 within 64 GiB: one piece.
        let t = DecodeTiling::plan(&cfg, (16, 16, 24), 2, 64 << 30);
        assert!(t.is_whole());
        // 1080p, 121 frames within 8 GiB: split, and the tile fits.
        let t = DecodeTiling::plan(&cfg, (16, 34, 60), 2, 8 << 30);
        assert!(!t.is_whole());
        let tile = (t.tile_frames.min(16), t.tile.min(34), t.tile.min(60));
        assert!(decode_workspace_bytes(&cfg, tile, 2) <= 8 << 30, "{t:?}");
    }

    /// A decoder with no receptive field beyond its own pixel (nearest
    /// upsampling then a pointwise map): every tiling must reproduce the
    /// whole decode, which pins the tile placement and the blend weights.
    #[test]
    fn tiling_is_exact_for_a_pointwise_decoder() {
        let (tc, s) = (8, 4);
        let dev = candle_core::Device::Cpu;
        let fake = |z: &Tensor| -> Result<Tensor> {
            let (_, _, f, h, w) = z.dims5()?;
            let fi: Vec<u32> = (0..(f - 1) * tc + 1)
                .map(|o| o.div_ceil(tc) as u32)
                .collect();
            let hi: Vec<u32> = (0..h * s).map(|o| (o / s) as u32).collect();
            let wi: Vec<u32> = (0..w * s).map(|o| (o / s) as u32).collect();
            let up = z
                .contiguous()?
                .index_select(&Tensor::new(fi.as_slice(), z.device())?, 2)?
                .index_select(&Tensor::new(hi.as_slice(), z.device())?, 3)?
                .index_select(&Tensor::new(wi.as_slice(), z.device())?, 4)?;
            Ok(up.tanh()?)
        };
        let z = crate::rng::NoiseRng::new(9)
            .randn(&[1, 3, 9, 7, 11], &dev)
            .unwrap();
        let whole = fake(&z).unwrap();
        for (tile, overlap, tile_frames, overlap_frames) in [
            (3, 1, 4, 1),
            (4, 2, 3, 2),
            (7, 3, 100, 0),
            (100, 0, 2, 1),
            (5, 4, 5, 4),
        ] {
            let t = DecodeTiling {
                tile,
                overlap,
                tile_frames,
                overlap_frames,
            };
            let got = tiled(&z, t, tc, s, fake).unwrap();
            assert_eq!(got.dims(), whole.dims());
            let d = (&got - &whole).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-5, "{t:?}");
        }
    }

    /// The tiny model's decoder: one tile is the plain decode bit for bit;
    /// a grid keeps the shape and is finite. The tiny clip is smaller than
    /// the decoder's receptive field (several latent frames and pixels
    /// through the stacked 3x3x3 convolutions), so tiles differ from the
    /// whole decode everywhere: the number is printed, not judged.
    #[test]
    fn tiled_decode_of_the_tiny_vae() {
        let cfg = crate::tiny::vae_config();
        let w = crate::tiny::seeded_weights(
            &crate::vae::expected_tensor_shapes(&cfg),
            7,
            "tiling test vae",
        )
        .unwrap();
        let vae = LtxVae::load(&w, &cfg).unwrap();
        let mut rng = crate::rng::NoiseRng::new(3);
        let z = rng
            .randn(
                &[1, cfg.latent_channels, 6, 8, 8],
                &candle_core::Device::Cpu,
            )
            .unwrap();
        let whole = vae.decode(&z, None).unwrap();
        let one = vae.decode_tiled(&z, None, DecodeTiling::WHOLE).unwrap();
        let d = (&whole - &one).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        let t = DecodeTiling {
            tile: 5,
            overlap: 2,
            tile_frames: 3,
            overlap_frames: 1,
        };
        let tiled = vae.decode_tiled(&z, None, t).unwrap();
        assert_eq!(tiled.dims(), whole.dims());
        let num = (&tiled - &whole).unwrap().sqr().unwrap().sum_all().unwrap();
        let den = whole.sqr().unwrap().sum_all().unwrap();
        let rel = (num.to_scalar::<f32>().unwrap() / den.to_scalar::<f32>().unwrap()).sqrt();
        eprintln!("tiny VAE tiled vs whole: relative L2 {rel:.4}");
        assert!(rel.is_finite());
    }
}
