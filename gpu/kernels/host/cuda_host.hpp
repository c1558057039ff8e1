// Runs our CUDA kernel sources on the CPU, for CI (no GPU there).
//
// Included before common.cuh and the .cu files, it maps the CUDA dialect they
// use onto plain C++: one ucontext fiber per GPU thread, one block at a time,
// `__shared__` as function statics (a block's threads share them; blocks run
// one after another), __syncthreads/__syncwarp as barriers between fibers,
// and the warp-collective and asynchronous PTX of attention.cu (mma.sync,
// ldmatrix, cp.async) as functions with the semantics the PTX ISA documents.
// So the kernels' own index arithmetic, barriers and waits run as written;
// only the PTX definitions here stand in for hardware.
//
// Why our own: we found no small CPU runner for CUDA C++ that handles inline
// PTX; this covers exactly the subset our kernels use, and fails loudly
// (deadlock, misaligned ldmatrix/cp.async address) where a GPU would hang or
// fault. Fibers switch only at barriers, so a run is deterministic.
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#define VIDFLOW_HOST 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct HostDim {
    unsigned x = 0, y = 0, z = 0;
};
inline HostDim threadIdx, blockIdx, blockDim, gridDim;

struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __int_as_float(int i) { return __uint_as_float((unsigned int)i); }
inline float __expf(float x) { return std::exp(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

namespace vhost {

[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "host kernel run: %s (block %u,%u,%u thread %u)\n", what, blockIdx.x, blockIdx.y,
                 blockIdx.z, threadIdx.x);
    std::exit(2);
}

// When cp.async copies land: at issue (the earliest a GPU may), at the wait
// that covers them (the latest), or never (a control: a kernel that passes
// with Drop does not read what it copied).
enum class CpMode { Eager, Lazy, Drop };

// The order fibers run in between barriers. Races show up only under some
// orders: Interleaved moves every warp one barrier at a time; the others run
// each warp on until it waits for the whole block (a warp racing ahead of
// the rest, first to last or last to first).
enum class Schedule { Interleaved, WarpsInOrder, WarpsReversed };

struct CpCopy {
    void* dst;
    const void* src;
    int bytes;
};

struct Fiber {
    ucontext_t ctx;
    std::unique_ptr<char[]> stack;
    bool done = false;
    std::vector<CpCopy> open;                 // issued, not yet committed
    std::vector<std::vector<CpCopy>> groups;  // committed, not yet waited for
};

struct Barrier {
    unsigned arrived = 0, gen = 0;
};

// Per-warp exchange slots for the collective operations.
struct WarpSlots {
    float f[32];
    unsigned int u[32][6];
    const void* p[32];
};

struct State {
    ucontext_t sched;
    std::vector<Fiber> fibers;
    std::vector<Barrier> warp_bar;
    std::vector<WarpSlots> slots;
    Barrier block_bar;
    unsigned cur = 0;
    bool progressed = false;
    const std::function<void()>* body = nullptr;
    CpMode cp_mode = CpMode::Lazy;
    Schedule schedule = Schedule::Interleaved;
};
inline State g;
constexpr size_t STACK_BYTES = 256 * 1024;

inline void yield() { swapcontext(&g.fibers[g.cur].ctx, &g.sched); }

inline void arrive(Barrier& b, unsigned n) {
    g.progressed = true;
    const unsigned gen = b.gen;
    if (++b.arrived == n) {
        b.arrived = 0;
        ++b.gen;
        return;
    }
    while (b.gen == gen) yield();
}

inline void entry() {
    (*g.body)();
    g.fibers[g.cur].done = true;
    g.progressed = true;
}  // uc_link returns to the scheduler

// Runs `body` (a kernel call) on every thread of every block of `grid`,
// `threads` threads per block.
inline void launch(HostDim grid, unsigned threads, const std::function<void()>& body) {
    if (threads == 0 || threads % 32 != 0 || threads > 1024) fail("block size must be a multiple of 32, at most 1024");
    gridDim = grid;
    blockDim = HostDim{threads, 1, 1};
    g.body = &body;
    if (g.fibers.size() < threads) g.fibers.resize(threads);
    g.warp_bar.assign(threads / 32, Barrier{});
    g.slots.resize(threads / 32);
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                blockIdx = HostDim{x, y, z};
                g.block_bar = Barrier{};
                for (unsigned i = 0; i < threads; ++i) {
                    Fiber& f = g.fibers[i];
                    if (!f.stack) f.stack.reset(new char[STACK_BYTES]);
                    f.done = false;
                    f.open.clear();
                    f.groups.clear();
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = f.stack.get();
                    f.ctx.uc_stack.ss_size = STACK_BYTES;
                    f.ctx.uc_link = &g.sched;
                    makecontext(&f.ctx, entry, 0);
                }
                unsigned live = threads;
                auto run = [&](unsigned i) {
                    if (g.fibers[i].done) return;
                    g.cur = i;
                    threadIdx = HostDim{i, 0, 0};
                    swapcontext(&g.sched, &g.fibers[i].ctx);
                    if (g.fibers[i].done) --live;
                };
                const unsigned warps = threads / 32;
                while (live > 0) {
                    bool any = false;
                    if (g.schedule == Schedule::Interleaved) {
                        g.progressed = false;
                        for (unsigned i = 0; i < threads; ++i) run(i);
                        any = g.progressed;
                    } else {
                        for (unsigned n = 0; n < warps; ++n) {
                            const unsigned w = g.schedule == Schedule::WarpsInOrder ? n : warps - 1 - n;
                            do {
                                g.progressed = false;
                                for (unsigned l = 0; l < 32; ++l) run(w * 32 + l);
                                any = any || g.progressed;
                            } while (g.progressed);
                        }
                    }
                    if (live > 0 && !any) fail("deadlock: threads wait at a barrier others never reach");
                }
            }
}

inline unsigned warp() { return threadIdx.x >> 5; }
inline unsigned lane() { return threadIdx.x & 31; }

inline void check_full_mask(unsigned mask) {
    if (mask != 0xffffffffu) fail("only full-warp masks are emulated");
}

inline void land(const CpCopy& c) {
    std::memcpy(c.dst, c.src, (size_t)c.bytes);
    std::memset((char*)c.dst + c.bytes, 0, (size_t)(16 - c.bytes));
}

// Round to nearest even, as cvt.rn.bf16 does; written apart from
// common.cuh's f32_to_bf16 so each checks the other.
inline unsigned int bf16_bits(float f) {
    if (std::isnan(f)) return 0x7fffu;
    const unsigned int u = __float_as_uint(f);
    const unsigned int lsb = (u >> 16) & 1u;
    return (u + 0x7fffu + lsb) >> 16;
}
inline float bf16_lo(unsigned int r) { return __uint_as_float(r << 16); }
inline float bf16_hi(unsigned int r) { return __uint_as_float(r & 0xffff0000u); }

}  // namespace vhost

