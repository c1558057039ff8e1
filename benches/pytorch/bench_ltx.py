#!/usr/bin/env python3
"""PyTorch/diffusers peer of the vidflow CPU benchmark (LTX-Video shapes).

Builds diffusers.LTXVideoTransformer3DModel and diffusers.AutoencoderKLLTXVideo
with random weights (torch.manual_seed(0), float32, CPU) and times, per config:

  * step_ms   -- one transformer forward with CFG batch 2 (= one denoise step)
  * decode_ms -- one VAE decode of a batch-1 latent

Each timing is 1 warm-up call + median of N timed calls. All calls run under
torch.inference_mode(). Prints one JSON object on stdout; progress goes to
stderr.

Usage:
  .venv-bench/bin/python benches/pytorch/bench_ltx.py --config all
  .venv-bench/bin/python benches/pytorch/bench_ltx.py --config tiny --repeats 5
"""

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch
import diffusers
from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

GOLDEN_CASE = "/work/shared/golden/ltx/ltx_pipeline_t2v/case.json"

# VAE config of the golden ltx_pipeline_t2v case (used verbatim when the file
# is readable; this copy is the fallback and must stay identical to it).
TINY_VAE_FALLBACK = {
    "block_out_channels": [8, 16, 16, 16],
    "decoder_block_out_channels": [8, 16, 16, 16],
    "decoder_causal": False,
    "decoder_inject_noise": [False, False, False, False, False],
    "decoder_layers_per_block": [1, 1, 1, 1, 1],
    "decoder_spatio_temporal_scaling": [True, True, True, False],
    "down_block_types": ["LTXVideoDownBlock3D"] * 4,
    "downsample_type": ["conv", "conv", "conv", "conv"],
    "encoder_causal": True,
    "in_channels": 3,
    "latent_channels": 8,
    "layers_per_block": [1, 1, 1, 1, 1],
    "out_channels": 3,
    "patch_size": 4,
    "patch_size_t": 1,
    "resnet_norm_eps": 1e-06,
    "scaling_factor": 1.0,
    "spatial_compression_ratio": None,
    "spatio_temporal_scaling": [True, True, True, False],
    "temporal_compression_ratio": None,
    "timestep_conditioning": False,
    "upsample_factor": [1, 1, 1, 1],
    "upsample_residual": [False, False, False, False],
}


def tiny_vae_config():
    try:
        with open(GOLDEN_CASE) as f:
            return json.load(f)["config"]["vae"], GOLDEN_CASE
    except (OSError, KeyError, ValueError):
        return copy.deepcopy(TINY_VAE_FALLBACK), "embedded copy of " + GOLDEN_CASE


def make_configs():
    tiny_vae, tiny_vae_src = tiny_vae_config()
    return {
        "tiny": {
            "transformer": dict(
                in_channels=8,
                out_channels=8,
                patch_size=1,
                patch_size_t=1,
                num_attention_heads=4,
                attention_head_dim=8,
                cross_attention_dim=32,
                num_layers=2,
                activation_fn="gelu-approximate",
                qk_norm="rms_norm_across_heads",
                norm_elementwise_affine=False,
                norm_eps=1e-6,
                caption_channels=32,
                attention_bias=True,
                attention_out_bias=True,
            ),
            "vae": tiny_vae,
            "vae_source": tiny_vae_src,
            "text_len": 128,
            "video": {"height": 64, "width": 96, "frames": 9},
        },
        "mid": {
            # LTX-Video 2B block width, only 2 layers.
            "transformer": dict(
                in_channels=128,
                out_channels=128,
                patch_size=1,
                patch_size_t=1,
                num_attention_heads=32,
                attention_head_dim=64,
                cross_attention_dim=2048,
                num_layers=2,
                activation_fn="gelu-approximate",
                qk_norm="rms_norm_across_heads",
                norm_elementwise_affine=False,
                norm_eps=1e-6,
                caption_channels=4096,
                attention_bias=True,
                attention_out_bias=True,
            ),
            # diffusers defaults of AutoencoderKLLTXVideo == LTX-Video 0.9.0 VAE.
            "vae": {},
            "vae_source": "diffusers AutoencoderKLLTXVideo defaults (LTX-Video 0.9.0)",
            "text_len": 128,
            "video": {"height": 256, "width": 256, "frames": 25},
        },
    }


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(fn, repeats):
    """1 warm-up + `repeats` timed calls; returns (median_ms, all_ms, last_out)."""
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times), times, out


def nparams(m):
    return sum(p.numel() for p in m.parameters())


