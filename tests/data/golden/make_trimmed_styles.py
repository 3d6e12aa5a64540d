"""Rebuild the trimmed StyleSpace / StyleCLIP references (sg3*_64_styles.*) from the full reference set.

    python tests/data/golden/make_trimmed_styles.py [FULL_GOLDEN_DIR]

Kept whole: transform_inv, every styles.* / s_std.* / direction.* tensor, delta_i and the JSON. ws keeps its
first entry (`ws.w0`; the 16 entries are equal: one w per sample, truncated everywhere). Images keep a 32x32
centre crop of all three samples (`<name>.c32`); img_w is left out (img_from_styles equals it exactly). delta_i_c keeps 24 rows (`delta_i_c.rows`, at
`delta_i_c.index`): the row of largest |r_c| (so the subset has the full set's normaliser), the 8 rows just
above and the 7 just below beta (the threshold), and 8 more spread over the channels.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent


def pick_rows(delta_i_c: torch.Tensor, delta_i: torch.Tensor, beta: float) -> torch.Tensor:
    r = (delta_i_c @ delta_i).abs()
    order = torch.argsort(r)
    above = order[r[order] >= beta][:8]
    below = order[r[order] < beta][-7:]
    spread = torch.linspace(0, len(r) - 1, 8).round().long()
    rows = torch.cat([r.argmax().reshape(1), above, below, spread]).unique()
    return rows.sort().values


def main(argv: list[str]) -> int:
    default = Path(os.environ.get("VIDEDIT_GOLDEN", HERE.parents[3] / "shared" / "golden"))
    src = Path(argv[0]) if argv else default
    for name in ("sg3t_64", "sg3r_64"):
        meta = json.loads((src / f"{name}_styles.json").read_text())
        full = load_file(src / f"{name}_styles.safetensors")
        out = {}
        for key, value in full.items():
            if key == "ws":
                assert bool((value == value[:, :1]).all()), "ws entries differ: keep them whole"
                out["ws.w0"] = value[:, 0].contiguous()
            elif key == "img_w":
                continue
            elif key.startswith("img_"):
                out[key + ".c32"] = value[:, :, 16:48, 16:48].contiguous()
            elif key == "delta_i_c":
                rows = pick_rows(value, full["delta_i"], meta["styleclip"]["beta"])
                out["delta_i_c.index"] = rows
                out["delta_i_c.rows"] = value[rows].contiguous()
            elif key != "z":
                out[key] = value
        save_file(out, HERE / f"{name}_styles.safetensors")
        shutil.copyfile(src / f"{name}_styles.json", HERE / f"{name}_styles.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
