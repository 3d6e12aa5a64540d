"""Benchmark of the encode stage: frames/s and peak memory against the batch size.

    python -m benchmarks encode [--frames 16] [--batch-sizes 1,4,16] [--n-iters 3]
                                [--backbone ir_se50] [--generator tiny|t|r] [--resolution 256]
                                [--device cpu] [--threads 2]

Runs `run_encode` on a synthetic align folder (random crops, random transforms) with a full-size
ReStyle encoder (deterministic random weights) and a generator of the given resolution. The first
batch size is the baseline: every other one is printed as a ratio of its frames/s. A warm-up run
(1 frame) comes first and is not timed. Also times the encoder and the generator alone at each
batch size, so the split of the stage's time is visible.

Peak memory: on CUDA, torch's peak allocation during the run; on the CPU, the peak resident set size
of this process during the run above what it was just before (sampled every 5 ms from /proc).
Generators: `tiny` = 16-channel StyleGAN3 at the given resolution (cheap, so the encoder dominates);
`t` / `r` = the official T / R configurations (very slow on a CPU).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import from the repository root instead
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RSSPoller, cuda_peak_mb, set_threads, sync
from videdit import records


def _write_align_folder(root: Path, n_frames: int, size: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / records.ALIGNED).mkdir(parents=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    matrices = []
    for i in range(n_frames):
        base = np.stack([np.sin(7 * xx + i), np.cos(5 * yy - 0.5 * i), np.sin(3 * (xx + yy))], axis=-1)
        pixels = np.clip((base + rng.normal(0, 0.1, base.shape) + 1) * 127.5, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / records.ALIGNED / records.frame_name(i), compress_level=1)
        angle = math.radians(rng.uniform(-10, 10))
        c, s = math.cos(angle), math.sin(angle)
        matrices.append([[c, s, rng.uniform(-0.05, 0.05)], [-s, c, rng.uniform(-0.05, 0.05)], [0, 0, 1]])
    records.TransformsRecord(matrix=np.asarray(matrices, np.float32)).save(root / records.TRANSFORMS)


def _build_generator(kind: str, resolution: int):
    from videdit.networks import stylegan3 as sg3

    kwargs = {
        "tiny": lambda: sg3.tiny_generator_kwargs(resolution),
        "t": lambda: sg3.t_config_kwargs(resolution),
        "r": lambda: sg3.r_config_kwargs(resolution),
    }[kind]()
    return sg3.Generator(**kwargs).eval()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks encode", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch-sizes", default="1,4,16", help="comma-separated; the first is the baseline")
    parser.add_argument("--n-iters", type=int, default=3)
    parser.add_argument("--backbone", choices=("ir_se50", "resnet34"), default="ir_se50")
    parser.add_argument("--generator", choices=("tiny", "t", "r"), default="tiny")
    parser.add_argument("--resolution", type=int, default=256, help="generator resolution (= crop size)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--skip-parts", action="store_true", help="do not time encoder and generator alone")
    args = parser.parse_args(argv)

    import torch

    from videdit.networks.encoders import build_encoder_on_meta, reference_state_dict
    from videdit.stages.encode import EncodeSettings, run_encode

    set_threads(args.threads)
    device = torch.device(args.device)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]

    encoder = build_encoder_on_meta("e4e", args.backbone)
    encoder.load_state_dict(reference_state_dict(encoder), strict=True, assign=True)
    encoder = encoder.eval().to(device)
    torch.manual_seed(0)
    generator = _build_generator(args.generator, args.resolution).to(device)
    latent_avg = generator.mapping.w_avg.clone()
    n_params = sum(p.numel() for p in encoder.parameters()) / 1e6
    print(f"encode stage benchmark: encoder e4e/{args.backbone} ({n_params:.1f} M params, random weights), "
          f"generator {args.generator}-{args.resolution} ({sum(p.numel() for p in generator.parameters()) / 1e6:.2f} M params), "
          f"{args.frames} frames, {args.n_iters} iterations, device {device}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")

    rows = []
    with tempfile.TemporaryDirectory(prefix="videdit-bench-encode-") as tmp:
        tmp = Path(tmp)
        _write_align_folder(tmp / "align", args.frames, args.resolution)
        warm = EncodeSettings(n_iters=1, batch_size=1, device=str(device))
        _write_align_folder(tmp / "warm", 1, args.resolution)
        run_encode(tmp / "warm", tmp / "warm_out", encoder, generator, latent_avg, warm)

        for batch in batch_sizes:
            settings = EncodeSettings(n_iters=args.n_iters, batch_size=batch, device=str(device))
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            with RSSPoller() as memory:
                start = time.perf_counter()
                run_encode(tmp / "align", tmp / f"out_b{batch}", encoder, generator, latent_avg, settings)
                sync(device)
                seconds = time.perf_counter() - start
            peak = cuda_peak_mb(device) if device.type == "cuda" else memory.increase_mb
            row = {"batch": batch, "seconds": seconds, "fps": args.frames / seconds, "peak_mib": peak}

            if not args.skip_parts:
                # The same work split by network: n_iters encoder passes and n_iters - 1 renders per frame.
                x = torch.zeros(batch, 6, 256, 256, device=device)
                ws = latent_avg.expand(batch, generator.num_ws, -1).contiguous()
                eye = torch.eye(3, device=device)
                with torch.inference_mode():
                    sync(device)
                    start = time.perf_counter()
                    encoder(x)
                    sync(device)
                    row["encoder_s_per_frame"] = (time.perf_counter() - start) / batch
                    start = time.perf_counter()
                    generator.synthesis(ws, transform=eye)
                    sync(device)
                    row["render_s_per_frame"] = (time.perf_counter() - start) / batch
            rows.append(row)
            same = np.allclose(records.load_latents(tmp / f"out_b{batch}" / records.LATENTS),
                               records.load_latents(tmp / f"out_b{batch_sizes[0]}" / records.LATENTS), atol=1e-4)
            row["same_latents"] = same

    base = rows[0]
    memory_label = "peak alloc MiB" if device.type == "cuda" else "peak RSS +MiB"
    print(f"{'batch':>5} {'s total':>9} {'frames/s':>9} {'x base':>7} {memory_label:>15} {'enc s/frame':>12} {'gen s/frame':>12}  latents = base")
    for row in rows:
        print(f"{row['batch']:>5} {row['seconds']:>9.2f} {row['fps']:>9.3f} {row['fps'] / base['fps']:>7.2f} "
              f"{row['peak_mib']:>15.0f} {row.get('encoder_s_per_frame', float('nan')):>12.3f} "
              f"{row.get('render_s_per_frame', float('nan')):>12.3f}  {row['same_latents']}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
