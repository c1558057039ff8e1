// Flash-style attention (compiled after common.cuh):
//   out = softmax(q k^T * scale + bias) v
// without the S x S score matrix in memory: keys and values stream through
// shared memory in tiles of 64 and each query row keeps a running max and
// sum (online softmax), so memory stays O(S * D).
//
// Layout, shared by both kernels: q, k, v are strided [B, S, H, D] views
// (element strides per batch, sequence and head; D contiguous), so the
// runtime passes the projections as they come out of the GEMMs, [B, S, H*D],
// and the cached text keys, [B, H, L, D], without copies. out is
// [B, Sq, H, D] contiguous, which is already the merged-heads layout.
// bias: optional f32 [B, Sk] added to every score (the text mask: 0 keep,
// -10000 pad, exactly as the reference adds it), null for none.
// Grid: (row blocks, H, B).

struct AttnArgs {
    int heads, sq, sk;
    long long q_sb, q_ss, q_sh, k_sb, k_ss, k_sh, v_sb, v_ss, v_sh;
    float scale;
};

// ---------------------------------------------------------------------------
// SIMT kernel: any dtype, head dims 32/64/128. One warp per query row. The
// f32 path (golden parity) and the reference the tensor-core kernel is
// checked against.

constexpr int SIMT_WARPS = 8;

template <typename T, int D>
__device__ void attention_simt(const T* __restrict__ q, const T* __restrict__ k,
                               const T* __restrict__ v, const float* __restrict__ bias,
                               T* __restrict__ out, const AttnArgs a) {
    constexpr int PER_LANE = D / 32;
    // Keys per tile: 64, or 32 where 64 would pass the 48 KiB of static
    // shared memory (f32 with D = 128).
    constexpr int SIMT_TILE = sizeof(T) * D * 64 * 2 > 40 * 1024 ? 32 : 64;
    constexpr int KPL = SIMT_TILE / 32;  // keys per lane
    __shared__ T ks[SIMT_TILE][D + 1];  // +1: rows land on different banks
    __shared__ T vs[SIMT_TILE][D];
    __shared__ float qs[SIMT_WARPS][D];
    __shared__ float ps[SIMT_WARPS][SIMT_TILE];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int h = blockIdx.y, b = blockIdx.z;
    const int row = blockIdx.x * SIMT_WARPS + warp;
    const bool active = row < a.sq;
    const T* qr = q + b * a.q_sb + h * a.q_sh + (long long)(active ? row : 0) * a.q_ss;
    const T* kb = k + b * a.k_sb + h * a.k_sh;
    const T* vb = v + b * a.v_sb + h * a.v_sh;
    const float* br = bias ? bias + (long long)b * a.sk : nullptr;
    for (int d = lane; d < D; d += 32) qs[warp][d] = active ? to_f32(qr[d]) * a.scale : 0.f;
    float acc[PER_LANE];
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) acc[i] = 0.f;
    float m = NEG_INF, l = 0.f;
    for (int t0 = 0; t0 < a.sk; t0 += SIMT_TILE) {
        __syncthreads();
        for (int i = threadIdx.x; i < SIMT_TILE * D; i += SIMT_WARPS * 32) {
            const int j = i / D, d = i % D;
            const bool in = t0 + j < a.sk;
            ks[j][d] = in ? kb[(long long)(t0 + j) * a.k_ss + d] : from_f32<T>(0.f);
            vs[j][d] = in ? vb[(long long)(t0 + j) * a.v_ss + d] : from_f32<T>(0.f);
        }
        __syncthreads();
        float s[KPL];
        float tile_max = NEG_INF;
#pragma unroll
        for (int hh = 0; hh < KPL; ++hh) {
            const int j = lane + 32 * hh;
            const int key = t0 + j;
            float dot = 0.f;
#pragma unroll 8
            for (int d = 0; d < D; ++d) dot += qs[warp][d] * to_f32(ks[j][d]);
            s[hh] = key < a.sk ? dot + (br ? br[key] : 0.f) : NEG_INF;
            tile_max = fmaxf(tile_max, s[hh]);
        }
        for (int o = 16; o > 0; o >>= 1) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, o));
        const float m_new = fmaxf(m, tile_max);
        const float corr = __expf(m - m_new);
        float psum = 0.f;
