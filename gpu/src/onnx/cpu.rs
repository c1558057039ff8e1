//! The interpreter's CPU kernels for its two heaviest operators, on f32
//! NCHW buffers: convolution (im2col with row copies, then one GEMM per
//! image, bias written first and accumulated into) and max pooling with
//! padding that never wins.
//!
//! candle's conv2d builds its im2col element by element and its max pool
//! needs the padding materialised; on open_nsfw these two took ~2x the time
//! of the same network in tract. The approach is the VAE's (`vae/conv_cpu.rs`),
//! in 2D with strides, dilations and asymmetric padding.

use rayon::prelude::*;

/// One 2D convolution or pooling window over a `[b, c, h, w]` input.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub b: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub dilation: usize,
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
}

impl Window {
    pub fn ho(&self) -> usize {
        (self.h + self.pads[0] + self.pads[2] - self.dilation * (self.kh - 1) - 1) / self.stride.0
            + 1
    }

    pub fn wo(&self) -> usize {
        (self.w + self.pads[1] + self.pads[3] - self.dilation * (self.kw - 1) - 1) / self.stride.1
            + 1
    }

    /// Whether the window fits the (padded) input at least once.
    pub fn fits(&self) -> bool {
        self.kh >= 1
            && self.kw >= 1
            && self.h + self.pads[0] + self.pads[2] > self.dilation * (self.kh - 1)
            && self.w + self.pads[1] + self.pads[3] > self.dilation * (self.kw - 1)
    }
}

/// The input column that output column `xo`, kernel column `dx` reads, if
/// it is inside the input.
fn src_x(g: &Window, xo: usize, dx: usize) -> Option<usize> {
    let xi = (xo * g.stride.1 + dx * g.dilation) as isize - g.pads[1] as isize;
    (xi >= 0 && (xi as usize) < g.w).then_some(xi as usize)
}

fn src_y(g: &Window, yo: usize, dy: usize) -> Option<usize> {
    let yi = (yo * g.stride.0 + dy * g.dilation) as isize - g.pads[0] as isize;
    (yi >= 0 && (yi as usize) < g.h).then_some(yi as usize)
}

/// Fills `cols` (`[c*kh*kw, ho*wo]`, row `(ci*kh + dy)*kw + dx`, the
/// weight's `[o, c, kh, kw]` order) for one image `[c, h, w]`.
fn im2col(img: &[f32], g: &Window, cols: &mut [f32]) {
    let (ho, wo) = (g.ho(), g.wo());
    cols.chunks_mut(ho * wo).enumerate().for_each(|(r, row)| {
        let dx = r % g.kw;
        let dy = (r / g.kw) % g.kh;
        let ci = r / (g.kw * g.kh);
        let plane = &img[ci * g.h * g.w..][..g.h * g.w];
        for (yo, out) in row.chunks_mut(wo).enumerate() {
            let Some(yi) = src_y(g, yo, dy) else {
                out.fill(0.0);
                continue;
            };
            let src = &plane[yi * g.w..][..g.w];
            if g.stride.1 == 1 {
                // Output column x reads input column x + shift: one
                // contiguous run, zeros where it falls off either edge.
                let shift = (dx * g.dilation) as isize - g.pads[1] as isize;
                crate::nn::copy_shifted(src, out, shift);
            } else {
                for (xo, v) in out.iter_mut().enumerate() {
                    *v = src_x(g, xo, dx).map_or(0.0, |xi| src[xi]);
                }
            }
        }
    });
}

/// `x`: `[b, c, h, w]`; `weight`: `[o, c, kh, kw]`; returns `[b, o, ho, wo]`,
/// through ReLU when `relu` (applied while the image's output is in cache).
///
/// Images are spread over the threads, each a single-threaded im2col and
/// GEMM into its own output, so no GEMM synchronises inside and no thread
/// waits on another mid-image.
pub(super) fn conv2d(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    o: usize,
    g: &Window,
    relu: bool,
) -> Vec<f32> {
    let n = g.ho() * g.wo();
    let kk = g.c * g.kh * g.kw;
    let in_img = g.c * g.h * g.w;
    let out_img = o * n;
    let mut out = vec![0f32; g.b * out_img];
    let direct = g.kh == 1 && g.kw == 1 && g.stride == (1, 1) && g.pads == [0; 4];
    out.par_chunks_mut(out_img)
        .zip(x.par_chunks(in_img))
        .for_each_init(
            || {
                if direct {
                    Vec::new()
                } else {
                    vec![0f32; kk * n]
                }
            },
            |cols, (dst, img)| {
                if let Some(bias) = bias {
                    for (row, &b) in dst.chunks_mut(n).zip(bias) {
                        row.fill(b);
                    }
                }
                let rhs: &[f32] = if direct {
                    img
                } else {
                    im2col(img, g, cols);
                    cols
                };
                crate::nn::gemm_f32(
                    (o, n, kk),
                    dst,
                    bias.is_some(),
                    weight,
                    rhs,
                    gemm::Parallelism::None,
                );
                if relu {
                    dst.iter_mut().for_each(|v| *v = v.max(0.0));
                }
            },
        );
    out
}

/// `x`: `[b, c, h, w]`; returns `[b, c, ho, wo]`, the maximum over each
/// window's cells that fall inside the input (padding never wins).
pub(super) fn max_pool(x: &[f32], g: &Window) -> Vec<f32> {
    let (ho, wo) = (g.ho(), g.wo());
    let mut out = vec![0f32; g.b * g.c * ho * wo];
    out.par_chunks_mut(ho * wo)
        .zip(x.par_chunks(g.h * g.w))
        .for_each(|(dst, plane)| {
            for (yo, row) in dst.chunks_mut(wo).enumerate() {
                for (xo, v) in row.iter_mut().enumerate() {
                    let mut m = f32::NEG_INFINITY;
                    for dy in 0..g.kh {
                        let Some(yi) = src_y(g, yo, dy) else { continue };
                        for dx in 0..g.kw {
                            if let Some(xi) = src_x(g, xo, dx) {
                                m = m.max(plane[yi * g.w + xi]);
                            }
                        }
                    }
                    *v = m;
                }
            }
        });
    out
}
