"""Summary table of a benches/gpu/run.sh output folder."""
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1])


def rows(name):
    p = out / name
    if not p.exists():
        return []
    r = []
    for line in p.read_text().splitlines():
        if line.startswith("{"):
            try:
                r.append(json.loads(line))
            except ValueError:
                pass
    return r


checks = rows("check.jsonl")
print(f"kernel checks: {sum(c.get('pass', False) for c in checks)}/{len(checks)} pass")
for c in checks:
    if not c.get("pass", False):
        print("  FAIL", c)
gold = rows("golden.jsonl")
f32 = [g for g in gold if g.get("dtype") == "F32"]
print(f"golden f32: {sum(g.get('within_tolerance', False) for g in f32)}/{len(f32)} within tolerance")
for g in gold:
    if g.get("dtype") == "BF16" or not g.get("within_tolerance", False):
        print(f"  {g.get('golden')} {g.get('dtype')} {g.get('tensor', '')} max_abs {g.get('max_abs_err')} rel_l2 {g.get('rel_l2_err')} {g.get('error', '')[:200]}")
for a in rows("attention.jsonl"):
    if a.get("bench") == "attention":
        print(f"attention {a['variant']}: {a['ms']:.2f} ms, {a['tflops']:.1f} TFLOP/s")
    elif a.get("bench") == "attention_pick":
        print(f"attention pick: variant {a['variant']}, {a['warps']} warps")
peer = {r.get("peer"): r for r in rows("diffusers.jsonl")}
if "torch_sdpa" in peer:
    print(f"attention torch SDPA: {peer['torch_sdpa']['ms']:.2f} ms, {peer['torch_sdpa']['tflops']:.1f} TFLOP/s")
for s in rows("step.jsonl"):
    if s.get("bench") == "attention_pick":
        print(f"step uses tensor-core variant {s['variant']}, {s['warps']} warps")
    if "ms_per_step" in s:
        print(f"vidflow step: {s['ms_per_step']:.1f} ms ({s['tflops']:.0f} TFLOP/s, MFU {s['mfu']:.1%}), "
              f"peak {s['peak_bytes_in_use']/2**30:.1f} GiB in use (estimate {s['estimate_total_bytes']/2**30:.1f} GiB)")
        d = peer.get("diffusers_transformer")
        if d and "ms_per_step" in d:
            print(f"diffusers step: {d['ms_per_step']:.1f} ms, peak allocated {d['peak_allocated_bytes']/2**30:.1f} GiB; "
                  f"ratio vidflow/diffusers {s['ms_per_step']/d['ms_per_step']:.3f}")
for v in rows("vae.jsonl"):
    print("vidflow vae decode:", {k: v[k] for k in v if k != "bench"})
if "diffusers_vae_decode" in peer:
    print("diffusers vae decode:", peer["diffusers_vae_decode"])