inline void __syncthreads() { vhost::arrive(vhost::g.block_bar, blockDim.x); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    vhost::check_full_mask(mask);
    vhost::arrive(vhost::g.warp_bar[vhost::warp()], 32);
}

inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
    vhost::check_full_mask(mask);
    vhost::WarpSlots& s = vhost::g.slots[vhost::warp()];
    s.f[vhost::lane()] = v;
    __syncwarp();
    const float r = s.f[vhost::lane() ^ (unsigned)lane_mask];
    __syncwarp();
    return r;
}

// cvt.rn.bf16x2.f32 d, hi, lo: hi in the upper half.
inline unsigned int pack_bf16(float lo, float hi) { return vhost::bf16_bits(lo) | (vhost::bf16_bits(hi) << 16); }

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, fragment layouts of
// the PTX ISA (group = lane/4, t = lane%4): A row-major 16x16, register i of
// lane holds rows group + 8*(i%2), cols 2t + 8*(i/2) + {0,1}; B 16x8, register
// i holds rows 2t + 8i + {0,1} of col group; C/D element i sits at row
// group + 8*(i/2), col 2t + i%2. Products of bf16 are exact in f32.
inline void mma_bf16(float* c, const unsigned int* a, unsigned int b0, unsigned int b1) {
    vhost::WarpSlots& s = vhost::g.slots[vhost::warp()];
    const unsigned ln = vhost::lane();
    for (int i = 0; i < 4; ++i) s.u[ln][i] = a[i];
    s.u[ln][4] = b0;
    s.u[ln][5] = b1;
    __syncwarp();
    auto half = [](unsigned int r, int k) { return (k & 1) ? vhost::bf16_hi(r) : vhost::bf16_lo(r); };
    auto A = [&](int r, int k) { return half(s.u[(r % 8) * 4 + (k % 8) / 2][r / 8 + 2 * (k / 8)], k); };
    auto B = [&](int k, int n) { return half(s.u[n * 4 + (k % 8) / 2][4 + k / 8], k); };
    const int grp = (int)ln >> 2, t = (int)ln & 3;
    float d[4];
    for (int i = 0; i < 4; ++i) {
        const int r = grp + 8 * (i >> 1), n = 2 * t + (i & 1);
        float acc = 0.f;
        for (int k = 0; k < 16; ++k) acc += A(r, k) * B(k, n);
        d[i] = c[i] + acc;
    }
    __syncwarp();
    for (int i = 0; i < 4; ++i) c[i] = d[i];
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8i..8i+7 address
// the rows of 8x8 matrix i (16-byte aligned); register i of each lane gets
// (row lane/4, cols 2*(lane%4)+{0,1}) of matrix i, or of its transpose.
template <bool TRANS>
inline void ldsm_x4(const unsigned short* p, unsigned int* r) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) vhost::fail("ldmatrix row address not 16-byte aligned");
    vhost::WarpSlots& s = vhost::g.slots[vhost::warp()];
    const unsigned ln = vhost::lane();
    s.p[ln] = p;
    __syncwarp();
    for (unsigned i = 0; i < 4; ++i) {
        unsigned int lo, hi;
        if (TRANS) {
            lo = static_cast<const unsigned short*>(s.p[8 * i + 2 * (ln % 4)])[ln / 4];
            hi = static_cast<const unsigned short*>(s.p[8 * i + 2 * (ln % 4) + 1])[ln / 4];
        } else {
            const unsigned short* row = static_cast<const unsigned short*>(s.p[8 * i + ln / 4]);
            lo = row[2 * (ln % 4)];
            hi = row[2 * (ln % 4) + 1];
        }
        r[i] = lo | (hi << 16);
    }
    __syncwarp();
}

