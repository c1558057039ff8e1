//! 3D rotary position embedding over the whole model width: fractional
//! (frame, row, column) positions scaled by the pipeline's interpolation
//! scale, frequency-major/axis-minor channel pairs, leftover channels first.
//!
//! Positions come either from a regular latent grid (text/image-to-video) or
//! as explicit per-token coordinates (conditioned generation, where keyframe
//! tokens sit at their own frame and video frames at their causal offsets).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::error::Result;

/// Where the tokens sit in the latent video, for RoPE.
#[derive(Debug, Clone, Copy)]
pub struct LatentGrid {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    /// The pipeline's `(temporal_compression/fps, spatial, spatial)`.
    pub rope_scale: [f64; 3],
}

impl LatentGrid {
    pub fn tokens(&self) -> usize {
        self.frames * self.height * self.width
    }
}

/// The RoPE divisors of (time, height, width): a coordinate over its divisor
/// is the fractional position the frequencies multiply.
const BASE: [f32; 3] = [20.0, 2048.0, 2048.0];

/// Explicit per-token RoPE coordinates in the reference's `video_coords`
/// units: (seconds, pixels, pixels), one triple per token in sequence order.
/// Shared (`Arc`) because a job keeps them for every step.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenCoords {
    coords: Arc<Vec<[f32; 3]>>,
    /// Hash of the coordinates' bits: the transformer's table cache key.
    key: u64,
}

impl TokenCoords {
    pub fn new(coords: Vec<[f32; 3]>) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for c in &coords {
            c.map(f32::to_bits).hash(&mut h);
        }
        TokenCoords {
            key: h.finish(),
            coords: Arc::new(coords),
        }
    }

    pub fn len(&self) -> usize {
        self.coords.len()
    }

    pub fn is_empty(&self) -> bool {
        self.coords.is_empty()
    }

    pub fn as_slice(&self) -> &[[f32; 3]] {
        &self.coords
    }

    pub fn key(&self) -> u64 {
        self.key
    }
}

/// Where a forward pass's tokens sit.
#[derive(Debug, Clone, Copy)]
pub enum Positions<'a> {
    Grid(&'a LatentGrid),
    Coords(&'a TokenCoords),
}

impl Positions<'_> {
    pub fn tokens(&self) -> usize {
        match self {
            Positions::Grid(g) => g.tokens(),
            Positions::Coords(c) => c.len(),
        }
    }
}

/// RoPE cos/sin `[S, D]` for a model of width `d` over the grid, in f32.
pub fn rope_tables(d: usize, grid: &LatentGrid, device: &Device) -> Result<(Tensor, Tensor)> {
    let mut fr = Vec::with_capacity(grid.tokens());
    for f in 0..grid.frames {
        for h in 0..grid.height {
            for w in 0..grid.width {
                let pos = [f as f32, h as f32, w as f32];
                // f32 like the reference's grid arithmetic: (pos * scale) / base.
                fr.push(std::array::from_fn(|a| {
                    (pos[a] * grid.rope_scale[a] as f32) / BASE[a]
                }));
            }
        }
    }
    tables(d, &fr, device)
}

/// RoPE cos/sin `[S, D]` for explicit coordinates (`coord / base`, as the
/// reference divides `video_coords`).
pub fn rope_tables_for(
    d: usize,
    coords: &TokenCoords,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let fr: Vec<[f32; 3]> = coords
        .as_slice()
        .iter()
        .map(|c| std::array::from_fn(|a| c[a] / BASE[a]))
        .collect();
    tables(d, &fr, device)
}

/// The tables from fractional positions `p` (angle = freq * (2p - 1)).
fn tables(d: usize, frac: &[[f32; 3]], device: &Device) -> Result<(Tensor, Tensor)> {
    let n = d / 6;
    let pad = d % 6;
    // All f32 in the reference's operation order: the top frequency is
    // ~15708, where one f32 ulp of the frequency moves angles by 1e-3.
    let theta = 10000f32;
    let freqs: Vec<f32> = (0..n)
        .map(|k| {
            let e = linspace01_f32(k, n);
            theta.powf(e) * std::f32::consts::PI / 2.0
        })
        .collect();
    let s = frac.len();
    let mut cos = vec![0f32; s * d];
    let mut sin = vec![0f32; s * d];
    for (tok, p) in frac.iter().enumerate() {
        let row = &mut cos[tok * d..(tok + 1) * d];
        let rows = &mut sin[tok * d..(tok + 1) * d];
        for c in 0..pad {
            row[c] = 1.0;
            rows[c] = 0.0;
        }
        for (k, fk) in freqs.iter().enumerate() {
            for a in 0..3 {
                let ang = *fk * (p[a] * 2.0 - 1.0);
                let idx = pad + 2 * (k * 3 + a);
                let (sv, cv) = ang.sin_cos();
                row[idx] = cv;
                row[idx + 1] = cv;
                rows[idx] = sv;
                rows[idx + 1] = sv;
            }
        }
    }
    Ok((
        Tensor::from_vec(cos, (s, d), device)?,
        Tensor::from_vec(sin, (s, d), device)?,
    ))
}

/// Element `k` of torch's f32 `linspace(0, 1, n)`: the first half counts up
/// from 0, the second half down from 1, with a rounded f32 step.
fn linspace01_f32(k: usize, n: usize) -> f32 {
    if n < 2 {
        return 0.0;
    }
    let step = 1.0f32 / (n - 1) as f32;
    if k < n / 2 {
        step * k as f32
    } else {
        1.0 - step * (n - 1 - k) as f32
    }
}
