"""Render speed and memory: `python -m benchmarks render [--configs r256,r1024] [--frames 4] ...`.

Each measurement runs in its own child process. Per configuration: seconds per rendered frame of the
whole stage (`run_render`: synthesis, PNG frames, H.264 videos with audio, side-by-side) against the
baseline of a bare `G.synthesis` call per frame timed in the same process, and the peak resident
memory. The length check renders the same generator over a short and a long clip (30 and 300 frames
by default) and compares the peak memory of the two runs: it must not grow with the video's length.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import from the repository root instead
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import current_rss_mb, peak_rss_mb, set_threads
from benchmarks.tune import CONFIGS, generator_kwargs, make_video_inputs, run_child, warm_up_ops


def child(spec: dict) -> dict:
    import numpy as np
    import torch

    from videdit import records
    from videdit.networks.stylegan3 import Generator
    from videdit.stages.render import RenderSettings, run_render
    from videdit.tuning.data import inverse_transforms
    from videdit.synthetic import make_clip

    set_threads(spec["threads"])
    warm_up_ops(spec["device"])
    torch.manual_seed(0)
    G = Generator(**generator_kwargs(spec["config"])).eval().to(spec["device"])
    n = spec["frames"]
    with tempfile.TemporaryDirectory(prefix="videdit-bench-render-") as tmp:
        root = Path(tmp)
        align, latents, matrix = make_video_inputs(root, G, n)
        smooth = records.RunFolder(root).stage("smooth")
        smooth.mkdir()
        ws = records.load_latents(latents)
        records.save_latents(smooth / records.latents_name("recon"), ws)
        direction = np.random.default_rng(1).standard_normal(ws.shape[-1]).astype(np.float32)
        records.save_latents(smooth / records.latents_name("edit"), ws + 3 * direction / np.linalg.norm(direction))
        records.TransformsRecord.load(align).save(smooth / records.TRANSFORMS)
        clip = make_clip(root / "source.mp4", n_frames=n, size=(64, 64), fps=25)
        # Baseline: bare synthesis of one render batch (after a warm-up call for the small configs).
        count = min(n, spec["batch_size"])
        ws_batch = torch.from_numpy(ws[:count]).to(spec["device"])
        inv_batch = inverse_transforms(matrix[:count]).to(spec["device"])
        with torch.no_grad():
            if spec["warmup"]:  # same shape as the timed call: some kernels set up per shape
                G.synthesis(ws_batch, transform=inv_batch)
            t0 = time.perf_counter()
            G.synthesis(ws_batch, transform=inv_batch)
            baseline_s = (time.perf_counter() - t0) / count
        del ws  # what the render holds is what is measured
        rss_before = peak_rss_mb()
        failure: list[BaseException] = []

        def render() -> None:
            try:
                run_render(G, smooth, ["recon", "edit"], root / "render", RenderSettings(batch_size=spec["batch_size"]),
                           source_video=clip.path, align_dir=align, device=spec["device"])
            except BaseException as err:  # reported by the main thread
                failure.append(err)

        # Render in a thread; the main thread samples the resident memory against the frames written so far,
        # which shows whether memory levels off (encoder buffers filling) or keeps growing with the length.
        t0 = time.perf_counter()
        worker = threading.Thread(target=render)
        worker.start()
        trace: list[tuple[int, float]] = []
        while worker.is_alive():
            worker.join(timeout=1.0)
            done = sum(1 for _ in os.scandir(root / "render" / "edit")) if (root / "render" / "edit").is_dir() else 0
            trace.append((done, current_rss_mb()))
        seconds = time.perf_counter() - t0
        if failure:
            raise failure[0]
    return {"config": spec["config"], "resolution": G.img_resolution, "frames": n, "keys": 2,
            "frame_s": seconds / (2 * n), "baseline_s": baseline_s, "peak_rss_mb": peak_rss_mb(),
            "peak_rss_before_render_mb": rss_before, "rss_trace": _thin(trace)}


def _thin(trace: list[tuple[int, float]], points: int = 12) -> list[tuple[int, float]]:
    """About `points` (frames written, RSS MB) samples spread over the run, plus the largest."""
    if len(trace) <= points:
        return trace
    step = len(trace) / points
    kept = [trace[int(i * step)] for i in range(points)] + [trace[-1], max(trace, key=lambda t: t[1])]
    return sorted(set(kept))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks render", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="r256,r1024", help=f"comma list of {', '.join(CONFIGS)} ('' to skip)")
    parser.add_argument("--frames", type=int, default=2, help="frames per config (1024 configs: --frames-1024)")
    parser.add_argument("--frames-1024", type=int, default=1)
    parser.add_argument("--length-config", default="tiny256", help="generator for the memory-vs-length check ('' to skip)")
    parser.add_argument("--lengths", default="30,300")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    base = {"batch_size": args.batch_size, "threads": args.threads, "device": args.device}
    speed = []
    for config in [c for c in args.configs.split(",") if c]:
        frames = args.frames_1024 if config.endswith("1024") else args.frames
        print(f"render bench: {config}, {frames} frame(s) x 2 keys on {args.device} ...", file=sys.stderr, flush=True)
        speed.append(run_child("render", dict(base, config=config, frames=frames, warmup=config.startswith("tiny"))))
    length = []
    if args.length_config:
        for n in (int(v) for v in args.lengths.split(",")):
            print(f"render bench: {args.length_config}, {n} frames x 2 keys (memory vs length) ...", file=sys.stderr, flush=True)
            length.append(run_child("render", dict(base, config=args.length_config, frames=n,
                                                   warmup=args.length_config.startswith("tiny"))))

    rows = speed + length
    print(f"{'config':8s} {'frames':>6s} {'s/frame':>8s} {'bare G s':>8s} {'ratio':>6s} {'peak RSS MB':>11s}")
    for r in rows:
        if "error" in r:
            print(f"{r['config']:8s} failed: {r['error']}")
            continue
        print(f"{r['config']:8s} {r['frames']:6d} {r['frame_s']:8.3f} {r['baseline_s']:8.3f} "
              f"{r['frame_s'] / r['baseline_s']:6.2f} {r['peak_rss_mb']:11.0f}")
    ok = [r for r in length if "error" not in r]
    if len(ok) >= 2:
        short, long = ok[0], ok[-1]
        print(f"peak memory {long['frames']} vs {short['frames']} frames: {long['peak_rss_mb']:.0f} MB vs "
              f"{short['peak_rss_mb']:.0f} MB (ratio {long['peak_rss_mb'] / short['peak_rss_mb']:.3f}, "
              f"+{long['peak_rss_mb'] - short['peak_rss_mb']:.0f} MB)")
    for r in ok:
        print(f"{r['config']} {r['frames']} frames: resident MB by frames written (edit key): "
              + ", ".join(f"{f}:{m:.0f}" for f, m in r["rss_trace"]))
    if args.json:
        print(json.dumps(rows))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
