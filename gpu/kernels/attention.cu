// Flash-style attention, SIMT version: softmax(q k^T * scale + mask) v
// without materialising the S x S score matrix. Keys and values stream
// through shared memory in tiles of 64; each warp owns one query row and
// keeps a running max and sum (online softmax), so memory is O(S * D).
// Layout: q [B, H, Sq, D], k and v [B, H, Sk, D], out [B, H, Sq, D], bf16;
// mask: optional [B, Sk] of 0/1 bytes (the text mask of cross-attention),
// null for none. Head dims 64 and 128 (instantiated below).
// Status: the correctness baseline for the tensor-core kernel to come;
// compiled to PTX by scripts/check-kernels.py, never run on a GPU yet, not
// wired into the runtime (issue 8).

typedef unsigned short bf16_t;

__device__ __forceinline__ float bf16_to_f32(bf16_t v) {
    return __uint_as_float(((unsigned int)v) << 16);
}

__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

#define NEG_INF (__int_as_float(0xff800000))

constexpr int WARPS = 8;   // query rows per block
constexpr int TILE = 64;   // keys per shared-memory tile

template <int D>
__device__ void attention(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k,
                          const bf16_t* __restrict__ v, const unsigned char* __restrict__ mask,
                          bf16_t* __restrict__ out, int heads, int sq, int sk, float scale) {
    constexpr int PER_LANE = D / 32;
    // bf16 in shared memory: two f32 tiles of D = 128 would pass the 48 KiB
    // of static shared memory a block may have.
    __shared__ bf16_t ks[TILE][D + 2];  // +2: rows land on different banks
    __shared__ bf16_t vs[TILE][D];
    __shared__ float qs[WARPS][D];
    __shared__ float ps[WARPS][TILE];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int bh = blockIdx.y;  // batch * heads + head
    const int b = bh / heads;
    const int row = blockIdx.x * WARPS + warp;
    const bool active = row < sq;
    const size_t qoff = ((size_t)bh * sq + (active ? row : 0)) * D;
    const size_t kvoff = (size_t)bh * sk * D;
    for (int d = lane; d < D; d += 32) qs[warp][d] = active ? bf16_to_f32(q[qoff + d]) * scale : 0.f;
    float acc[PER_LANE];
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) acc[i] = 0.f;
    float m = NEG_INF, l = 0.f;
    for (int t0 = 0; t0 < sk; t0 += TILE) {
        __syncthreads();
        for (int i = threadIdx.x; i < TILE * D; i += WARPS * 32) {
            const int j = i / D, d = i % D;
            const bool in = t0 + j < sk;
            ks[j][d] = in ? k[kvoff + (size_t)(t0 + j) * D + d] : (bf16_t)0;
            vs[j][d] = in ? v[kvoff + (size_t)(t0 + j) * D + d] : (bf16_t)0;
        }
        __syncthreads();
        // Scores of keys lane and lane + 32 of this tile.
        float s[2];
        float tile_max = NEG_INF;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int j = lane + 32 * h;
            const int key = t0 + j;
            float dot = 0.f;
#pragma unroll 8
            for (int d = 0; d < D; ++d) dot += qs[warp][d] * bf16_to_f32(ks[j][d]);
            const bool valid = key < sk && (mask == nullptr || mask[(size_t)b * sk + key] != 0);
            s[h] = valid ? dot : NEG_INF;
            tile_max = fmaxf(tile_max, s[h]);
        }
        for (int o = 16; o > 0; o >>= 1) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, o));
        const float m_new = fmaxf(m, tile_max);
        // A row whose keys so far are all masked keeps m = -inf: skip.
        if (m_new == NEG_INF) continue;
        const float corr = __expf(m - m_new);
        float psum = 0.f;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const float p = __expf(s[h] - m_new);
            ps[warp][lane + 32 * h] = p;
            psum += p;
        }
        for (int o = 16; o > 0; o >>= 1) psum += __shfl_xor_sync(0xffffffffu, psum, o);
        __syncwarp();
        l = l * corr + psum;
        m = m_new;
#pragma unroll
        for (int i = 0; i < PER_LANE; ++i) {
            const int d = lane + 32 * i;
            float a = acc[i] * corr;
            for (int j = 0; j < TILE; ++j) a += ps[warp][j] * bf16_to_f32(vs[j][d]);
            acc[i] = a;
        }
        __syncwarp();
    }
    if (!active) return;
    // Every key masked: zeros, not NaN.
    const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) out[qoff + lane + 32 * i] = f32_to_bf16(acc[i] * inv);
}

extern "C" __global__ void attention_bf16_d64(const bf16_t* q, const bf16_t* k, const bf16_t* v,
                                              const unsigned char* mask, bf16_t* out, int heads,
                                              int sq, int sk, float scale) {
    attention<64>(q, k, v, mask, out, heads, sq, sk, scale);
}

extern "C" __global__ void attention_bf16_d128(const bf16_t* q, const bf16_t* k, const bf16_t* v,
                                               const unsigned char* mask, bf16_t* out, int heads,
                                               int sq, int sk, float scale) {
    attention<128>(q, k, v, mask, out, heads, sq, sk, scale);
}
