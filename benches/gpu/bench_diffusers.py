"""The PyTorch/diffusers peer of `vidflow-gpu-bench`, same shapes in
the same run: LTXVideoTransformer3DModel at the 2B config (random weights,
bf16, diffusers' default attention = torch SDPA) on 768x512x121 (6144
tokens) with CFG batch 2; SDPA alone at the attention shape; the 0.9.0 VAE
decode. Prints one JSON object per line."""
import inspect
import json
import sys
import time

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

LAYERS = int(sys.argv[1]) if len(sys.argv) > 1 else 28
REPEATS = 5
dev = torch.device("cuda")
torch.manual_seed(0)


def timed(fn, repeats=REPEATS):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2], times


# Attention alone: [2, 32, 6144, 64] bf16.
q, k, v = (torch.randn(2, 32, 6144, 64, device=dev, dtype=torch.bfloat16) for _ in range(3))
ms, _ = timed(lambda: F.scaled_dot_product_attention(q, k, v))
print(json.dumps({"peer": "torch_sdpa", "shape": [2, 32, 6144, 64], "ms": ms,
                  "tflops": 4 * 2 * 32 * 6144 * 6144 * 64 / (ms * 1e-3) / 1e12}), flush=True)
del q, k, v

with torch.device(dev):
    model = LTXVideoTransformer3DModel(num_layers=LAYERS)
model = model.to(torch.bfloat16).eval()
frames, h, w, L = 16, 16, 24, 128
s = frames * h * w
x = torch.randn(2, s, 128, device=dev, dtype=torch.bfloat16)
text = torch.randn(2, L, 4096, device=dev, dtype=torch.bfloat16)
mask = torch.ones(2, L, device=dev, dtype=torch.bfloat16)
t = torch.tensor([500.0, 500.0], device=dev)
kw = dict(hidden_states=x, encoder_hidden_states=text, timestep=t, encoder_attention_mask=mask,
          num_frames=frames, height=h, width=w, return_dict=False)
if "rope_interpolation_scale" in inspect.signature(model.forward).parameters:
    kw["rope_interpolation_scale"] = (8 / 25, 32, 32)
torch.cuda.reset_peak_memory_stats()
with torch.no_grad():
    ms, all_ms = timed(lambda: model(**kw))
print(json.dumps({"peer": "diffusers_transformer", "layers": LAYERS, "tokens": s, "cfg_batch": 2,
                  "ms_per_step": ms, "ms_all": all_ms,
                  "peak_allocated_bytes": torch.cuda.max_memory_allocated(),
                  "torch": torch.__version__,
                  "diffusers": __import__("diffusers").__version__}), flush=True)
del model, x, text
torch.cuda.empty_cache()

try:
    with torch.device(dev):
        vae = AutoencoderKLLTXVideo()
    vae = vae.to(torch.bfloat16).eval()
    z = torch.randn(1, 128, 16, 16, 24, device=dev, dtype=torch.bfloat16)
    with torch.no_grad():
        vae.decode(torch.randn(1, 128, 2, 2, 2, device=dev, dtype=torch.bfloat16))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = vae.decode(z).sample
        torch.cuda.synchronize()
    print(json.dumps({"peer": "diffusers_vae_decode", "output": list(out.shape),
                      "ms": (time.perf_counter() - t0) * 1e3,
                      "peak_allocated_bytes": torch.cuda.max_memory_allocated()}), flush=True)
except Exception as e:  # report, never hide
    print(json.dumps({"peer": "diffusers_vae_decode", "error": repr(e)[:500]}), flush=True)