def bench_config(name, cfg, repeats, decode_repeats):
    tcfg = cfg["transformer"]
    vcfg = cfg["vae"]
    vid = cfg["video"]

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(**tcfg).eval()
    vae = AutoencoderKLLTXVideo(**vcfg).eval()

    t_ratio = vae.temporal_compression_ratio
    s_ratio = vae.spatial_compression_ratio
    lf = (vid["frames"] - 1) // t_ratio + 1
    lh = vid["height"] // s_ratio
    lw = vid["width"] // s_ratio
    c = tcfg["in_channels"]
    assert vae.config.latent_channels == c, "VAE latent channels must match transformer in_channels"
    tokens = lf * lh * lw
    batch = 2  # CFG: uncond + cond
    text_len = cfg["text_len"]

    g = torch.Generator().manual_seed(0)
    hidden_states = torch.randn(batch, tokens, c, generator=g)
    encoder_hidden_states = torch.randn(batch, text_len, tcfg["caption_channels"], generator=g)
    timestep = torch.full((batch,), 500.0)
    encoder_attention_mask = torch.ones(batch, text_len)
    rope_scale = (t_ratio / 25.0, float(s_ratio), float(s_ratio))  # (8/25, 32, 32)
    latent = torch.randn(1, c, lf, lh, lw, generator=g)

    log(f"[{name}] transformer params={nparams(transformer):,} vae decoder params={nparams(vae.decoder):,}")
    log(f"[{name}] latent grid f={lf} h={lh} w={lw} tokens={tokens}")

    with torch.inference_mode():

        def step():
            return transformer(
                hidden_states=hidden_states,
                encoder_hidden_states=encoder_hidden_states,
                timestep=timestep,
                encoder_attention_mask=encoder_attention_mask,
                num_frames=lf,
                height=lh,
                width=lw,
                rope_interpolation_scale=rope_scale,
                return_dict=False,
            )[0]

        def decode():
            return vae.decode(latent, return_dict=False)[0]

        log(f"[{name}] timing transformer step (1 warm-up + {repeats})")
        step_ms, step_all, step_out = timed(step, repeats)
        log(f"[{name}] step_ms={step_ms:.2f} all={[round(t, 2) for t in step_all]}")
        log(f"[{name}] timing VAE decode (1 warm-up + {decode_repeats})")
        decode_ms, decode_all, video = timed(decode, decode_repeats)
        log(f"[{name}] decode_ms={decode_ms:.2f} all={[round(t, 2) for t in decode_all]}")

    assert tuple(step_out.shape) == (batch, tokens, tcfg["out_channels"]), step_out.shape
    expect_video = (1, vae.config.out_channels, vid["frames"], vid["height"], vid["width"])
    assert tuple(video.shape) == expect_video, (tuple(video.shape), expect_video)

    return {
        "step_ms": round(step_ms, 3),
        "step_ms_all": [round(t, 3) for t in step_all],
        "decode_ms": round(decode_ms, 3),
        "decode_ms_all": [round(t, 3) for t in decode_all],
        "step_repeats": repeats,
        "decode_repeats": decode_repeats,
        "tokens": tokens,
        "cfg_batch": batch,
        "text_len": text_len,
        "video": vid,
        "latent_grid": [lf, lh, lw],
        "shapes": {
            "hidden_states": list(hidden_states.shape),
            "encoder_hidden_states": list(encoder_hidden_states.shape),
            "timestep": list(timestep.shape),
            "encoder_attention_mask": list(encoder_attention_mask.shape),
            "transformer_out": list(step_out.shape),
            "decode_latent": list(latent.shape),
            "decode_out": list(video.shape),
        },
        "rope_interpolation_scale": list(rope_scale),
        "transformer_params": nparams(transformer),
        "vae_decoder_params": nparams(vae.decoder),
        "transformer_config": tcfg,
        "vae_config": {k: v for k, v in vae.config.items() if not k.startswith("_")},
        "vae_config_source": cfg["vae_source"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=["tiny", "mid", "all"], default="all")
    ap.add_argument("--repeats", type=int, default=3, help="timed transformer steps (and tiny decodes) after 1 warm-up")
    ap.add_argument("--decode-repeats", type=int, default=1, help="timed VAE decodes for mid after 1 warm-up")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: os.cpu_count())")
    args = ap.parse_args()

    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    log(f"torch {torch.__version__} diffusers {diffusers.__version__} threads={torch.get_num_threads()}")

    configs = make_configs()
    names = ["tiny", "mid"] if args.config == "all" else [args.config]
    load_before = os.getloadavg()
    results = {}
    for name in names:
        dec_rep = args.decode_repeats if name == "mid" else args.repeats
        results[name] = bench_config(name, configs[name], args.repeats, dec_rep)

    out = {
        "bench": "ltx_pytorch_peer",
        "machine": platform.uname().machine,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "dtype": "float32",
        "device": "cpu",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "method": "1 warm-up + median of N timed calls, torch.inference_mode(), random weights (manual_seed 0)",
        "configs": results,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
