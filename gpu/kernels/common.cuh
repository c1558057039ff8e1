// Prelude compiled in front of every kernel source (the runtime and
// scripts/check-kernels.py both prepend it): NVRTC from the PyPI wheel ships
// no CUDA headers, so bf16 is a 16-bit integer with our own conversions.

typedef unsigned short bf16_t;

__device__ __forceinline__ float to_f32(bf16_t v) { return __uint_as_float(((unsigned int)v) << 16); }
__device__ __forceinline__ float to_f32(float v) { return v; }

// Round to nearest even; NaN stays a quiet NaN.
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

template <typename T> __device__ __forceinline__ T from_f32(float f);
template <> __device__ __forceinline__ float from_f32<float>(float f) { return f; }
template <> __device__ __forceinline__ bf16_t from_f32<bf16_t>(float f) { return f32_to_bf16(f); }

#define NEG_INF (__int_as_float(0xff800000))
#define LOG2E 1.4426950408889634f

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
