"""Make the trimmed copy of the ReStyle goldens kept in this folder (run from the repository root).

    python tests/data/golden_encoders/trim_goldens.py [GOLDEN_DIR]

Weights, encoder inputs, latent_avg and the loop's transforms are all defined by formulas (see
shared/golden/encoders_README.md), so only reference outputs are copied. Naming inside the files:
`<golden name>` is the whole tensor; `<golden name>@crop<n>` is its top-left [..., :n, :n] corner;
`<golden name>@mean` its mean over the last two dimensions. The e4e and pSp encoders of one backbone
share every tensor except `codes`, so the pSp files keep only those. `state_<backbone>.json` lists
each state-dict key with its shape, dtype, owner type and the sha256 of the reference weights.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
ENCODERS = ("restyle_e4e_irse50", "restyle_psp_irse50", "restyle_e4e_resnet34", "restyle_psp_resnet34")
CROP = 8  # feature-map corners kept (the golden crops are 16x16)


def trim_encoder(golden: Path, name: str) -> dict:
    io = load_file(str(golden / f"{name}_io.safetensors"))
    out = {}
    if name.startswith("restyle_psp"):
        return {k: io[k].contiguous() for k in ("codes", "small.codes")}
    for key, value in io.items():
        if key.endswith("crop_s0") or key == "feat16.s0" or key == "head00_conv0.s0":
            out[f"{key}@crop{CROP}"] = value[..., :CROP, :CROP].contiguous()
        elif key.startswith("small.") and key.split(".")[1] in ("input_layer", "stage1", "stage2"):
            out[f"{key}@crop{CROP}"] = value[..., :CROP, :CROP].contiguous()
        else:
            out[key] = value.contiguous()
    return out


def trim_loop(golden: Path) -> dict:
    io = load_file(str(golden / "restyle_loop_io.safetensors"))
    out = {"avg_image@crop64": io["avg_image"][..., :64, :64].contiguous(),
           "avg_image@mean": io["avg_image"].mean(dim=(-2, -1)),
           "landmarks_transform": io["landmarks_transform"].contiguous()}
    for key, value in io.items():
        if key.startswith("iter"):
            out[key] = value.contiguous()
    return out


def state_manifest(golden: Path, name: str) -> list[dict]:
    meta = json.loads((golden / f"{name}.json").read_text())
    return [{k: r[k] for k in ("key", "shape", "dtype", "owner_type", "sha256")} for r in meta["state_dict"]]


def main(argv: list[str]) -> int:
    golden = Path(argv[0]) if argv else HERE.parents[2].parent / "shared" / "golden"
    for name in ENCODERS:
        save_file(trim_encoder(golden, name), str(HERE / f"{name}.safetensors"))
    save_file(trim_loop(golden), str(HERE / "restyle_loop.safetensors"))
    for backbone, name in (("ir_se50", "restyle_e4e_irse50"), ("resnet34", "restyle_e4e_resnet34")):
        (HERE / f"state_{backbone}.json").write_text(json.dumps(state_manifest(golden, name), separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
