// Fused normalisations of the LTX transformer block (compiled after
// common.cuh). One block of 256 threads per token row; the row stays in
// registers between the reduction and the write, so x is read once instead
// of the three to five passes of the composed ops. Statistics and arithmetic
// in f32, storage in the tensor's dtype (bf16 or f32). Rows up to 4096 wide.

constexpr int THREADS = 256;
constexpr int MAX_PER_THREAD = 16;

// Sum over the block; every thread gets the total.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read from a previous call
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
    __syncthreads();
    float t = threadIdx.x < THREADS / 32 ? scratch[threadIdx.x] : 0.f;
    if (threadIdx.x < 32) t = warp_sum(t);
    if (threadIdx.x == 0) scratch[0] = t;
    __syncthreads();
    return scratch[0];
}

// y = norm(x) * (1 + scale) + shift, the adaLN pattern. kind 0: RMSNorm,
// kind 1: LayerNorm (no affine). x, y: [B*S, d] contiguous; shift, scale:
// [B*t_per, d] contiguous, t_per 1 (one modulation per item) or S (per
// token, image-to-video).
template <typename T>
__device__ void ada_norm(const T* __restrict__ x, const T* __restrict__ shift,
                         const T* __restrict__ scale, T* __restrict__ y, int d, int s_tokens,
                         int t_per, float eps, int kind) {
    __shared__ float scratch[THREADS / 32];
    const int row = blockIdx.x;
    const int b = row / s_tokens;
    const int mrow = b * t_per + (t_per == 1 ? 0 : row % s_tokens);
    const T* xr = x + (size_t)row * d;
    float v[MAX_PER_THREAD];
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < MAX_PER_THREAD; ++i) {
        const int c = threadIdx.x + i * THREADS;
        v[i] = c < d ? to_f32(xr[c]) : 0.f;
        sum += v[i];
    }
    float mean = 0.f;
    if (kind == 1) mean = block_sum(sum, scratch) / (float)d;
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < MAX_PER_THREAD; ++i) {
        const int c = threadIdx.x + i * THREADS;
        const float u = c < d ? v[i] - mean : 0.f;
        ss += u * u;
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / (float)d + eps);
    const T* sh = shift + (size_t)mrow * d;
    const T* sc = scale + (size_t)mrow * d;
    T* yr = y + (size_t)row * d;
#pragma unroll
    for (int i = 0; i < MAX_PER_THREAD; ++i) {
        const int c = threadIdx.x + i * THREADS;
        if (c < d) yr[c] = from_f32<T>((v[i] - mean) * inv * (1.f + to_f32(sc[c])) + to_f32(sh[c]));
    }
}

// q/k normalisation then rotary embedding, fused: RMSNorm across all heads
// with a weight, then each adjacent channel pair (x0, x1) rotates to
// (x0 cos - x1 sin, x1 cos + x0 sin). x, y: [B*S, d]; w: [d]; cos, sin:
// [S, d] f32 (the angles stay f32 as the reference needs).
template <typename T>
__device__ void qk_norm_rope(const T* __restrict__ x, const T* __restrict__ w,
                             const float* __restrict__ cosv, const float* __restrict__ sinv,
                             T* __restrict__ y, int d, int s_tokens, float eps) {
    __shared__ float scratch[THREADS / 32];
    constexpr int PAIRS = MAX_PER_THREAD / 2;
    const int row = blockIdx.x;
    const int tok = row % s_tokens;
    const T* xr = x + (size_t)row * d;
    float a[PAIRS], bv[PAIRS];
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < PAIRS; ++i) {
        const int c = 2 * (threadIdx.x + i * THREADS);
        a[i] = c < d ? to_f32(xr[c]) : 0.f;
        bv[i] = c < d ? to_f32(xr[c + 1]) : 0.f;
        ss += a[i] * a[i] + bv[i] * bv[i];
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / (float)d + eps);
    const float* cr = cosv + (size_t)tok * d;
    const float* sr = sinv + (size_t)tok * d;
    T* yr = y + (size_t)row * d;
#pragma unroll
    for (int i = 0; i < PAIRS; ++i) {
        const int c = 2 * (threadIdx.x + i * THREADS);
        if (c < d) {
            // The reference rounds the normalised value to the tensor's dtype
            // before the rotation; so do we.
            const float x0 = to_f32(from_f32<T>(a[i] * inv * to_f32(w[c])));
            const float x1 = to_f32(from_f32<T>(bv[i] * inv * to_f32(w[c + 1])));
            yr[c] = from_f32<T>(x0 * cr[c] - x1 * sr[c]);
            yr[c + 1] = from_f32<T>(x1 * cr[c + 1] + x0 * sr[c + 1]);
        }
    }
}

#define NORM_KERNELS(T, NAME)                                                                     \
    extern "C" __global__ void __launch_bounds__(THREADS) ada_norm_##NAME(                       \
        const T* x, const T* shift, const T* scale, T* y, int d, int s_tokens, int t_per,          \
        float eps, int kind) {                                                                    \
        ada_norm<T>(x, shift, scale, y, d, s_tokens, t_per, eps, kind);                           \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(THREADS) qk_norm_rope_##NAME(                   \
        const T* x, const T* w, const float* cosv, const float* sinv, T* y, int d, int s_tokens,  \
        float eps) {                                                                              \
        qk_norm_rope<T>(x, w, cosv, sinv, y, d, s_tokens, eps);                                   \
    }

NORM_KERNELS(bf16_t, bf16)
NORM_KERNELS(float, f32)
