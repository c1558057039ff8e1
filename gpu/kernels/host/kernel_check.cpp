// Runs every kernel of gpu/kernels/ on the CPU (cuda_host.hpp) against plain
// float64 references, on shapes with ragged tails, strided heads and the
// text mask, and exits 1 on any mismatch. CI runs it through
// scripts/check-kernels-host.sh. What it cannot check: speed, and the PTX
// definitions themselves (cuda_host.hpp writes them from the PTX ISA; a GPU
// run, `vidflow-gpu-bench check`, is the final word).
#include "cuda_host.hpp"
// The kernels compile after the host shim as they do after NVRTC's prelude.
#include "../common.cuh"
#include "../norm.cu"
#include "../attention.cu"

#include <algorithm>
#include <random>
#include <type_traits>
#include <string>

namespace {

int g_failures = 0;

std::mt19937 g_rng(20261128);

std::vector<float> randn(size_t n, float scale = 1.f) {
    std::normal_distribution<float> d(0.f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = d(g_rng);
    return v;
}

float round_bf16(float x) { return vhost::bf16_lo(vhost::bf16_bits(x)); }

template <typename T>
struct Buf {
    std::vector<T> data;
    std::vector<float> exact;  // the values as stored, widened
};

template <typename T>
Buf<T> store(const std::vector<float>& v) {
    Buf<T> b;
    b.data.resize(v.size());
    b.exact.resize(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
        if constexpr (std::is_same_v<T, float>) {
            b.data[i] = v[i];
            b.exact[i] = v[i];
        } else {
            b.data[i] = (T)vhost::bf16_bits(v[i]);
            b.exact[i] = round_bf16(v[i]);
        }
    }
    return b;
}

template <typename T>
std::vector<double> widen(const std::vector<T>& v) {
    std::vector<double> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
        if constexpr (std::is_same_v<T, float>)
            out[i] = v[i];
        else
            out[i] = vhost::bf16_lo(v[i]);
    }
    return out;
}

double rel_l2(const std::vector<double>& got, const std::vector<double>& want) {
    double num = 0, den = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        num += (got[i] - want[i]) * (got[i] - want[i]);
        den += want[i] * want[i];
    }
    return std::sqrt(num / (den > 0 ? den : 1));
}

// NaN fails: the comparison is written so that it cannot pass.
void report(const std::string& what, double err, double bound) {
    const bool ok = err <= bound;
    if (!ok) ++g_failures;
    std::printf("%s %-58s rel L2 %.2e (bound %.0e)\n", ok ? "ok  " : "FAIL", what.c_str(), err, bound);
}

// Controls: a result that must be far from the reference, or the check
// above proves nothing.
void expect_mismatch(const std::string& what, double err) {
    const bool ok = err > 0.1;
    if (!ok) ++g_failures;
    std::printf("%s %-58s rel L2 %.2e (a control: must be > 1e-1)\n", ok ? "ok  " : "FAIL", what.c_str(), err);
}

void check_bf16_rounding() {
    std::vector<float> xs = {0.f, -0.f, 1.f, 1.00390625f, 1.01171875f, -3.5e-3f, 65504.f, 3.4e38f, 1e-40f};
    const auto more = randn(2000, 10.f);
    xs.insert(xs.end(), more.begin(), more.end());
    // Exact ties: lower half exactly 0x8000, even and odd upper halves.
    xs.push_back(__uint_as_float(0x3f808000u));
    xs.push_back(__uint_as_float(0x3f818000u));
    int bad = 0;
    for (float x : xs)
        if ((unsigned int)f32_to_bf16(x) != vhost::bf16_bits(x)) ++bad;
    const bool nan_ok = vhost::bf16_lo(f32_to_bf16(std::nanf(""))) != vhost::bf16_lo(f32_to_bf16(std::nanf("")));
    if (bad || !nan_ok) ++g_failures;
    std::printf("%s common.cuh f32_to_bf16 vs cvt.rn.bf16: %d of %zu differ, NaN stays NaN: %s\n",
                bad || !nan_ok ? "FAIL" : "ok  ", bad, xs.size(), nan_ok ? "yes" : "no");
}

// ---------------------------------------------------------------------------
// Norms.

