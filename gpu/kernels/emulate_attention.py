"""A CPU model of the tensor-core attention kernel (attention.cu,
attention_mma, both variants: plain shared loads and ldmatrix), lane by
lane, checked against plain attention in float64.

No GPU runs in CI, so this is what checks the kernel's index arithmetic
there: every register the kernel forms (Q fragments from global memory, K
pairs and V halves from shared memory, P packed from the score
accumulators), the quad shuffles of the online softmax, and the output
stores are written here as the kernel writes them, and the mma.sync
m16n8k16 operands are assembled by the fragment layouts of the PTX ISA, and
ldmatrix distributes rows by its documented lane mapping (both independent
of how the kernel means to use them). A layout slip in the
kernel shows up as a wrong result here, without a GPU.

What it cannot check: the PTX itself (see scripts/check-kernels.py) and
anything about timing or memory ordering: variant 3 computes exactly what
variant 2 does, with the K/V tile copies made asynchronous (cp.async, two
stages), so only a GPU run can check its waits and barriers
(`vidflow-gpu-bench check`). Keep it in step with the kernel.
Usage: python3 gpu/kernels/emulate_attention.py (exit 1 on a mismatch)."""
import sys

import numpy as np

TILE = 64


def bf16(x):
    """Round float32 to bfloat16 (nearest even), returned as float32."""
    x = np.asarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def mma(c, a, b):
    """mma.sync.m16n8k16.row.col f32.bf16.bf16.f32 over a warp.
    a[lane] = 8 halves (regs a0..a3, low half first), b[lane] = 4 halves,
    c[lane] = 4 floats. Layouts from the PTX ISA (groupID = lane>>2,
    threadID_in_group = lane%4)."""
    A = np.zeros((16, 16), np.float64)
    B = np.zeros((16, 8), np.float64)
    C = np.zeros((16, 8), np.float64)
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        for i in range(8):
            row = g + 8 * ((i >> 1) & 1)
            col = t * 2 + (i & 1) + 8 * (i >> 2)
            A[row, col] = a[lane][i]
        for i in range(4):
            B[t * 2 + (i & 1) + 8 * (i >> 1), g] = b[lane][i]
        for i in range(4):
            C[g + 8 * (i >> 1), t * 2 + (i & 1)] = c[lane][i]
    D = A @ B + C
    out = []
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        out.append([np.float32(D[g + 8 * (i >> 1), t * 2 + (i & 1)]) for i in range(4)])
    return out


def ldsm_x4(smem, addr, trans):
    """ldmatrix.sync.m8n8.x4(.trans).b16: addr(lane) -> (row, col) into the
    2-D shared array; lanes 8i..8i+7 address the rows of matrix i. Returns
    per lane 4 registers of 2 halves (low first)."""
    mats = []
    for i in range(4):
        rows = []
        for r in range(8):
            row, col = addr(8 * i + r)
            rows.append(smem[row, col:col + 8])
        mats.append(np.array(rows))
    out = []
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        regs = []
        for m in mats:
            regs.append((m[2 * t, g], m[2 * t + 1, g]) if trans else (m[g, 2 * t], m[g, 2 * t + 1]))
        out.append(regs)
    return out


def shfl_xor(vals, m):
    return [vals[lane ^ m] for lane in range(32)]