// cp.async.cg.shared.global [dst], [src], 16, bytes: `bytes` copied, the
// rest of the 16 zero-filled, landing per vhost::g.cp_mode.
inline void cp_async16(void* dst, const void* src, int bytes) {
    if (reinterpret_cast<uintptr_t>(dst) % 16 != 0 || reinterpret_cast<uintptr_t>(src) % 16 != 0)
        vhost::fail("cp.async address not 16-byte aligned");
    if (bytes < 0 || bytes > 16) vhost::fail("cp.async source size outside 0..16");
    const vhost::CpCopy c{dst, src, bytes};
    switch (vhost::g.cp_mode) {
        case vhost::CpMode::Eager: vhost::land(c); break;
        case vhost::CpMode::Lazy: vhost::g.fibers[vhost::g.cur].open.push_back(c); break;
        case vhost::CpMode::Drop: break;
    }
}

// cp.async.commit_group: this thread's uncommitted copies become one group.
inline void cp_async_commit() {
    vhost::Fiber& f = vhost::g.fibers[vhost::g.cur];
    f.groups.push_back(std::move(f.open));
    f.open.clear();
}

// cp.async.wait_group 1: every group of this thread but the newest has landed.
inline void cp_async_wait_all_but_newest() {
    vhost::Fiber& f = vhost::g.fibers[vhost::g.cur];
    while (f.groups.size() > 1) {
        for (const vhost::CpCopy& c : f.groups.front()) vhost::land(c);
        f.groups.erase(f.groups.begin());
    }
}