#pragma unroll
        for (int hh = 0; hh < KPL; ++hh) {
            const float p = __expf(s[hh] - m_new);
            ps[warp][lane + 32 * hh] = p;
            psum += p;
        }
        psum = warp_sum(psum);
        __syncwarp();
        l = l * corr + psum;
        m = m_new;
#pragma unroll
        for (int i = 0; i < PER_LANE; ++i) {
            const int d = lane + 32 * i;
            float acc_d = acc[i] * corr;
            for (int j = 0; j < SIMT_TILE; ++j) acc_d += ps[warp][j] * to_f32(vs[j][d]);
            acc[i] = acc_d;
        }
        __syncwarp();
    }
    if (!active) return;
    const float inv = l > 0.f ? 1.f / l : 0.f;
    T* o = out + (((long long)b * a.sq + row) * a.heads + h) * D;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) o[lane + 32 * i] = from_f32<T>(acc[i] * inv);
}

#define SIMT_KERNEL(T, NAME, D)                                                               \
    extern "C" __global__ void __launch_bounds__(SIMT_WARPS * 32) attn_simt_##NAME##_d##D(  \
        const T* q, const T* k, const T* v, const float* bias, T* out, const AttnArgs a) {   \
        attention_simt<T, D>(q, k, v, bias, out, a);                                         \
    }
SIMT_KERNEL(float, f32, 32)
SIMT_KERNEL(float, f32, 64)
SIMT_KERNEL(float, f32, 128)
SIMT_KERNEL(bf16_t, bf16, 32)
SIMT_KERNEL(bf16_t, bf16, 64)
SIMT_KERNEL(bf16_t, bf16, 128)

// ---------------------------------------------------------------------------
// Tensor-core kernel, bf16 in, f32 accumulate: mma.sync m16n8k16 (sm_80+,
// runs on Hopper). Each warp owns 16 query rows; a block of WARPS warps
// shares each 64-key tile of K and V in shared memory. Scores stay in
// registers: the S accumulator fragments are exactly the A operand layout of
// the P*V product, so P never touches shared memory.
// Requires: D in {64, 128}; q/k/v sequence and head strides multiples of 8
// elements and 16-byte aligned bases (the runtime checks, else falls back).

constexpr int MMA_TILE = 64;

__device__ __forceinline__ unsigned int ld_pair(const bf16_t* p) {
    return *reinterpret_cast<const unsigned int*>(p);
}

