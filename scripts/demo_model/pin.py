"""Writes gpu/src/demo/pins.rs: the sha256 of every file of the shipped demo model
(gpu/models/ltx-demo), which `vidflow_gpu::demo::verify` checks before it loads.
Run after copying a newly trained model there."""

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "gpu" / "models" / "ltx-demo"
OUT = ROOT / "gpu" / "src" / "demo" / "pins.rs"

files = sorted(p for p in MODEL.rglob("*") if p.is_file())
lines = [
    "//! sha256 of every file of the shipped demo model (`gpu/models/ltx-demo`),",
    "//! written by `scripts/demo_model/pin.py`.",
    "",
    "pub const FILES: &[(&str, &str)] = &[",
]
for p in files:
    h = hashlib.sha256(p.read_bytes()).hexdigest()
    lines.append(f'    ("{p.relative_to(MODEL).as_posix()}", "{h}"),')
lines.append("];")
OUT.write_text("\n".join(lines) + "\n")
print(f"pinned {len(files)} files in {OUT.relative_to(ROOT)}")