template <typename T>
void check_ada_norm(const char* name, void (*kernel)(const T*, const T*, const T*, T*, int, int, int, float, int),
                    int batch, int s_tokens, int d, int t_per, int kind) {
    const int rows = batch * s_tokens;
    const float eps = 1e-6f;
    auto x = store<T>(randn((size_t)rows * d, 2.f));
    auto shift = store<T>(randn((size_t)batch * t_per * d, 0.5f));
    auto scale = store<T>(randn((size_t)batch * t_per * d, 0.5f));
    std::vector<T> y((size_t)rows * d);
    vhost::launch({(unsigned)rows, 1, 1}, THREADS, [&] {
        kernel(x.data.data(), shift.data.data(), scale.data.data(), y.data(), d, s_tokens, t_per, eps, kind);
    });
    std::vector<double> want(y.size());
    for (int r = 0; r < rows; ++r) {
        const float* xr = &x.exact[(size_t)r * d];
        double mean = 0, ss = 0;
        if (kind == 1) {
            for (int c = 0; c < d; ++c) mean += xr[c];
            mean /= d;
        }
        for (int c = 0; c < d; ++c) ss += (xr[c] - mean) * (xr[c] - mean);
        const double inv = 1.0 / std::sqrt(ss / d + eps);
        const int b = r / s_tokens, mrow = b * t_per + (t_per == 1 ? 0 : r % s_tokens);
        for (int c = 0; c < d; ++c)
            want[(size_t)r * d + c] = (xr[c] - mean) * inv * (1.0 + scale.exact[(size_t)mrow * d + c]) +
                                      shift.exact[(size_t)mrow * d + c];
    }
    const double bound = std::is_same_v<T, float> ? 1e-5 : 8e-3;
    report(std::string(name) + (kind ? " layer" : " rms") + " d=" + std::to_string(d) +
               " t_per=" + std::to_string(t_per),
           rel_l2(widen(y), want), bound);
}

template <typename T>
void check_qk_norm_rope(const char* name, void (*kernel)(const T*, const T*, const float*, const float*, T*, int, int, float),
                        int batch, int s_tokens, int d) {
    const int rows = batch * s_tokens;
    const float eps = 1e-6f;
    auto x = store<T>(randn((size_t)rows * d, 3.f));
    auto w = store<T>(randn((size_t)d, 1.f));
    std::vector<float> cosv((size_t)s_tokens * d), sinv((size_t)s_tokens * d);
    for (int s = 0; s < s_tokens; ++s)
        for (int c = 0; c < d; c += 2) {
            const double ang = s * std::pow(1e4, -(double)c / d);
            cosv[(size_t)s * d + c] = cosv[(size_t)s * d + c + 1] = (float)std::cos(ang);
            sinv[(size_t)s * d + c] = sinv[(size_t)s * d + c + 1] = (float)std::sin(ang);
        }
    std::vector<T> y((size_t)rows * d);
    vhost::launch({(unsigned)rows, 1, 1}, THREADS, [&] {
        kernel(x.data.data(), w.data.data(), cosv.data(), sinv.data(), y.data(), d, s_tokens, eps);
    });
    std::vector<double> want(y.size());
    for (int r = 0; r < rows; ++r) {
        const float* xr = &x.exact[(size_t)r * d];
        double ss = 0;
        for (int c = 0; c < d; ++c) ss += (double)xr[c] * xr[c];
        const double inv = 1.0 / std::sqrt(ss / d + eps);
        const size_t t = (size_t)(r % s_tokens) * d;
        for (int c = 0; c < d; c += 2) {
            // The reference rounds the normalised value to the storage dtype first.
            double x0 = xr[c] * inv * w.exact[c], x1 = xr[c + 1] * inv * w.exact[c + 1];
            if constexpr (!std::is_same_v<T, float>) {
                x0 = round_bf16((float)x0);
                x1 = round_bf16((float)x1);
            }
            want[(size_t)r * d + c] = x0 * cosv[t + c] - x1 * sinv[t + c];
            want[(size_t)r * d + c + 1] = x1 * cosv[t + c + 1] + x0 * sinv[t + c + 1];
        }
    }
    const double bound = std::is_same_v<T, float> ? 1e-5 : 8e-3;
    report(std::string(name) + " d=" + std::to_string(d), rel_l2(widen(y), want), bound);
}

// ---------------------------------------------------------------------------
// Attention. q: [B, Sq, H*D] (as the projection writes it); k: [B, H, Sk, D]
// (the cached text keys' layout); v: rows of a fused [B, Sk, 2, H, D] buffer
// (a third stride pattern). bias: the text mask, the last keys of item 1
// padded.

template <typename T>
struct AttnCase {
    int batch, heads, sq, sk, d;
    Buf<T> q, k, v;
    std::vector<float> bias;
    AttnArgs a;
    std::vector<double> want;  // [B, Sq, H, D]
};