def kernel(q, k, v, bias, scale, D, ldsm=False):
    """One (batch, head): q [sq, D], k/v [sk, D] bf16-valued float32; bias
    [sk] or None. Returns out [sq, D] as the kernel would store it."""
    sq, sk = q.shape[0], k.shape[0]
    out = np.full((sq, D), np.nan, np.float32)  # poisoned: every row must be written
    sl2 = np.float32(scale * 1.4426950408889634)
    KSTEPS, DTILES, NTILES = D // 16, D // 8, TILE // 8
    for row0 in range(0, sq, 16):  # one warp
        qa = []
        for lane in range(32):
            g, t = lane >> 2, lane & 3
            r_lo, r_hi = row0 + g, row0 + g + 8
            regs = []
            for kk in range(KSTEPS):
                c = kk * 16 + t * 2
                lo = q[r_lo] if r_lo < sq else np.zeros(D, np.float32)
                hi = q[r_hi] if r_hi < sq else np.zeros(D, np.float32)
                regs.append([lo[c], lo[c + 1], hi[c], hi[c + 1], lo[c + 8], lo[c + 9], hi[c + 8], hi[c + 9]])
            qa.append(regs)
        o = [[[np.float32(0)] * 4 for _ in range(DTILES)] for _ in range(32)]
        m = [[np.float32(-np.inf)] * 2 for _ in range(32)]
        l = [[np.float32(0)] * 2 for _ in range(32)]
        for t0 in range(0, sk, TILE):
            ks = np.zeros((TILE, D), np.float32)
            vs = np.zeros((TILE, D), np.float32)
            n = min(TILE, sk - t0)
            ks[:n], vs[:n] = k[t0:t0 + n], v[t0:t0 + n]
            s = [[[np.float32(0)] * 4 for _ in range(NTILES)] for _ in range(32)]
            for j in range(NTILES):
                if ldsm:
                    for kk in range(0, KSTEPS, 2):
                        regs = ldsm_x4(ks, lambda lane: (j * 8 + (lane & 7), (lane >> 3) * 8 + kk * 16), False)
                        for half in range(2):
                            b = [[*regs[lane][2 * half], *regs[lane][2 * half + 1]] for lane in range(32)]
                            cur = [s[lane][j] for lane in range(32)]
                            res = mma(cur, [qa[lane][kk + half] for lane in range(32)], b)
                            for lane in range(32):
                                s[lane][j] = res[lane]
                    continue
                for kk in range(KSTEPS):
                    b = []
                    for lane in range(32):
                        g, t = lane >> 2, lane & 3
                        kr = ks[j * 8 + g]
                        c = kk * 16 + t * 2
                        b.append([kr[c], kr[c + 1], kr[c + 8], kr[c + 9]])
                    cur = [s[lane][j] for lane in range(32)]
                    res = mma(cur, [qa[lane][kk] for lane in range(32)], b)
                    for lane in range(32):
                        s[lane][j] = res[lane]
            tmax = [[np.float32(-np.inf)] * 2 for _ in range(32)]
            for lane in range(32):
                t = lane & 3
                for j in range(NTILES):
                    for e in range(4):
                        key = t0 + j * 8 + t * 2 + (e & 1)
                        x = np.float32(-np.inf)
                        if key < sk:
                            x = np.float32(s[lane][j][e] * sl2 + (bias[key] * np.float32(1.4426950408889634) if bias is not None else 0))
                        s[lane][j][e] = x
                        tmax[lane][e >> 1] = max(tmax[lane][e >> 1], x)
            mref = [[0.0, 0.0] for _ in range(32)]
            alpha = [[0.0, 0.0] for _ in range(32)]
            for r in range(2):
                col = [tmax[lane][r] for lane in range(32)]
                col = [max(a, b) for a, b in zip(col, shfl_xor(col, 1))]
                col = [max(a, b) for a, b in zip(col, shfl_xor(col, 2))]
                for lane in range(32):
                    m_new = max(m[lane][r], col[lane])
                    mref[lane][r] = np.float32(0) if m_new == -np.inf else m_new
                    alpha[lane][r] = np.float32(np.exp2(m[lane][r] - mref[lane][r]))
                    m[lane][r] = m_new
                    l[lane][r] = np.float32(l[lane][r] * alpha[lane][r])
            for lane in range(32):
                for j in range(DTILES):
                    for e in range(4):
                        o[lane][j][e] = np.float32(o[lane][j][e] * alpha[lane][e >> 1])
            for kk in range(NTILES // 2):
                pa = []
                for lane in range(32):
                    p = [[np.float32(np.exp2(s[lane][2 * kk + tt][e] - mref[lane][e >> 1])) for e in range(4)] for tt in range(2)]
                    for tt in range(2):
                        for e in range(4):
                            l[lane][e >> 1] = np.float32(l[lane][e >> 1] + p[tt][e])
                    # pack_bf16(lo, hi) per register, as pa[0..3] in the kernel
                    pa.append(list(bf16([p[0][0], p[0][1], p[0][2], p[0][3], p[1][0], p[1][1], p[1][2], p[1][3]])))
                if ldsm:
                    for j in range(0, DTILES, 2):
                        regs = ldsm_x4(vs, lambda lane: (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7), ((lane >> 3) >> 1) * 8 + j * 8), True)
                        for half in range(2):
                            b = [[*regs[lane][2 * half], *regs[lane][2 * half + 1]] for lane in range(32)]
                            res = mma([o[lane][j + half] for lane in range(32)], pa, b)
                            for lane in range(32):
                                o[lane][j + half] = res[lane]
                    continue
                for j in range(DTILES):
                    b = []
                    for lane in range(32):
                        g, t = lane >> 2, lane & 3
                        base = kk * 16 + t * 2  # v0 row; column j*8 + g
                        col = j * 8 + g
                        b.append([vs[base, col], vs[base + 1, col], vs[base + 8, col], vs[base + 9, col]])
                    res = mma([o[lane][j] for lane in range(32)], pa, b)
                    for lane in range(32):
                        o[lane][j] = res[lane]
        for r in range(2):
            col = [l[lane][r] for lane in range(32)]
            col = [a + b for a, b in zip(col, shfl_xor(col, 1))]
            col = [a + b for a, b in zip(col, shfl_xor(col, 2))]
            for lane in range(32):
                l[lane][r] = np.float32(1.0 / col[lane]) if col[lane] > 0 else np.float32(0)
        for lane in range(32):
            g, t = lane >> 2, lane & 3
            r_lo, r_hi = row0 + g, row0 + g + 8
            for j in range(DTILES):
                c = j * 8 + t * 2
                if r_lo < sq:
                    out[r_lo, c:c + 2] = bf16([o[lane][j][0] * l[lane][0], o[lane][j][1] * l[lane][0]])
                if r_hi < sq:
                    out[r_hi, c:c + 2] = bf16([o[lane][j][2] * l[lane][1], o[lane][j][3] * l[lane][1]])
    return out


def reference(q, k, v, bias, scale):
    s = q.astype(np.float64) @ k.astype(np.float64).T * scale
    if bias is not None:
        s = s + bias[None, :]
    s = s - s.max(axis=1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=1, keepdims=True)
    return p @ v.astype(np.float64)


def main():
    rng = np.random.default_rng(0)
    ok = True
    for D, sq, sk, masked in [(64, 37, 70, False), (64, 20, 77, True), (128, 19, 64, True), (64, 16, 5, False)]:
        q, k, v = (bf16(rng.standard_normal((n, D)).astype(np.float32)) for n in (sq, sk, sk))
        bias = None
        if masked:
            bias = np.where(np.arange(sk) % 3 == 1, -10000.0, 0.0).astype(np.float32)
        scale = 1.0 / np.sqrt(D)
        want = reference(q, k, v, bias, scale)
        for variant, ldsm in (("mma1", False), ("mma2", True)):
            got = kernel(q, k, v, bias, scale, D, ldsm)
            err = np.linalg.norm(got - want) / np.linalg.norm(want)
            good = bool(np.isfinite(got).all() and err < 1e-2)
            ok &= good
            print(f"{'ok  ' if good else 'FAIL'} {variant} D={D} sq={sq} sk={sk} mask={masked}: rel err {err:.2e}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
