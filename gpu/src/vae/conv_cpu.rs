//! CPU fast path for the VAE's 3D convolutions (f32): our own im2col with
//! row copies, then one GEMM per output frame straight into the output.
//!
//! candle's CPU conv2d builds its im2col element by element with strided
//! index arithmetic; at VAE sizes that copy costs more than the GEMM itself
//! (measured: ~3x slower decode than PyTorch). Here each im2col row is a
//! handful of contiguous `copy_from_slice` calls, and the GEMM writes each
//! frame's `[O, H*W]` block in place, so no output permute or copy is needed.

use rayon::prelude::*;

/// Geometry of one convolution call; see `Conv3d`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvGeom {
    pub b: usize,
    pub f: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub k: usize,
    pub stride_t: usize,
    pub stride_s: usize,
    /// Replicated frames in front (edge padding by clamping the index).
    pub front: usize,
    pub fo: usize,
}

impl ConvGeom {
    pub fn pad(&self) -> usize {
        self.k / 2
    }
    pub fn ho(&self) -> usize {
        (self.h + 2 * self.pad() - self.k) / self.stride_s + 1
    }
    pub fn wo(&self) -> usize {
        (self.w + 2 * self.pad() - self.k) / self.stride_s + 1
    }
}

/// Fills `cols` (`[k*C*k*k, Ho*Wo]`, row index `((j*C + c)*k + dy)*k + dx`,
/// the weight's `[O, k*I, k, k]` order) for output frame `t` of batch `bi`.
fn im2col(x: &[f32], g: &ConvGeom, bi: usize, t: usize, cols: &mut [f32]) {
    let (k, c, h, w) = (g.k, g.c, g.h, g.w);
    let (ho, wo, pad, s) = (g.ho(), g.wo(), g.pad() as isize, g.stride_s);
    let frame = c * h * w;
    let n = ho * wo;
    cols.chunks_mut(n).enumerate().for_each(|(r, row)| {
        let dx = r % k;
        let dy = (r / k) % k;
        let ci = (r / (k * k)) % c;
        let j = r / (k * k * c);
        let src_f = (t * g.stride_t + j) as isize - g.front as isize;
        let src_f = src_f.clamp(0, g.f as isize - 1) as usize;
        let plane = &x[(bi * g.f + src_f) * frame + ci * h * w..][..h * w];
        for y in 0..ho {
            let out = &mut row[y * wo..(y + 1) * wo];
            let yi = (y * s) as isize + dy as isize - pad;
            if yi < 0 || yi >= h as isize {
                out.fill(0.0);
                continue;
            }
            let src = &plane[yi as usize * w..(yi as usize + 1) * w];
            if s == 1 {
                // Output x reads input x + dx - pad: one contiguous run with
                // zeros where it falls off either edge.
                crate::nn::copy_shifted(src, out, dx as isize - pad);
            } else {
                for (xo, v) in out.iter_mut().enumerate() {
                    let xi = (xo * s) as isize + dx as isize - pad;
                    *v = if xi < 0 || xi >= w as isize {
                        0.0
                    } else {
                        src[xi as usize]
                    };
                }
            }
        }
    });
}

/// `x`: `[B, F, C, H, W]` contiguous; `weight`: `[O, k*C*k*k]` contiguous;
/// returns `[B, Fo, O, Ho, Wo]`.
///
/// Output frames are independent, so threads split the frames and each runs
/// a single-threaded GEMM on its own im2col buffer: no synchronisation inside
/// a GEMM, and each thread's buffers stay in its own cache.
pub(crate) fn conv3d(x: &[f32], weight: &[f32], bias: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (ho, wo) = (g.ho(), g.wo());
    let n = ho * wo;
    let kk = g.k * g.c * g.k * g.k;
    let out_frame = g.o * n;
    let mut out = vec![0f32; g.b * g.fo * out_frame];
    let one_by_one = g.k == 1 && g.stride_s == 1;
    let frames = g.b * g.fo;
    let threads = rayon::current_num_threads().max(1);
    // Few frames (the coarse levels, single images): parallelise inside the
    // GEMM instead.
    let (per_frame_par, chunk) = if frames >= 2 * threads {
        (gemm::Parallelism::None, frames.div_ceil(threads))
    } else {
        (gemm::Parallelism::Rayon(threads), frames)
    };
    out.par_chunks_mut(chunk * out_frame)
        .enumerate()
        .for_each(|(ci, dst_chunk)| {
            let mut cols = if one_by_one {
                Vec::new()
            } else {
                vec![0f32; kk * n]
            };
            for (fi, dst) in dst_chunk.chunks_mut(out_frame).enumerate() {
                let idx = ci * chunk + fi;
                let (bi, t) = (idx / g.fo, idx % g.fo);
                for (oi, row) in dst.chunks_mut(n).enumerate() {
                    row.fill(bias[oi]);
                }
                let rhs: &[f32] = if one_by_one {
                    let src_f = (t * g.stride_t).saturating_sub(g.front).min(g.f - 1);
                    &x[(bi * g.f + src_f) * g.c * n..][..g.c * n]
                } else {
                    im2col(x, g, bi, t, &mut cols);
                    &cols
                };
                crate::nn::gemm_f32((g.o, n, kk), dst, true, weight, rhs, per_frame_par);
            }
        });
    out
}