// The instructions below, the only inline PTX, are warp-collective or
// asynchronous; gpu/kernels/host/cuda_host.hpp gives each a CPU definition
// with the PTX ISA's semantics, so the CI harness runs this very source.
#ifndef VIDFLOW_HOST
__device__ __forceinline__ unsigned int pack_bf16(float lo, float hi) {
    unsigned int r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ void mma_bf16(float* c, const unsigned int* a, unsigned int b0,
                                         unsigned int b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ldmatrix.x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i; each
// lane gets, per matrix, the pair (row lane/4, cols 2*(lane%4)+{0,1}), or
// with TRANS the pair (rows 2*(lane%4)+{0,1}, col lane/4).
template <bool TRANS>
__device__ __forceinline__ void ldsm_x4(const bf16_t* p, unsigned int* r) {
    unsigned long long g;
    asm("cvta.to.shared.u64 %0, %1;" : "=l"(g) : "l"(p));
    const unsigned int a = (unsigned int)g;
    if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}

__device__ __forceinline__ unsigned int smem_addr(const void* p) {
    unsigned long long g;
    asm("cvta.to.shared.u64 %0, %1;" : "=l"(g) : "l"(p));
    return (unsigned int)g;
}

// 16 bytes global -> shared without passing through registers; `bytes` 0
// writes zeros (the tail of the last key tile).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src), "r"(bytes));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }

// Waits for every committed group but the newest one.
__device__ __forceinline__ void cp_async_wait_all_but_newest() { asm volatile("cp.async.wait_group 1;"); }
#endif

// LDSM: K and V fragments through ldmatrix (one instruction feeds two
// mma) instead of 32- and 16-bit shared loads (variant 2; variant 1 is the
// plain-load baseline it is measured against). PIPE (variant 3, head dim 64:
// two stages fit the 48 KiB of static shared memory): the next K/V tile is
// copied with cp.async while this one is computed on.
template <int D, int WARPS, bool LDSM, bool PIPE>
__device__ void attention_mma(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k,
                              const bf16_t* __restrict__ v, const float* __restrict__ bias,
                              bf16_t* __restrict__ out, const AttnArgs a) {
    constexpr int LD = D + 8;  // row pitch in shared memory: +16 bytes, no bank conflicts
    constexpr int KSTEPS = D / 16, DTILES = D / 8, NTILES = MMA_TILE / 8;
    constexpr int VEC_PER_ROW = D / 8;  // 16-byte vectors
    constexpr int STAGES = PIPE ? 2 : 1;
    __shared__ __align__(16) bf16_t ks_all[STAGES * MMA_TILE * LD];
    __shared__ __align__(16) bf16_t vs_all[STAGES * MMA_TILE * LD];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, tig = lane & 3;
    const int h = blockIdx.y, b = blockIdx.z;
    const int row0 = (blockIdx.x * WARPS + warp) * 16;
    const bf16_t* qb = q + b * a.q_sb + h * a.q_sh;
    const bf16_t* kb = k + b * a.k_sb + h * a.k_sh;
    const bf16_t* vb = v + b * a.v_sb + h * a.v_sh;
    const float* br = bias ? bias + (long long)b * a.sk : nullptr;

    // Q fragments for this warp's 16 rows, held for the whole key loop.
    unsigned int qa[KSTEPS][4];
    const int r_lo = row0 + g, r_hi = row0 + g + 8;
    const bool in_lo = r_lo < a.sq, in_hi = r_hi < a.sq;
#pragma unroll
    for (int kk = 0; kk < KSTEPS; ++kk) {
        const int c = kk * 16 + tig * 2;
        qa[kk][0] = in_lo ? ld_pair(qb + r_lo * a.q_ss + c) : 0u;
        qa[kk][1] = in_hi ? ld_pair(qb + r_hi * a.q_ss + c) : 0u;
        qa[kk][2] = in_lo ? ld_pair(qb + r_lo * a.q_ss + c + 8) : 0u;
        qa[kk][3] = in_hi ? ld_pair(qb + r_hi * a.q_ss + c + 8) : 0u;
    }
    float o[DTILES][4];
#pragma unroll
    for (int j = 0; j < DTILES; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    // Running max (log2 units) and this thread's partial row sums, rows g and g+8.
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};
    const float sl2 = a.scale * LOG2E;

    // Copies key tile t0 into stage `st` asynchronously (PIPE).
    auto issue = [&](int st, int t0) {
        for (int i = threadIdx.x; i < MMA_TILE * VEC_PER_ROW; i += WARPS * 32) {
            const int j = i / VEC_PER_ROW, c = (i % VEC_PER_ROW) * 8;
            const bool in = t0 + j < a.sk;
            const long long kr = in ? (long long)(t0 + j) * a.k_ss + c : 0;
            const long long vr = in ? (long long)(t0 + j) * a.v_ss + c : 0;
            cp_async16(ks_all + st * MMA_TILE * LD + j * LD + c, kb + kr, in ? 16 : 0);
            cp_async16(vs_all + st * MMA_TILE * LD + j * LD + c, vb + vr, in ? 16 : 0);
        }
        cp_async_commit();
    };
    if (PIPE) issue(0, 0);
    int it = 0;
    for (int t0 = 0; t0 < a.sk; t0 += MMA_TILE, ++it) {
        const int cur = PIPE ? (it & 1) : 0;
        const bf16_t* ks = ks_all + cur * MMA_TILE * LD;
        const bf16_t* vs = vs_all + cur * MMA_TILE * LD;
        // Every warp is done with the tile computed on last iteration: its
        // buffer can be refilled (PIPE) or overwritten.
        __syncthreads();
        if (PIPE) {
            if (t0 + MMA_TILE < a.sk) {
                issue(cur ^ 1, t0 + MMA_TILE);
            } else {
                cp_async_commit();  // keeps one group per iteration
            }
            // All groups but the newest (the prefetch) have landed.
            cp_async_wait_all_but_newest();
        } else {
            for (int i = threadIdx.x; i < MMA_TILE * VEC_PER_ROW; i += WARPS * 32) {
                const int j = i / VEC_PER_ROW, c = (i % VEC_PER_ROW) * 8;
                uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
                if (t0 + j < a.sk) {
                    kv = *reinterpret_cast<const uint4*>(kb + (long long)(t0 + j) * a.k_ss + c);
                    vv = *reinterpret_cast<const uint4*>(vb + (long long)(t0 + j) * a.v_ss + c);
                }
                *reinterpret_cast<uint4*>(ks_all + j * LD + c) = kv;
                *reinterpret_cast<uint4*>(vs_all + j * LD + c) = vv;
            }
        }
        __syncthreads();

        // S = Q K^T for 16 rows x 64 keys.
        float s[NTILES][4];
#pragma unroll
        for (int j = 0; j < NTILES; ++j) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
            if (LDSM) {
                // Matrices: keys j*8..+8 by dims kk*16 + {0, 8, 16, 24}.
                const bf16_t* kr = ks + (j * 8 + (lane & 7)) * LD + (lane >> 3) * 8;
#pragma unroll
                for (int kk = 0; kk < KSTEPS; kk += 2) {
                    unsigned int b[4];
                    ldsm_x4<false>(kr + kk * 16, b);
                    mma_bf16(s[j], qa[kk], b[0], b[1]);
                    mma_bf16(s[j], qa[kk + 1], b[2], b[3]);
                }
            } else {
                const bf16_t* kr = ks + (j * 8 + g) * LD + tig * 2;
#pragma unroll
                for (int kk = 0; kk < KSTEPS; ++kk)
                    mma_bf16(s[j], qa[kk], ld_pair(kr + kk * 16), ld_pair(kr + kk * 16 + 8));
            }
        }
        // Scale, bias, mask the tail; tile max per row.
        float tmax[2] = {NEG_INF, NEG_INF};
#pragma unroll
        for (int j = 0; j < NTILES; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = t0 + j * 8 + tig * 2 + (e & 1);
                float x = NEG_INF;
                if (key < a.sk) x = s[j][e] * sl2 + (br ? br[key] * LOG2E : 0.f);
                s[j][e] = x;
                tmax[e >> 1] = fmaxf(tmax[e >> 1], x);
            }
        }
        float alpha[2], mref[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            tmax[r] = fmaxf(tmax[r], __shfl_xor_sync(0xffffffffu, tmax[r], 1));
            tmax[r] = fmaxf(tmax[r], __shfl_xor_sync(0xffffffffu, tmax[r], 2));
            const float m_new = fmaxf(m[r], tmax[r]);
            // Rows with only masked keys so far: reference point 0, no NaN.
            mref[r] = m_new == NEG_INF ? 0.f : m_new;
            alpha[r] = exp2f(m[r] - mref[r]);
            m[r] = m_new;
            l[r] *= alpha[r];
        }
#pragma unroll
        for (int j = 0; j < DTILES; ++j) {
            o[j][0] *= alpha[0];
            o[j][1] *= alpha[0];
            o[j][2] *= alpha[1];
            o[j][3] *= alpha[1];
        }
        // P (bf16) times V, 16 keys per k-step.
#pragma unroll
        for (int kk = 0; kk < NTILES / 2; ++kk) {
            float p[2][4];
#pragma unroll
            for (int t = 0; t < 2; ++t)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    p[t][e] = exp2f(s[2 * kk + t][e] - mref[e >> 1]);
                    l[e >> 1] += p[t][e];
                }
            unsigned int pa[4];
            pa[0] = pack_bf16(p[0][0], p[0][1]);
            pa[1] = pack_bf16(p[0][2], p[0][3]);
            pa[2] = pack_bf16(p[1][0], p[1][1]);
            pa[3] = pack_bf16(p[1][2], p[1][3]);
            if (LDSM) {
                // Matrices: keys kk*16 + {0, 8} by dims j*8 and (j+1)*8, transposed.
                const int mi = lane >> 3;
                const bf16_t* vr = vs + (kk * 16 + (mi & 1) * 8 + (lane & 7)) * LD + (mi >> 1) * 8;
#pragma unroll
                for (int j = 0; j < DTILES; j += 2) {
                    unsigned int b[4];
                    ldsm_x4<true>(vr + j * 8, b);
                    mma_bf16(o[j], pa, b[0], b[1]);
                    mma_bf16(o[j + 1], pa, b[2], b[3]);
                }
            } else {
                const bf16_t* v0 = vs + (kk * 16 + tig * 2) * LD + g;
#pragma unroll
                for (int j = 0; j < DTILES; ++j) {
                    const bf16_t* vp = v0 + j * 8;
                    const unsigned int b0 = (unsigned int)vp[0] | ((unsigned int)vp[LD] << 16);
                    const unsigned int b1 = (unsigned int)vp[8 * LD] | ((unsigned int)vp[9 * LD] << 16);
                    mma_bf16(o[j], pa, b0, b1);
                }
            }
        }
    }
    // Full row sums across the quad, normalise, store bf16 pairs.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        l[r] = l[r] > 0.f ? 1.f / l[r] : 0.f;
    }
    bf16_t* ob = out + ((long long)b * a.sq * a.heads + h) * D;
    const long long ostride = (long long)a.heads * D;
