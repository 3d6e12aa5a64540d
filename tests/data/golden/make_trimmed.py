"""Rebuild this folder's trimmed copies from the full reference set (../shared/golden or $VIDEDIT_GOLDEN).

    python tests/data/golden/make_trimmed.py [FULL_GOLDEN_DIR]

The *_state files and ops.safetensors are copied whole. The others keep only what tests/test_generator.py
checks without the full set: sample 0 of the images, every layer's small statistics, the first rows of
each gradient together with the maximum |gradient| of the whole tensor (the tolerance is relative to it).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent


def trim_io(src: Path, name: str, keep_ws: bool) -> None:
    io = load_file(src / f"{name}_io.safetensors")
    out = {}
    for key, value in io.items():
        if key.startswith("img_"):
            out[key + ".s0"] = value[:1].contiguous()
        elif key.startswith("ws_"):
            out[key] = value if keep_ws else value[:1].contiguous()
        else:  # z, w_avg, w_avg_after, transforms, magnitude_ema_after scalars
            out[key] = value
    save_file(out, HERE / f"{name}_io.safetensors")


def trim_layers(src: Path, name: str) -> None:
    layers = load_file(src / f"{name}_layers.safetensors")
    out = {}
    for key, value in layers.items():
        if key.endswith((".affine_out", ".chmean", ".chrms")):
            out[key] = value
        elif key.startswith("input.full_out_s0_"):
            out[key + ".c4"] = value[:, :4].contiguous()
    save_file(out, HERE / f"{name}_layers.safetensors")


def trim_grads(src: Path, name: str) -> None:
    grads = load_file(src / f"{name}_grads.safetensors")
    out = {}
    for key, value in grads.items():
        if key.startswith("grad.synthesis.") and value.ndim >= 2:
            out[key + ".rows4"] = value[:4].contiguous()
            out[key + ".absmax"] = value.abs().max().reshape([])
        else:  # loss, target, grad.ws, 1-D grads
            out[key] = value
    save_file(out, HERE / f"{name}_grads.safetensors")


def main(argv: list[str]) -> int:
    default = Path(os.environ.get("VIDEDIT_GOLDEN", HERE.parents[3] / "shared" / "golden"))
    src = Path(argv[0]) if argv else default
    for name in ("sg3t_64_state.safetensors", "sg3r_64_state.safetensors", "ops.safetensors", "ops.json"):
        shutil.copyfile(src / name, HERE / name)
    for name in ("sg3t_64", "sg3r_64"):
        trim_io(src, name, keep_ws=(name == "sg3t_64"))
        trim_layers(src, name)
        shutil.copyfile(src / f"{name}.json", HERE / f"{name}.json")
    trim_grads(src, "sg3t_64")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
