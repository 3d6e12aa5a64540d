"""One video's frame-wise stages on a local Ray cluster, 2 workers against 1: `python -m benchmarks ray_shards
[--frames 16] [--repeats 1]`.

One synthetic clip with small stand-in networks (64 px generator, ResNet-34 encoder at 64 px), one torch
thread everywhere. First the whole pipeline runs here without Ray (the local baseline, and the serial
stages: tune, edit, smooth). Then, on one 2-CPU Ray cluster (`ray.init(num_cpus=2)`), align (its
landmark pass whole on the driver, its crops in parts), encode, render and composite run again in a copy
of that run folder with `--shard-frames`: once as one part (1 worker) and once as one part per worker
(2 workers), alternating when repeated. Reported: each stage's seconds, the merges (the driver's serial end of each sharded stage: joining latents, encoding
the crop videos and the final video once), the wall time of the frame-wise stages, the ratio 1 worker /
2 workers, whether the outputs were byte-identical to the local run's, and the load average (2 shared
cores: other jobs slow both runs, not equally).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import from the repository root instead
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import markdown_table, ratio

FRAME_WISE = ("align", "encode", "render", "composite")  # align: its landmark pass whole, then its crops in parts
SERIAL = ("tune", "edit", "smooth")


def _overrides(args) -> dict:
    return {
        "align.crop_size": 64,
        "encode.n_iters": 1,
        "encode.batch_size": 2,
        "encode.fit_memory": False,
        "encode.input_size": 64,
        "tune.steps": args.steps,
        "tune.batch_size": 2,
        "tune.allow_l2_only": True,
        "tune.lpips_weight": 0.0,
        "render.batch_size": 2,
        "render.fit_memory": False,
        "edit.direction": "age",
        "edit.strengths": [3.0],
    }


def _manifest(run_dir: Path, stage: str) -> dict:
    from videdit.layout import MANIFEST

    return json.loads((run_dir / stage / MANIFEST).read_text())


def _digests(run_dir: Path) -> dict[str, str]:
    out = {}
    for stage in FRAME_WISE:
        for p in sorted((run_dir / stage).rglob("*")):
            if p.is_file() and p.name != "manifest.json":
                out[f"{stage}/{p.relative_to(run_dir / stage)}"] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ray_shards", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2, help="PTI steps (the serial tune stage)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)

    import ray
    import torch

    from videdit.engines.ray_engine import run_videos_ray
    from videdit.pipeline import Pipeline, StandInModels
    from videdit.synthetic import make_clip

    torch.set_num_threads(1)  # what a 1-CPU Ray task gets: the same arithmetic as the workers
    folder = Path(tempfile.mkdtemp(prefix="vshards"))
    try:
        clip = make_clip(folder / "clip.mp4", n_frames=args.frames, size=(256, 224)).path
        pipe = Pipeline.from_preset("default", overrides=_overrides(args), quiet=True,
                                    models=StandInModels(resolution=64), estimate_time=False)
        load_before = os.getloadavg()
        local = pipe.run(clip, folder / "local")
        if local.status != "ok":
            print(f"local run failed: {local.error}")
            return 1
        serial = {s: _manifest(local.run_dir, s)["seconds"] for s in SERIAL}
        local_frame_wise = {s: _manifest(local.run_dir, s)["seconds"] for s in FRAME_WISE}
        reference = _digests(local.run_dir)

        temp_dir = tempfile.mkdtemp(prefix="vray")
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=80 * 1024**2,
                 _temp_dir=temp_dir, logging_level=logging.WARNING)
        cluster_start = time.perf_counter() - t0
        rows, walls = [], {1: [], 2: []}
        try:
            # Two worker processes started and their imports done before anything is timed.
            warm = ray.remote(num_cpus=1)(lambda: __import__("videdit.wiring") and os.getpid())
            ray.get([warm.remote() for _ in range(2)])
            for repeat in range(args.repeats):
                for workers in (1, 2) if repeat % 2 == 0 else (2, 1):
                    run_dir = folder / f"ray{workers}_{repeat}"
                    shutil.copytree(local.run_dir, run_dir)
                    for stage in FRAME_WISE:
                        shutil.rmtree(run_dir / stage)
                    for published in local.outputs:
                        (run_dir / published.name).unlink()
                    t0 = time.perf_counter()
                    (result,) = run_videos_ray(pipe, [clip], run_dirs=[run_dir], cpus_per_video=1,
                                               shard_frames=args.frames if workers == 1 else "auto", echo=None)
                    wall = time.perf_counter() - t0
                    if result.status != "ok":
                        print(f"ray run failed: {result.error}")
                        return 1
                    walls[workers].append(wall)
                    stage_s = {s: _manifest(run_dir, s)["seconds"] for s in FRAME_WISE}
                    merge_s = {s: _manifest(run_dir, s).get("merge_seconds", 0.0) for s in FRAME_WISE}
                    same = _digests(run_dir) == reference
                    rows.append([f"ray, {workers} worker{'s' * (workers > 1)}", *(f"{stage_s[s]:.1f}" for s in FRAME_WISE),
                                 f"{sum(merge_s.values()):.1f}", f"{wall:.1f}", "yes" if same else "NO"])
        finally:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(f"{args.frames} frames, 256x224, 64 px stand-in networks, 1 torch thread per process; "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; cluster start {cluster_start:.1f} s\n")
    local_row = ["local, no Ray (baseline)", *(f"{local_frame_wise[s]:.1f}" for s in FRAME_WISE), "-",
                 f"{sum(local_frame_wise.values()):.1f}", "-"]
    print(markdown_table(["run", *(f"{s} s" for s in FRAME_WISE), "merges s", "frame-wise wall s", "bytes = local"],
                         [local_row] + rows))
    one, two = min(walls[1]), min(walls[2])
    print(f"\nframe-wise stages, 1 worker / 2 workers (best of {args.repeats}): {ratio(one, two):.2f}x")
    print("serial part (local run, seconds): " + ", ".join(f"{s} {serial[s]:.1f}" for s in SERIAL)
          + f"; total {sum(serial.values()):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
