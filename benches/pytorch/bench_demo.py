"""The demo model's default clip through diffusers' LTXPipeline on the same
weights as vidflow (gpu/models/ltx-demo): prompt encoding (the shipped word-level
tokenizer and T5), the CFG denoising loop and VAE decode, timed whole; median of
--repeats after one warm-up. Peer of `vidflow-bench --suite demo`."""

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "a red circle moving left on a black background"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel
    from tokenizers import Tokenizer
    from transformers import T5EncoderModel

    torch.set_num_threads(args.threads)
    model = ROOT / "gpu" / "models" / "ltx-demo"
    demo = json.loads((model / "model_index.json").read_text())["_vidflow_demo"]
    f32 = torch.float32
    t = time.perf_counter()
    tok = Tokenizer.from_file(str(model / "tokenizer" / "tokenizer.json"))
    enc = T5EncoderModel.from_pretrained(model / "text_encoder", torch_dtype=f32).eval()
    pipe = LTXPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(model / "scheduler"),
        vae=AutoencoderKLLTXVideo.from_pretrained(model / "vae", torch_dtype=f32),
        text_encoder=enc, tokenizer=None,
        transformer=LTXVideoTransformer3DModel.from_pretrained(model / "transformer", torch_dtype=f32),
    )
    pipe.set_progress_bar_config(disable=True)
    load_ms = (time.perf_counter() - t) * 1e3

    def embed(text):
        ids = tok.encode(text).ids[:128]
        x = torch.zeros(1, 128, dtype=torch.long)
        x[0, : len(ids)] = torch.tensor(ids)
        m = torch.zeros(1, 128)
        m[0, : len(ids)] = 1
        return enc(input_ids=x).last_hidden_state, m

    def generate():
        with torch.no_grad():
            pe, pm = embed(PROMPT)
            ne, nm = embed("")
            return pipe(prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne,
                        negative_prompt_attention_mask=nm, width=demo["width"], height=demo["height"],
                        num_frames=demo["num_frames"], frame_rate=demo["fps"],
                        num_inference_steps=demo["steps"], guidance_scale=demo["guidance_scale"],
                        generator=torch.Generator().manual_seed(0), output_type="np").frames

    generate()
    runs = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        generate()
        runs.append((time.perf_counter() - t) * 1e3)
    runs.sort()
    print(json.dumps({"load_ms": load_ms, "generate_ms": runs[len(runs) // 2], "runs_ms": runs,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}, indent=2))


if __name__ == "__main__":
    main()
