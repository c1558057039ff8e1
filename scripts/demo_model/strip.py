"""Draws frame strips of MP4s for the README: one row per video (every other
frame, scaled 2x), its caption above it.

    python scripts/demo_model/strip.py OUT.png "caption|video.mp4" ...

Needs ffmpeg and Pillow (the training environment has both)."""

import subprocess
import sys

import numpy as np
from PIL import Image, ImageDraw


def frames(path: str, size: int = 96) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, size, size, 3)


def main():
    out, items = sys.argv[1], [a.split("|", 1) for a in sys.argv[2:]]
    scale, gap, text_h = 2, 4, 18
    rows = []
    for caption, path in items:
        f = frames(path)[::2]
        row = np.full((96 * scale, len(f) * (96 * scale + gap) - gap, 3), 255, np.uint8)
        for i, fr in enumerate(f):
            big = fr.repeat(scale, 0).repeat(scale, 1)
            x = i * (96 * scale + gap)
            row[:, x : x + 96 * scale] = big
        rows.append((caption, row))
    width = max(r.shape[1] for _, r in rows)
    height = sum(r.shape[0] + text_h + gap for _, r in rows)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    y = 0
    for caption, row in rows:
        draw.text((2, y + 3), caption, fill="black")
        y += text_h
        img.paste(Image.fromarray(row), (0, y))
        y += row.shape[0] + gap
    img.save(out, optimize=True)
    print(f"wrote {out} ({width}x{height})")


if __name__ == "__main__":
    main()
