//! 3D rotary position embedding over the whole model width: fractional
//! (frame, row, column) positions scaled by the pipeline's interpolation
//! scale, frequency-major/axis-minor channel pairs, leftover channels first.

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

/// RoPE cos/sin `[S, D]` for a model of width `d` over the grid, in f32.
pub fn rope_tables(d: usize, grid: &LatentGrid, device: &Device) -> Result<(Tensor, Tensor)> {
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
    let base = [20.0, 2048.0, 2048.0];
    let s = grid.tokens();
    let mut cos = vec![0f32; s * d];
    let mut sin = vec![0f32; s * d];
    let mut tok = 0;
    for f in 0..grid.frames {
        for h in 0..grid.height {
            for w in 0..grid.width {
                let pos = [f as f64, h as f64, w as f64];
                let row = &mut cos[tok * d..(tok + 1) * d];
                let rows = &mut sin[tok * d..(tok + 1) * d];
                for c in 0..pad {
                    row[c] = 1.0;
                    rows[c] = 0.0;
                }
                for (k, fk) in freqs.iter().enumerate() {
                    for a in 0..3 {
                        // f32 like the reference's grid arithmetic.
                        let p = (pos[a] as f32 * grid.rope_scale[a] as f32) / base[a] as f32;
                        let ang = *fk * (p * 2.0 - 1.0);
                        let idx = pad + 2 * (k * 3 + a);
                        let (sv, cv) = ang.sin_cos();
                        row[idx] = cv;
                        row[idx + 1] = cv;
                        rows[idx] = sv;
                        rows[idx + 1] = sv;
                    }
                }
                tok += 1;
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
