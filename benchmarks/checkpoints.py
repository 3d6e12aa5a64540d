"""Checkpoint loading: the safe NVIDIA-pickle reader against an unrestricted C unpickler, and our
safetensors / plain .pt paths against the bare cost of constructing the generator.

    python -m benchmarks checkpoints [--resolution 1024] [--config r|t] [--repeats 1]

Writes an NVIDIA-structured snapshot (G, G_ema, D) of random networks to a temporary folder, plus the
same generator as .safetensors and as a .pt state dict. Every case runs in a fresh process, so each
reports its own peak resident memory ("peak RSS"; "+load" is the rise above the RSS after imports).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import from the repository root instead
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import peak_rss_mb, set_threads

CASES = ("construct", "pkl_unpickle_c", "pkl_unpickle_safe", "pkl_load_generator", "safetensors", "pt")
DESCRIPTIONS = {
    "construct": "Generator(**kwargs) only (baseline: fixed cost of every load)",
    "pkl_unpickle_c": "C pickle.Unpickler, every global allowed (baseline for the safe reader)",
    "pkl_unpickle_safe": "SafeUnpickler, whole snapshot (G, G_ema, D)",
    "pkl_load_generator": "load_generator(.pkl): unpickle + build + strict load",
    "safetensors": "load_generator(.safetensors)",
    "pt": "load_generator(.pt state dict, kwargs inferred)",
}


def _permissive_unpickle(path: Path) -> Any:
    # What an unrestricted loader pays for unpickling, minus exec of module_src (mapped to the record).
    import pickle

    from videdit.checkpoints import safe_pickle

    class Permissive(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module == "torch_utils.persistence":
                return safe_pickle._reconstruct_persistent
            if module.startswith("dnnlib"):
                return dict
            return super().find_class(module, name)

    with open(path, "rb") as handle:
        return Permissive(handle).load()


def _run_case(case: str, folder: str, kwargs: dict, threads: int, queue: Any) -> None:
    from videdit.checkpoints import stylegan as ckpt
    from videdit.checkpoints.safe_pickle import load_pickle
    from videdit.networks.stylegan3 import Generator

    set_threads(threads)
    root = Path(folder)
    rss_before = peak_rss_mb()
    start = time.perf_counter()
    if case == "construct":
        Generator(**kwargs)
    elif case == "pkl_unpickle_c":
        _permissive_unpickle(root / "snapshot.pkl")
    elif case == "pkl_unpickle_safe":
        load_pickle(root / "snapshot.pkl")
    elif case == "pkl_load_generator":
        ckpt.load_generator(root / "snapshot.pkl")
    elif case == "safetensors":
        ckpt.load_generator(root / "g.safetensors")
    elif case == "pt":
        ckpt.load_generator(root / "g.pt")
    else:
        raise ValueError(case)
    seconds = time.perf_counter() - start
    queue.put((seconds, rss_before, peak_rss_mb()))


def _measure(case: str, folder: str, kwargs: dict, threads: int) -> tuple[float, float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run_case, args=(case, folder, kwargs, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks checkpoints", description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--config", choices=["r", "t"], default="r")
    parser.add_argument("--repeats", type=int, default=1, help="runs per case; the best time is reported")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from videdit.checkpoints import stylegan as ckpt
    from videdit.checkpoints.fixtures import write_snapshot_pickle
    from videdit.networks.discriminator import Discriminator
    from videdit.networks.stylegan3 import Generator, r_config_kwargs, t_config_kwargs

    set_threads(args.threads)
    g_kwargs = (r_config_kwargs if args.config == "r" else t_config_kwargs)(args.resolution)
    d_kwargs = dict(c_dim=0, img_resolution=args.resolution, img_channels=3, channel_base=32768, channel_max=512,
                    block_kwargs={"freeze_layers": 0}, epilogue_kwargs={"mbstd_group_size": 4})
    with tempfile.TemporaryDirectory(prefix="videdit-bench-ckpt-") as folder:
        root = Path(folder)
        t0 = time.perf_counter()
        torch.manual_seed(0)
        G_ema = Generator(**g_kwargs).eval()
        G = Generator(**g_kwargs).eval()
        D = Discriminator(**d_kwargs).eval()
        write_snapshot_pickle(root / "snapshot.pkl", {"G": G, "D": D, "G_ema": G_ema})
        ckpt.save_generator(G_ema, root / "g.safetensors")
        torch.save(G_ema.state_dict(), root / "g.pt")
        n_params = sum(p.numel() for p in G_ema.parameters())
        print(f"setup {time.perf_counter() - t0:.1f} s: StyleGAN3-{args.config.upper()} {args.resolution}px "
              f"generator {n_params / 1e6:.2f} M params; D {sum(p.numel() for p in D.parameters()) / 1e6:.2f} M")
        for name in ("snapshot.pkl", "g.safetensors", "g.pt"):
            print(f"  {name:14s} {(root / name).stat().st_size / 2**20:8.1f} MiB")
        del G, G_ema, D

        results = {}
        for case in CASES:
            runs = [_measure(case, folder, g_kwargs, args.threads) for _ in range(args.repeats)]
            results[case] = min(runs, key=lambda r: r[0])

    construct = results["construct"][0]
    c_unpickle = results["pkl_unpickle_c"][0]
    print(f"\n{'case':20s} {'time s':>8s} {'x construct':>11s} {'x C unpickle':>12s} {'peak RSS MiB':>12s} {'+load':>7s}")
    for case in CASES:
        seconds, before, peak = results[case]
        print(f"{case:20s} {seconds:8.2f} {seconds / construct:11.2f} {seconds / c_unpickle:12.2f} "
              f"{peak:12.0f} {peak - before:7.0f}   {DESCRIPTIONS[case]}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