template <typename T>
AttnCase<T> make_attn(int batch, int heads, int sq, int sk, int d, bool masked) {
    AttnCase<T> c{batch, heads, sq, sk, d, {}, {}, {}, {}, {}, {}};
    c.q = store<T>(randn((size_t)batch * sq * heads * d));
    c.k = store<T>(randn((size_t)batch * heads * sk * d));
    c.v = store<T>(randn((size_t)batch * sk * 2 * heads * d));
    c.a = AttnArgs{heads,
                   sq,
                   sk,
                   (long long)sq * heads * d,
                   (long long)heads * d,
                   d,
                   (long long)heads * sk * d,
                   d,
                   (long long)sk * d,
                   (long long)sk * 2 * heads * d,
                   2LL * heads * d,
                   d,
                   1.0f / std::sqrt((float)d)};
    if (masked) {
        c.bias.assign((size_t)batch * sk, 0.f);
        for (int j = sk - sk / 3; j < sk; ++j) c.bias[(size_t)(batch - 1) * sk + j] = -10000.f;
    }
    const AttnArgs& a = c.a;
    c.want.assign((size_t)batch * sq * heads * d, 0.0);
    std::vector<double> p(sk);
    for (int b = 0; b < batch; ++b)
        for (int h = 0; h < heads; ++h)
            for (int i = 0; i < sq; ++i) {
                const float* qr = &c.q.exact[b * a.q_sb + h * a.q_sh + i * a.q_ss];
                double mx = -1e300, sum = 0;
                for (int j = 0; j < sk; ++j) {
                    const float* kr = &c.k.exact[b * a.k_sb + h * a.k_sh + j * a.k_ss];
                    double dot = 0;
                    for (int e = 0; e < d; ++e) dot += (double)qr[e] * kr[e];
                    p[j] = dot * a.scale + (masked ? c.bias[(size_t)b * sk + j] : 0.0);
                    mx = std::max(mx, p[j]);
                }
                for (int j = 0; j < sk; ++j) sum += (p[j] = std::exp(p[j] - mx));
                double* o = &c.want[(((size_t)b * sq + i) * heads + h) * d];
                for (int j = 0; j < sk; ++j) {
                    const float* vr = &c.v.exact[b * a.v_sb + h * a.v_sh + j * a.v_ss];
                    for (int e = 0; e < d; ++e) o[e] += p[j] / sum * vr[e];
                }
            }
    return c;
}

using MmaFn = void (*)(const bf16_t*, const bf16_t*, const bf16_t*, const float*, bf16_t*, const AttnArgs);

template <typename T, typename Fn>
std::vector<double> run_attn(const AttnCase<T>& c, Fn kernel, unsigned rows_per_block, unsigned threads) {
    std::vector<T> out(c.want.size());
    const float* bias = c.bias.empty() ? nullptr : c.bias.data();
    const HostDim grid{(unsigned)(c.sq + rows_per_block - 1) / rows_per_block, (unsigned)c.heads, (unsigned)c.batch};
    vhost::launch(grid, threads, [&] { kernel(c.q.data.data(), c.k.data.data(), c.v.data.data(), bias, out.data(), c.a); });
    return widen(out);
}

std::string shape(int sq, int sk, bool masked) {
    return " sq=" + std::to_string(sq) + " sk=" + std::to_string(sk) + (masked ? " masked" : "");
}

template <typename T>
void check_simt(const char* name, int d, void (*kernel)(const T*, const T*, const T*, const float*, T*, const AttnArgs),
                int sq, int sk, bool masked) {
    const auto c = make_attn<T>(2, 3, sq, sk, d, masked);
    const auto got = run_attn(c, kernel, SIMT_WARPS, SIMT_WARPS * 32);
    report(std::string(name) + shape(sq, sk, masked), rel_l2(got, c.want), std::is_same_v<T, float> ? 1e-5 : 8e-3);
}

struct MmaKernel {
    const char* name;
    int d, warps;
    MmaFn fn;
    bool pipelined;
};

void check_mma(const MmaKernel& m, int sq, int sk, bool masked, vhost::CpMode mode, const char* mode_name) {
    const auto c = make_attn<bf16_t>(2, 3, sq, sk, m.d, masked);
    vhost::g.cp_mode = mode;
    const auto got = run_attn(c, m.fn, 16 * m.warps, 32 * m.warps);
    vhost::g.cp_mode = vhost::CpMode::Lazy;
    const std::string what = std::string(m.name) + shape(sq, sk, masked) + mode_name;
    if (mode == vhost::CpMode::Drop)
        expect_mismatch(what, rel_l2(got, c.want));
    else
        // P is rounded to bf16 before P*V, so the bound is a little wider than SIMT's.
        report(what, rel_l2(got, c.want), 1e-2);
}

