"""Compiles every CUDA kernel source under gpu/kernels/ to PTX with NVRTC
(libnvrtc from scripts/setup-nvrtc.sh, loaded with ctypes) for sm_90, the
way the runtime will at start-up, and fails on any error or warning.
No GPU and no CUDA toolkit needed. Usage: python3 scripts/check-kernels.py LIBDIR [PTX_OUT_DIR]"""
import ctypes
import pathlib
import sys

libdir = pathlib.Path(sys.argv[1])
# Optional second argument: a folder to write the PTX into (for ptxas -v).
out_dir = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else None
# NVRTC dlopens its builtins library by name at compile time: load it first,
# globally, so no LD_LIBRARY_PATH is needed.
ctypes.CDLL(str(libdir / "libnvrtc-builtins.so.13.0"), mode=ctypes.RTLD_GLOBAL)
nvrtc = ctypes.CDLL(str(libdir / "libnvrtc.so.13"))
root = pathlib.Path(__file__).resolve().parent.parent / "gpu" / "kernels"
OPTS = [b"--gpu-architecture=compute_90", b"--std=c++17", b"--use_fast_math"]
sources = sorted(root.glob("*.cu"))
# Every source is compiled after the shared prelude, as the runtime does.
prelude = (root / "common.cuh").read_bytes()
if not sources:
    sys.exit(f"check-kernels: no .cu files under {root}")
failed = 0
for src in sources:
    prog = ctypes.c_void_p()
    rc = nvrtc.nvrtcCreateProgram(ctypes.byref(prog), prelude + b"\n" + src.read_bytes(), src.name.encode(), 0, None, None)
    if rc != 0:
        sys.exit(f"check-kernels: nvrtcCreateProgram failed ({rc}) for {src}")
    opts = (ctypes.c_char_p * len(OPTS))(*OPTS)
    rc = nvrtc.nvrtcCompileProgram(prog, len(OPTS), opts)
    n = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
    log = ctypes.create_string_buffer(n.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    text = log.value.decode(errors="replace").strip()
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(n))
    ptx = n.value
    if rc == 0 and out_dir is not None:
        buf = ctypes.create_string_buffer(ptx)
        nvrtc.nvrtcGetPTX(prog, buf)
        (out_dir / (src.stem + ".ptx")).write_bytes(buf.value)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    if rc != 0 or "warning" in text:
        failed += 1
        print(f"FAIL {src.relative_to(root.parent.parent)}:\n{text}")
    else:
        print(f"ok   {src.relative_to(root.parent.parent)}: {ptx} bytes of PTX")
sys.exit(1 if failed else 0)