#pragma unroll
    for (int j = 0; j < DTILES; ++j) {
        const int c = j * 8 + tig * 2;
        if (in_lo)
            *reinterpret_cast<unsigned int*>(ob + r_lo * ostride + c) = pack_bf16(o[j][0] * l[0], o[j][1] * l[0]);
        if (in_hi)
            *reinterpret_cast<unsigned int*>(ob + r_hi * ostride + c) = pack_bf16(o[j][2] * l[1], o[j][3] * l[1]);
    }
}

#define MMA_KERNEL(D, W, V, LDSM, PIPE)                                                        \
    extern "C" __global__ void __launch_bounds__(W * 32) attn_mma##V##_bf16_d##D##_w##W(      \
        const bf16_t* q, const bf16_t* k, const bf16_t* v, const float* bias, bf16_t* out,    \
        const AttnArgs a) {                                                                   \
        attention_mma<D, W, LDSM, PIPE>(q, k, v, bias, out, a);                               \
    }
MMA_KERNEL(64, 4, 1, false, false)
MMA_KERNEL(64, 8, 1, false, false)
MMA_KERNEL(128, 4, 1, false, false)
MMA_KERNEL(128, 8, 1, false, false)
MMA_KERNEL(64, 4, 2, true, false)
MMA_KERNEL(64, 8, 2, true, false)
MMA_KERNEL(128, 4, 2, true, false)
MMA_KERNEL(128, 8, 2, true, false)
MMA_KERNEL(64, 4, 3, true, true)
MMA_KERNEL(64, 8, 3, true, true)
