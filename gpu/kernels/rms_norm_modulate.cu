// Fused RMSNorm (no affine weight) + adaLN modulation, the pattern every
// LTX transformer block runs twice per step:
//   y[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * (1 + scale[b, :]) + shift[b, :]
// One block per row; the row stays in registers between the reduction and
// the write, so x is read once instead of three times (norm, mul, add).
// bf16 storage, f32 arithmetic. Self-contained (no cuda_bf16.h): NVRTC from
// the PyPI wheel ships no headers, and the conversions are a few bit ops.
// Status: compiled to PTX in CI (scripts/check-kernels.py); not yet wired
// into the runtime nor run on a GPU (issue 8).

typedef unsigned short bf16_t;

__device__ __forceinline__ float bf16_to_f32(bf16_t v) {
    return __uint_as_float(((unsigned int)v) << 16);
}

// Round to nearest even; NaN stays a quiet NaN.
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

constexpr int THREADS = 256;
constexpr int MAX_PER_THREAD = 16;  // rows up to 4096 wide (LTX-2B: 2048)

// x, y: [rows, d]; shift, scale: [batch, d] with rows_per_batch rows each.
extern "C" __global__ void rms_norm_modulate_bf16(
    const bf16_t* __restrict__ x, const bf16_t* __restrict__ shift,
    const bf16_t* __restrict__ scale, bf16_t* __restrict__ y, int d,
    int rows_per_batch, float eps) {
    const int row = blockIdx.x;
    const int b = row / rows_per_batch;
    const bf16_t* xr = x + (size_t)row * d;
    float v[MAX_PER_THREAD];
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < MAX_PER_THREAD; ++i) {
        const int c = threadIdx.x + i * THREADS;
        v[i] = c < d ? bf16_to_f32(xr[c]) : 0.f;
        ss += v[i] * v[i];
    }
    // Warp then block reduction of the sum of squares.
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    __shared__ float partial[THREADS / 32];
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float t = threadIdx.x < THREADS / 32 ? partial[threadIdx.x] : 0.f;
        for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
        if (threadIdx.x == 0) partial[0] = t;
    }
    __syncthreads();
    const float inv = rsqrtf(partial[0] / (float)d + eps);
    const bf16_t* sh = shift + (size_t)b * d;
    const bf16_t* sc = scale + (size_t)b * d;
    bf16_t* yr = y + (size_t)row * d;
#pragma unroll
    for (int i = 0; i < MAX_PER_THREAD; ++i) {
        const int c = threadIdx.x + i * THREADS;
        if (c < d) {
            const float n = v[i] * inv;
            yr[c] = f32_to_bf16(n * (1.f + bf16_to_f32(sc[c])) + bf16_to_f32(sh[c]));
        }
    }
}
