"""PyTorch side of benches/run_wan.sh: diffusers' WanTransformer3DModel with
one layer at the Wan 2.1 1.3B widths, the same shapes as `vidflow-bench
--suite wan`, random weights, f32 on the CPU; prints JSON."""
import json
import sys
import time

import torch
from diffusers import WanTransformer3DModel

repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
torch.manual_seed(0)
m = WanTransformer3DModel(
    num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, ffn_dim=8960, num_layers=1, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
).eval()
x = torch.randn(1, 16, 2, 60, 104)
text = torch.randn(1, 512, 4096)
t = torch.tensor([999.0])
with torch.no_grad():
    m(x, t, text)
    ms = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        m(x, t, text)
        ms.append((time.perf_counter() - t0) * 1e3)
ms.sort()
print(json.dumps({"threads": torch.get_num_threads(), "median_ms": ms[len(ms) // 2], "all_ms": ms}))