void check_all() {
    check_ada_norm<float>("ada_norm_f32", ada_norm_f32, 2, 5, 2048, 1, 0);
    check_ada_norm<float>("ada_norm_f32", ada_norm_f32, 2, 5, 100, 5, 1);
    check_ada_norm<bf16_t>("ada_norm_bf16", ada_norm_bf16, 2, 5, 2048, 5, 0);
    check_ada_norm<bf16_t>("ada_norm_bf16", ada_norm_bf16, 2, 5, 4096, 1, 1);
    check_ada_norm<bf16_t>("ada_norm_bf16", ada_norm_bf16, 1, 3, 100, 1, 1);
    check_qk_norm_rope<float>("qk_norm_rope_f32", qk_norm_rope_f32, 2, 4, 2048);
    check_qk_norm_rope<float>("qk_norm_rope_f32", qk_norm_rope_f32, 1, 3, 96);
    check_qk_norm_rope<bf16_t>("qk_norm_rope_bf16", qk_norm_rope_bf16, 2, 4, 2048);
    check_qk_norm_rope<bf16_t>("qk_norm_rope_bf16", qk_norm_rope_bf16, 1, 3, 4096);

    check_simt<float>("attn_simt_f32_d32", 32, attn_simt_f32_d32, 19, 70, true);
    check_simt<float>("attn_simt_f32_d64", 64, attn_simt_f32_d64, 19, 150, false);
    check_simt<float>("attn_simt_f32_d128", 128, attn_simt_f32_d128, 11, 70, true);
    check_simt<bf16_t>("attn_simt_bf16_d32", 32, attn_simt_bf16_d32, 11, 20, true);
    check_simt<bf16_t>("attn_simt_bf16_d64", 64, attn_simt_bf16_d64, 19, 150, true);
    check_simt<bf16_t>("attn_simt_bf16_d128", 128, attn_simt_bf16_d128, 11, 70, false);

    const MmaKernel mma[] = {
        {"attn_mma1_bf16_d64_w4", 64, 4, attn_mma1_bf16_d64_w4, false},
        {"attn_mma1_bf16_d64_w8", 64, 8, attn_mma1_bf16_d64_w8, false},
        {"attn_mma1_bf16_d128_w4", 128, 4, attn_mma1_bf16_d128_w4, false},
        {"attn_mma1_bf16_d128_w8", 128, 8, attn_mma1_bf16_d128_w8, false},
        {"attn_mma2_bf16_d64_w4", 64, 4, attn_mma2_bf16_d64_w4, false},
        {"attn_mma2_bf16_d64_w8", 64, 8, attn_mma2_bf16_d64_w8, false},
        {"attn_mma2_bf16_d128_w4", 128, 4, attn_mma2_bf16_d128_w4, false},
        {"attn_mma2_bf16_d128_w8", 128, 8, attn_mma2_bf16_d128_w8, false},
        {"attn_mma3_bf16_d64_w4", 64, 4, attn_mma3_bf16_d64_w4, true},
        {"attn_mma3_bf16_d64_w8", 64, 8, attn_mma3_bf16_d64_w8, true},
    };
    for (const MmaKernel& m : mma) {
        // Query rows past one block and not a multiple of 16; keys over
        // three tiles with a ragged last one; a short text-like key set.
        check_mma(m, 150, 150, true, vhost::CpMode::Lazy, "");
        check_mma(m, 37, 20, false, vhost::CpMode::Lazy, "");
        if (m.pipelined) {
            check_mma(m, 150, 150, true, vhost::CpMode::Eager, " (cp.async lands at issue)");
            check_mma(m, 150, 150, true, vhost::CpMode::Drop, " (cp.async never lands)");
        }
    }

}

}  // namespace

int main() {
    check_bf16_rounding();
    const std::pair<vhost::Schedule, const char*> schedules[] = {
        {vhost::Schedule::Interleaved, "warps interleaved, one barrier at a time"},
        {vhost::Schedule::WarpsInOrder, "each warp runs ahead to the next block barrier, first to last"},
        {vhost::Schedule::WarpsReversed, "each warp runs ahead to the next block barrier, last to first"},
    };
    for (const auto& [schedule, name] : schedules) {
        std::printf("-- schedule: %s\n", name);
        vhost::g.schedule = schedule;
        check_all();
    }
    if (g_failures) {
        std::printf("%d kernel check(s) failed\n", g_failures);
        return 1;
    }
    std::printf("every kernel matches its float64 reference\n");
    return 0;
}
