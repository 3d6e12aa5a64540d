"""Benchmark of `videdit eval` on CPU: `python -m benchmarks eval [--size 512] [--frames 8]`.

A synthetic run folder is written (the astronaut photo's face panning, crops of --size px, a blurred
"reconstruction" and a noisy "edit"), then timed per frame:

  ms-ssim ref   pytorch-msssim (float64, the reference implementation: the baseline)
  ms-ssim       videdit's OpenCV MS-SSIM (same definition; the difference is printed)
  lpips         AlexNet LPIPS at 256 and at full size (random backbone: same cost as the real one)
  face          dlib detection + 68 landmarks + face descriptor of one image
  flow          forward + backward Farneback flow of one frame pair at 256
  evaluate_run  the whole evaluation (2 outputs), per frame, plots and metrics.json included

Printed: milliseconds per call, the speed-up of MS-SSIM over the baseline, and peak memory (RSS).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import from the repository root instead
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import best_time, peak_rss_mb, set_threads
from videdit import records


def synthetic_video(frames: int, size: int) -> list[np.ndarray]:
    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.astronaut())
    video = []
    for t in range(frames):
        cx, cy = 220 + 1.5 * t, 135 + 0.75 * t
        moved = image.rotate(0.5 * t, center=(cx, cy), resample=Image.BICUBIC)
        crop = moved.crop((int(cx) - 128, int(cy) - 128, int(cx) + 128, int(cy) + 128))
        video.append(np.asarray(crop.resize((size, size), Image.BICUBIC)))
    return video


def write_run(run: Path, video: list[np.ndarray]) -> None:
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(0)
    outputs = {
        "align/unaligned": video,
        "render/reconstruction": [np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(1.5))) for f in video],
        "render/noise_+1": [np.clip(f + rng.normal(0, 6, f.shape), 0, 255).astype(np.uint8) for f in video],
    }
    for folder, images in outputs.items():
        (run / folder).mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(run / folder / records.frame_name(i))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks eval")
    parser.add_argument("--size", type=int, default=512, help="crop size in pixels")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.size < 161:  # the reference MS-SSIM's 4 downsamplings of an 11-px window
        parser.error(f"--size must be at least 161 px, got {args.size}")

    import torch

    set_threads(args.threads)
    from videdit.evaluate import metrics, temporal
    from videdit.evaluate.report import EvalSettings, evaluate_run, load_models

    video = synthetic_video(args.frames, args.size)
    first, second = video[0], video[1]
    noisy = np.clip(first + np.random.default_rng(1).normal(0, 10, first.shape), 0, 255).astype(np.uint8)
    rows = []

    try:
        from pytorch_msssim import ms_ssim as reference_ms_ssim
    except ImportError:
        reference_ms_ssim = None
    for size in (256, args.size):
        a, b = metrics.resize_square(first, size), metrics.resize_square(noisy, size)
        ours_ms = 1000 * best_time(lambda: metrics.ms_ssim(a, b), args.repeats, warmup=True)
        value = metrics.ms_ssim(a, b)
        if reference_ms_ssim is not None:
            x = torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].double() / 255
            y = torch.from_numpy(np.array(b)).permute(2, 0, 1)[None].double() / 255
            ref_ms = 1000 * best_time(lambda: reference_ms_ssim(x, y, data_range=1.0), args.repeats, warmup=True)
            diff = abs(value - reference_ms_ssim(x, y, data_range=1.0).item())
            rows.append((f"ms-ssim ref @{size}", ref_ms, "baseline"))
            rows.append((f"ms-ssim @{size}", ours_ms, f"x{ref_ms / ours_ms:.1f} faster, |diff| {diff:.1e}"))
        else:
            rows.append((f"ms-ssim @{size}", ours_ms, "pytorch-msssim not installed: no baseline"))

    settings = EvalSettings(lpips_random_backbone=True)
    start = time.perf_counter()
    models = load_models(settings)
    rows.append(("load models", 1000 * (time.perf_counter() - start), "dlib + LPIPS, once per session"))
    scorer = metrics.ImageMetrics(models.lpips)
    for size in (256, args.size):
        a, b = metrics.resize_square(first, size), metrics.resize_square(noisy, size)
        rows.append((f"lpips @{size}", 1000 * best_time(lambda: scorer.lpips(a, b), args.repeats, warmup=True), ""))
    rows.append(("face", 1000 * best_time(lambda: models.analyzer.observe(first), args.repeats, warmup=True), "detect + 68 landmarks + descriptor"))
    small = [metrics.resize_square(f, 256) for f in (first, second)]
    rows.append(("flow @256", 1000 * best_time(lambda: temporal.backward_flow(*small), args.repeats, warmup=True), "forward + backward"))

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "bench.videdit"
        write_run(run, video)
        start = time.perf_counter()
        result = evaluate_run(run, settings=settings, models=models)
        per_frame = 1000 * (time.perf_counter() - start) / args.frames
    rows.append(("evaluate_run", per_frame, f"per frame, {len(result['outputs'])} outputs, {args.frames} frames"))

    print(f"videdit eval benchmark: crops {args.size}px, {args.frames} frames, {args.threads} torch threads, CPU")
    width = max(len(r[0]) for r in rows)
    for name, ms, note in rows:
        print(f"  {name.ljust(width)}  {ms:10.1f} ms  {note}")
    print(f"  peak RSS {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
