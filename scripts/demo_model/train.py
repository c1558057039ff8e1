"""Trains vidflow's demo model: a small LTX-Video (the real architecture, at small
widths) on the synthetic world of `world.py`, on the CPU, and saves it in the
diffusers checkpoint layout.

    .venv-train/bin/python scripts/demo_model/train.py --out models/demo

Steps (all seeded):
 1. a word-level tokenizer over `world.VOCAB` and a small T5 encoder, randomly
    initialised and frozen (the transformer's caption projection learns to read it);
 2. a pool of rendered training clips (held-out colour/shape pairs excluded);
 3. the VAE (AutoencoderKLLTXVideo, 0.9.0 layout, 16x spatial / 4x temporal) as a
    plain autoencoder on the encoder's mean, with a little latent noise so the
    decoder tolerates imperfect latents; then per-channel latent mean/std;
 4. the transformer (LTXVideoTransformer3DModel) by flow matching on the normalised
    latents of the pool, sigmas drawn from a logit-normal shifted as the sampler
    shifts them for this token count, 10% empty captions (for guidance) and 25%
    image-to-video samples (latent frame 0 clean at timestep 0, not in the loss),
    tokens that cover an object weighed `--object-weight` times, keeping an EMA
    of the weights, which is what is saved (also every `--snapshot-every` steps);
    `--dit-phases` runs several such trainings in a row (steps, object weight,
    rate), each from the previous one's EMA;
 5. the VAE decoder alone, sharper (`sharpen_decoder`), the encoder kept.

Bitwise reproducibility holds for the same machine type, torch version and thread
count; the shipped files are pinned by sha256 in gpu/src/demo/pins.rs (scripts/demo_model/pin.py).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import world  # noqa: E402

MAX_LEN = 128  # the pipeline's T5 length (vidflow and diffusers' LTXPipeline)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build_tokenizer(out: Path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in world.VOCAB:
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    d = out / "tokenizer"
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": MAX_LEN,
        "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
    }, indent=2) + "\n")
    return tok, len(vocab)


def tokenize(tok, captions: list[str]):
    ids = torch.zeros(len(captions), MAX_LEN, dtype=torch.long)
    mask = torch.zeros(len(captions), MAX_LEN)
    for i, c in enumerate(captions):
        e = tok.encode(c).ids[:MAX_LEN]
        ids[i, : len(e)] = torch.tensor(e)
        mask[i, : len(e)] = 1
    return ids, mask


def make_text_encoder(vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=vocab_size, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=32, relative_attention_max_distance=128,
                   feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0,
                   is_encoder_decoder=False, use_cache=False)
    enc = T5EncoderModel(cfg).eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc


def vae_config(latent_channels: int):
    return dict(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        block_out_channels=(32, 64, 64), decoder_block_out_channels=(32, 64, 64),
        layers_per_block=(1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False), decoder_spatio_temporal_scaling=(True, True, False),
        decoder_inject_noise=(False, False, False, False), upsample_residual=(False, False, False),
        upsample_factor=(1, 1, 1), timestep_conditioning=False, patch_size=4, patch_size_t=1,
        down_block_types=("LTXVideoDownBlock3D",) * 3, encoder_causal=True, decoder_causal=False,
        scaling_factor=1.0,
    )


def render_scenes(n: int, seed: int):
    rng = random.Random(seed)
    return [world.random_scene(rng) for _ in range(n)]


def render_pool(n: int, size: int, frames: int, seed: int):
    scenes = render_scenes(n, seed)
    clips = np.empty((n, frames, size, size, 3), np.uint8)
    for i, sc in enumerate(scenes):
        clips[i] = world.render(sc, seed * 1_000_003 + i, size=size, frames=frames, ss=2)
    return scenes, clips


def to_video(clips_u8: np.ndarray) -> torch.Tensor:
    """uint8 [B,F,H,W,3] -> float [B,3,F,H,W] in [-1, 1]."""
    x = torch.from_numpy(clips_u8).float().div_(127.5).sub_(1.0)
    return x.permute(0, 4, 1, 2, 3).contiguous()


def train_vae(vae, clips, scenes, steps: int, batch: int, lr: float, rng: np.random.Generator,
              decoder_only: bool = False, object_weight: float = 10.0, latent_noise: float = 0.1):
    """Autoencoder training on 9-frame windows. The loss weighs object pixels
    (those away from the clip's background colour) `object_weight`x: objects
    cover a small part of a frame, and unweighted, a decoder that paints only
    the background is a local minimum the training settles in.

    `decoder_only` keeps the encoder as it is: the latents, and so a
    transformer trained on them, stay valid while the decoder sharpens."""
    params = list(vae.decoder.parameters()) if decoder_only else list(vae.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05,
                                                final_div_factor=10.0)
    n, frames = clips.shape[0], clips.shape[1]
    bgs = torch.tensor([world.BACKGROUNDS[s.background] for s in scenes], dtype=torch.float32) / 127.5 - 1
    win = 9
    t0 = time.time()
    for step in range(steps):
        idx = rng.integers(0, n, batch)
        off = rng.integers(0, frames - win + 1, batch)
        x = to_video(np.stack([clips[i, o : o + win] for i, o in zip(idx, off)]))
        fg = ((x - bgs[idx][:, :, None, None, None]).abs().amax(1, keepdim=True) > 0.1).float()
        w = 1.0 + (object_weight - 1.0) * fg
        if decoder_only:
            with torch.no_grad():
                z = vae.encode(x).latent_dist.mean
        else:
            z = vae.encode(x).latent_dist.mean
        # Noise relative to the latents' own spread: the decoder must tolerate
        # the transformer's small errors.
        zn = z + latent_noise * z.detach().std() * torch.randn_like(z)
        y = vae.decode(zn).sample
        err = (y - x).abs() + (y - x).pow(2)
        loss = (err * w).mean() / w.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            with torch.no_grad():
                fg_err = ((y - x).abs() * fg).sum() / fg.sum().clamp(min=1)
                bg_err = ((y - x).abs() * (1 - fg)).sum() / (1 - fg).sum().clamp(min=1)
            log(f"{'decoder' if decoder_only else 'vae'} step {step}/{steps} loss {loss.item():.4f} L1 object {fg_err.item():.3f} "
                f"background {bg_err.item():.3f} |z| {z.abs().mean().item():.3f} "
                f"({(time.time() - t0) / (step + 1):.2f} s/step)")
    return loss.item()


def sharpen_decoder(vae, clips, scenes, args) -> float:
    """The last phase: the decoder alone at a quarter of the VAE rate, objects
    weighed 20x and half the latent noise, so outlines (a square's corners, a
    triangle's apex) survive decoding. The encoder is frozen, so the latents
    the transformer learned are unchanged; the phase has its own seeds and
    reads only the VAE's weights and the pool, so `--decoder-only` on a saved
    model gives the same weights as the full run."""
    torch.manual_seed(args.seed + 4)
    vae.train()
    loss = train_vae(vae, clips, scenes, args.decoder_steps, args.vae_batch, args.vae_lr / 4,
                     np.random.default_rng(args.seed + 4), decoder_only=True, object_weight=20.0,
                     latent_noise=0.05)
    vae.eval()
    return loss


def sharpen_and_save(vae, clips, scenes, args, out: Path) -> None:
    """Runs the last phase on `vae` and saves it into the model in `out`,
    adding the phase's steps, loss and time to its training.json."""
    t0 = time.time()
    loss = sharpen_decoder(vae, clips, scenes, args)
    save_fp16(vae, out / "vae")
    info = json.loads((out / "training.json").read_text())
    info.update(decoder_steps=args.decoder_steps, final_decoder_loss=loss,
                wall_seconds=round(info["wall_seconds"] + time.time() - t0, 1))
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    log(f"decoder sharpened in {time.time() - t0:.0f} s and saved to {out / 'vae'}")


@torch.no_grad()
def encode_pool(vae, clips, batch: int = 32):
    out = []
    for i in range(0, clips.shape[0], batch):
        out.append(vae.encode(to_video(clips[i : i + batch])).latent_dist.mean)
    return torch.cat(out)


def mu_for(tokens: int, sc: dict) -> float:
    m = (sc["max_shift"] - sc["base_shift"]) / (sc["max_image_seq_len"] - sc["base_image_seq_len"])
    b = sc["base_shift"] - m * sc["base_image_seq_len"]
    return tokens * m + b


SCHEDULER = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "base_image_seq_len": 1024, "base_shift": 0.95, "max_image_seq_len": 4096, "max_shift": 2.05,
    "num_train_timesteps": 1000, "shift": 1.0, "shift_terminal": 0.1, "use_dynamic_shifting": True,
    "invert_sigmas": False, "use_beta_sigmas": False, "use_exponential_sigmas": False,
    "use_karras_sigmas": False, "time_shift_type": "exponential",
}


def object_tokens(clips, scenes, s_comp: int, t_comp: int) -> torch.Tensor:
    """[clips, tokens] 1.0 where a latent token covers object pixels (any pixel
    away from the clip's background colour in its 16x16 patch and in the
    frames its latent frame encodes: frame 0 alone, then groups of 4), in the
    transformer's frame-major token order."""
    out = []
    for i in range(0, clips.shape[0], 256):
        c = torch.from_numpy(clips[i : i + 256]).float()
        bg = torch.tensor([world.BACKGROUNDS[s.background] for s in scenes[i : i + 256]], dtype=torch.float32)
        fg = ((c - bg[:, None, None, None, :]).abs().amax(-1) > 25).float()  # [n, F, H, W]
        groups = torch.cat([fg[:, :1], F.max_pool3d(fg[:, 1:, None].transpose(1, 2), (t_comp, 1, 1))
                            .squeeze(1)], dim=1)
        lat = F.max_pool2d(groups, s_comp)  # [n, Fl, Hl, Wl]
        out.append(lat.reshape(lat.shape[0], -1))
    return torch.cat(out)


def train_transformer(tr, enc, tok, latents, scenes, args, rng: random.Random, snapshot=None, objects=None):
    B, C, Fl, Hl, Wl = latents.shape
    S = Fl * Hl * Wl
    per_frame = Hl * Wl
    mu = mu_for(S, SCHEDULER)
    rope = (args.t_comp / args.fps, args.s_comp, args.s_comp)
    ema = {k: v.detach().clone() for k, v in tr.state_dict().items()}
    opt = torch.optim.AdamW(tr.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    warm = 200

    # The cosine runs over `schedule_steps` when a phase stops part-way
    # through a longer schedule (see --dit-phases).
    span = getattr(args, "schedule_steps", None) or args.dit_steps

    def lr_at(s):
        if s < warm:
            return args.lr * (s + 1) / warm
        p = min(1.0, (s - warm) / max(1, span - warm))
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    packed = latents.permute(0, 2, 3, 4, 1).reshape(B, S, C)  # frame-major tokens
    t0 = time.time()
    for step in range(args.dit_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        idx = [rng.randrange(B) for _ in range(args.batch)]
        caps = []
        for i in idx:
            sc = scenes[i]
            sc = world.Scene(sc.objects, sc.background, rng.randrange(len(world.TEMPLATES)), rng.randrange(4))
            caps.append("" if rng.random() < 0.1 else sc.caption())
        ids, mask = tokenize(tok, caps)
        with torch.no_grad():
            text = enc(input_ids=ids).last_hidden_state
        x0 = packed[idx]
        u = torch.sigmoid(torch.randn(args.batch))
        sigma = math.exp(mu) / (math.exp(mu) + (1 / u - 1))
        sigma = sigma.clamp(1e-3, 1.0)
        noise = torch.randn_like(x0)
        xt = (1 - sigma)[:, None, None] * x0 + sigma[:, None, None] * noise
        target = noise - x0
        t = (sigma * 1000)[:, None].expand(args.batch, S).clone()
        keep = torch.ones(args.batch, S)
        i2v = torch.rand(args.batch) < 0.25
        if i2v.any():
            xt[i2v, :per_frame] = x0[i2v, :per_frame]
            t[i2v, :per_frame] = 0.0
            keep[i2v, :per_frame] = 0.0
        v = tr(hidden_states=xt, encoder_hidden_states=text, timestep=t, encoder_attention_mask=mask,
               num_frames=Fl, height=Hl, width=Wl, rope_interpolation_scale=rope, return_dict=False)[0]
        # Object tokens weigh more: the words about shape and motion change
        # only them, and at equal weight the background's easy loss drowns
        # that signal (a model trained so ignored the motion words).
        if objects is not None:
            keep = keep * (1.0 + (args.object_weight - 1.0) * objects[idx])
        loss = (((v - target) ** 2).mean(-1) * keep).sum() / keep.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tr.parameters(), 1.0)
        opt.step()
        d = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v_ in tr.state_dict().items():
                if v_.dtype.is_floating_point:
                    ema[k].mul_(d).add_(v_.detach(), alpha=1 - d)
        if snapshot and args.snapshot_every and (step + 1) % args.snapshot_every == 0 \
                and step + 1 < args.dit_steps:
            snapshot(ema, step + 1, loss.item())
        if step % 100 == 0 or step == args.dit_steps - 1:
            log(f"dit step {step}/{args.dit_steps} loss {loss.item():.4f} lr {lr_at(step):.2e} "
                f"({(time.time() - t0) / (step + 1):.2f} s/step)")
    tr.load_state_dict(ema)
    return loss.item()


def parse_phases(text: str):
    """`STEPS:WEIGHT:LR[:SCHEDULE],...` -> [(steps, weight, lr, schedule or None)]."""
    out = []
    for part in text.split(","):
        f = part.split(":")
        if len(f) not in (3, 4):
            raise SystemExit(f"--dit-phases: {part!r} is not STEPS:OBJECT_WEIGHT:LR[:SCHEDULE_STEPS]")
        out.append((int(f[0]), float(f[1]), float(f[2]), int(f[3]) if len(f) == 4 else None))
    return out


def save_fp16(model, path: Path):
    """save_pretrained with the weights rounded to f16 (half the repo size); both
    runtimes load them into f32."""
    model.to(torch.float16).save_pretrained(str(path), safe_serialization=True)
    model.to(torch.float32)


def write_index(out: Path, args, vae_loss: float, dit_loss: float, steps_done: int, wall: float):
    index = {
        "_class_name": "LTXPipeline",
        "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "transformer": ["diffusers", "LTXVideoTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLLTXVideo"],
        "_vidflow_demo": {
            "label": "vidflow demo model: a small LTX-Video trained on synthetic shapes (scripts/demo_model)",
            "width": args.size, "height": args.size, "num_frames": args.frames, "fps": args.fps,
            "steps": args.steps, "guidance_scale": args.guidance,
        },
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "training.json").write_text(json.dumps({
        "seed": args.seed, "clips": args.clips, "vae_steps": args.vae_steps, "vae_steps2": args.vae_steps2,
        "vae_from": str(args.vae_from) if args.vae_from else None, "dit_steps": steps_done,
        "decoder_steps": 0, "dit_phases": getattr(args, "dit_phases", None),
        "batch": args.batch, "final_vae_loss": vae_loss, "final_dit_loss": dit_loss,
        "wall_seconds": round(wall, 1), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "held_out_pairs": sorted(map(list, world.HELD_OUT_PAIRS)),
    }, indent=2) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--clips", type=int, default=8000)
    ap.add_argument("--vae-steps", type=int, default=2500)
    ap.add_argument("--vae-batch", type=int, default=8)
    ap.add_argument("--vae-lr", type=float, default=5e-4)
    ap.add_argument("--vae-steps2", type=int, default=1500, help="second VAE phase at half the rate")
    ap.add_argument("--cache", type=Path, help="keep the rendered pool (and the trained VAE) here")
    ap.add_argument("--vae-from", type=Path, help="skip VAE training: load this f32 VAE folder")
    ap.add_argument("--vae-only", action="store_true", help="stop after training (and caching) the VAE")
    ap.add_argument("--decoder-steps", type=int, default=2000,
                    help="last phase: the VAE decoder alone, sharper, encoder (and latents) kept")
    ap.add_argument("--decoder-only", action="store_true",
                    help="run only the last phase on the model already in --out (its pool from --cache)")
    ap.add_argument("--dit-steps", type=int, default=10000)
    ap.add_argument("--snapshot-every", type=int, default=2500,
                    help="write the EMA transformer into --out this often, so a long run is usable early")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--object-weight", type=float, default=5.0,
                    help="loss weight of latent tokens that cover an object (background tokens 1)")
    ap.add_argument("--transformer-from", type=Path, help="start the transformer from this saved one")
    ap.add_argument("--dit-phases", type=str,
                    help="transformer training in phases, each from the previous one's EMA weights with a "
                         "fresh optimizer: comma-separated STEPS:OBJECT_WEIGHT:LR[:SCHEDULE_STEPS] "
                         "(overrides --dit-steps, --object-weight and --lr)")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--latent-channels", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30, help="sampling steps the model card recommends")
    ap.add_argument("--guidance", type=float, default=4.0)
    args = ap.parse_args()

    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

    start = time.time()
    torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "2")))
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    tok, vocab_size = build_tokenizer(out)
    enc = make_text_encoder(vocab_size)
    log(f"vocab {vocab_size}; rendering {args.clips} clips of {args.frames}x{args.size}x{args.size}")
    # Keyed by world.py's own bytes too: a changed world must not reuse old clips.
    wv = hashlib.sha256(Path(world.__file__).read_bytes()).hexdigest()[:8]
    cached = args.cache / f"pool-{args.clips}-{args.size}-{args.frames}-{args.seed}-{wv}.npy" if args.cache else None
    if cached and cached.exists():
        scenes = render_scenes(args.clips, args.seed)
        clips = np.load(cached)
    else:
        scenes, clips = render_pool(args.clips, args.size, args.frames, args.seed)
        if cached:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.save(cached, clips)
    log("pool rendered")

    if args.decoder_only:
        vae = AutoencoderKLLTXVideo.from_pretrained(out / "vae", torch_dtype=torch.float32)
        sharpen_and_save(vae, clips, scenes, args, out)
        return

    # The first VAE phase's result is cached under everything it depends on, so
    # a run stopped later (a session ends) starts again from it unchanged.
    phase1 = (args.cache / f"vae-f32-{args.seed}-{wv}-{args.clips}-{args.vae_steps}-{args.vae_batch}-"
              f"{args.vae_lr}-{args.latent_channels}") if args.cache else None
    if phase1 and not args.vae_from and (phase1 / "config.json").exists():
        args.vae_from = phase1
    if args.vae_from:
        # A VAE saved by an earlier run of this script with the same seed and
        # pool (its `vae-f32` folder): the rest of the run is then the same.
        vae = AutoencoderKLLTXVideo.from_pretrained(args.vae_from, torch_dtype=torch.float32)
        vae_loss = float("nan")
        log(f"first VAE phase loaded from {args.vae_from}")
    else:
        vae = AutoencoderKLLTXVideo(**vae_config(args.latent_channels))
        vae_loss = train_vae(vae, clips, scenes, args.vae_steps, args.vae_batch, args.vae_lr,
                             np.random.default_rng(args.seed))
        if phase1:
            vae.save_pretrained(str(phase1), safe_serialization=True)
    if args.vae_steps2:
        # Second phase at a lower rate, its own seeds: sharpens the outlines
        # (object L1 still falls steadily at the end of the first phase).
        torch.manual_seed(args.seed + 3)
        vae_loss = train_vae(vae, clips, scenes, args.vae_steps2, args.vae_batch, args.vae_lr / 2,
                             np.random.default_rng(args.seed + 3))
    if args.vae_only:
        log("VAE trained and cached; stopping (--vae-only)")
        return
    args.s_comp = vae.spatial_compression_ratio
    args.t_comp = vae.temporal_compression_ratio
    vae.eval()
    lat = encode_pool(vae, clips)
    mean = lat.mean(dim=(0, 2, 3, 4))
    std = lat.std(dim=(0, 2, 3, 4))
    vae.latents_mean.copy_(mean)
    vae.latents_std.copy_(std)
    norm = (lat - mean[None, :, None, None, None]) / std[None, :, None, None, None]
    log(f"latents {tuple(lat.shape)}; std range {std.min().item():.3f}..{std.max().item():.3f}")

    # Reseeded so a run that loads its VAE (--vae-from) trains the same transformer.
    torch.manual_seed(args.seed + 2)
    d = 32
    tr = LTXVideoTransformer3DModel(in_channels=args.latent_channels, out_channels=args.latent_channels,
                                    num_attention_heads=args.heads, attention_head_dim=d,
                                    cross_attention_dim=args.heads * d, num_layers=args.layers,
                                    caption_channels=enc.config.d_model)
    if args.transformer_from:
        tr = LTXVideoTransformer3DModel.from_pretrained(args.transformer_from, torch_dtype=torch.float32)
    objects = object_tokens(clips, scenes, args.s_comp, args.t_comp)
    log(f"object tokens: {objects.mean().item():.3f} of all")
    save_fp16(vae, out / "vae")
    save_fp16(enc, out / "text_encoder")
    world.write_files(out)
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER, indent=2) + "\n")

    def save_transformer(weights, steps_done: int, dit_loss: float):
        """The transformer with `weights` plus the index files: after each call
        `out` is a complete model (of `steps_done` transformer steps)."""
        snap = copy.deepcopy(tr)
        snap.load_state_dict(weights)
        save_fp16(snap, out / "transformer")
        write_index(out, args, vae_loss, dit_loss, steps_done, time.time() - start)
        log(f"transformer after {steps_done} steps saved to {out}")

    phases = parse_phases(args.dit_phases) if args.dit_phases else [
        (args.dit_steps, args.object_weight, args.lr, None)]
    rng = random.Random(args.seed + 1)
    done = 0
    for i, (steps, weight, lr, span) in enumerate(phases):
        args.dit_steps, args.object_weight, args.lr, args.schedule_steps = steps, weight, lr, span
        log(f"transformer phase {i + 1}/{len(phases)}: {steps} steps, object weight {weight}, lr {lr}"
            + (f", cosine over {span}" if span else ""))
        base = done

        def snap(weights, steps_done, loss, base=base):
            save_transformer(weights, base + steps_done, loss)

        dit_loss = train_transformer(tr, enc, tok, norm, scenes, args, rng, snapshot=snap, objects=objects)
        done += steps
    args.dit_steps = done
    save_transformer(tr.state_dict(), done, dit_loss)
    if args.decoder_steps:
        sharpen_and_save(vae, clips, scenes, args, out)
    wall = time.time() - start
    log(f"saved to {out} in {wall:.0f} s")


if __name__ == "__main__":
    main()
