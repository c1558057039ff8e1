"""Writes the demo model's parity case: one text-to-video generation through
diffusers' own `LTXPipeline` on the shipped checkpoint, with the inputs vidflow
needs to repeat it (prompt token ids and T5 embeddings, the packed initial noise).

    .venv-train/bin/python scripts/demo_model/reference.py MODEL_DIR OUT.safetensors

`gpu/tests/demo_model.rs` runs the same prompt and noise through vidflow's pipeline
and bounds the mean absolute pixel difference; CI needs no PyTorch for that.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

MAX_LEN = 128


def main():
    model, out = Path(sys.argv[1]), Path(sys.argv[2])
    prompt = sys.argv[3] if len(sys.argv) > 3 else "a red square moving left on a black background"
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel
    from tokenizers import Tokenizer
    from transformers import T5EncoderModel

    torch.set_num_threads(2)
    f32 = torch.float32
    demo = json.loads((model / "model_index.json").read_text())["_vidflow_demo"]
    tok = Tokenizer.from_file(str(model / "tokenizer" / "tokenizer.json"))
    enc = T5EncoderModel.from_pretrained(model / "text_encoder", torch_dtype=f32).eval()

    def embed(text: str):
        ids = tok.encode(text).ids[:MAX_LEN]
        t = torch.zeros(1, MAX_LEN, dtype=torch.long)
        t[0, : len(ids)] = torch.tensor(ids)
        m = torch.zeros(1, MAX_LEN)
        m[0, : len(ids)] = 1
        with torch.no_grad():
            e = enc(input_ids=t).last_hidden_state
        return t, e, m

    ids, pe, pm = embed(prompt)
    nids, ne, nm = embed("")
    pipe = LTXPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(model / "scheduler"),
        vae=AutoencoderKLLTXVideo.from_pretrained(model / "vae", torch_dtype=f32),
        text_encoder=enc,
        tokenizer=None,
        transformer=LTXVideoTransformer3DModel.from_pretrained(model / "transformer", torch_dtype=f32),
    )
    w, h, n = demo["width"], demo["height"], demo["num_frames"]
    s, t = pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio
    tokens = ((n - 1) // t + 1) * (h // s) * (w // s)
    c = pipe.transformer.config.in_channels
    noise = torch.randn(1, tokens, c, generator=torch.Generator().manual_seed(7), dtype=f32)
    with torch.no_grad():
        video = pipe(
            prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne,
            negative_prompt_attention_mask=nm, latents=noise.clone(), width=w, height=h, num_frames=n,
            frame_rate=demo["fps"], num_inference_steps=demo["steps"], guidance_scale=demo["guidance_scale"],
            output_type="np",
        ).frames[0]
    rgb = np.clip(np.round(np.asarray(video) * 255.0), 0, 255).astype(np.uint8)
    save_file({
        "prompt_ids": ids.to(torch.int64), "prompt_embeds": pe.contiguous(), "prompt_attention_mask": pm,
        "negative_prompt_embeds": ne.contiguous(), "negative_prompt_attention_mask": nm,
        "latents": noise, "video": torch.from_numpy(np.ascontiguousarray(rgb)),
    }, str(out), metadata={
        "prompt": prompt, "negative_prompt": "", "width": str(w), "height": str(h), "num_frames": str(n),
        "fps": str(demo["fps"]), "steps": str(demo["steps"]), "guidance_scale": str(demo["guidance_scale"]),
        "reference": "diffusers LTXPipeline " + __import__("diffusers").__version__ + ", torch " + torch.__version__,
    })
    print(f"wrote {out}: video {rgb.shape}, mean {rgb.mean():.1f}")


if __name__ == "__main__":
    main()
