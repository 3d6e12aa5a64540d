"""Benchmark of the align stage on CPU: `python -m benchmarks align [options]`.

For each input size (default 480p and 1080p) a short clip of a real portrait moving about
(videdit.synthetic.make_clip, the face scaled with the frame) is written, then timed:

  decode       reading the frames only (VideoReader): the floor for any stage;
  naive lm     landmarks the simple way: dlib's detector on every full-resolution frame, then the
               shape predictor (the baseline);
  videdit lm   landmarks as the stage finds them: detection on a downscaled frame or around the last
               face, the shape predictor on the full-resolution frame;
  stage        the whole align stage (landmarks, two crops per frame written as PNG, preview video).

A still clip (the photo not moving, only codec noise changing between frames) then gives the
landmark jitter: the spread of r and t, whose true values are all zero, without and with quad
smoothing (align.smooth_quads).

Printed: frames/s for each, the speed-up of videdit over naive landmarks, how far apart the two sets
of landmarks are (mean px), and peak memory (RSS of this process, and the numpy/Python peak of the
stage run by tracemalloc).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import from the repository root instead
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from benchmarks.common import peak_rss_mb

SIZES = {"480": (854, 480), "720": (1280, 720), "1080": (1920, 1080)}


def _landmarks_pass(path: Path, backend, tracked: bool) -> tuple[float, np.ndarray]:
    """Seconds and landmarks [N, 68, 2] (NaN where none) of one pass over the clip."""
    from videdit.face.landmarks import FaceTracker
    from videdit.io import VideoReader

    tracker = FaceTracker()
    points = []
    start = time.perf_counter()
    for frame in VideoReader(path):
        faces = backend.find_faces(frame.image, near=tracker.last_box if tracked and tracker.missed == 0 else None)
        chosen = tracker.choose(faces)
        points.append(chosen.landmarks if chosen is not None else np.full((68, 2), np.nan))
    return time.perf_counter() - start, np.asarray(points)


def bench_size(label: str, size: tuple[int, int], frames: int, crop_size: int, workdir: Path, backend) -> dict:
    from videdit.io import VideoReader
    from videdit.stages.align import AlignSettings, run_align
    from videdit.synthetic import make_clip

    clip = make_clip(workdir / f"clip_{label}.mp4", n_frames=frames, size=size, scale=size[1] / 480, audio=False)

    start = time.perf_counter()
    n_decoded = sum(1 for _ in VideoReader(clip.path))
    decode_s = time.perf_counter() - start

    naive_backend = type(backend).__new__(type(backend))
    naive_backend.__dict__.update(backend.__dict__, detect_max_side=10**6)  # never downscale
    naive_s, naive_points = _landmarks_pass(clip.path, naive_backend, tracked=False)
    fast_s, fast_points = _landmarks_pass(clip.path, backend, tracked=True)
    both = np.isfinite(naive_points[:, 0, 0]) & np.isfinite(fast_points[:, 0, 0])
    difference = float(np.abs(naive_points[both] - fast_points[both]).mean()) if both.any() else float("nan")

    tracemalloc.start()
    start = time.perf_counter()
    result = run_align(clip.path, workdir / f"align_{label}", AlignSettings(crop_size=crop_size), backend=backend)
    stage_s = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "label": label, "size": size, "frames": n_decoded, "decode_fps": n_decoded / decode_s,
        "naive_fps": frames / naive_s, "fast_fps": frames / fast_s, "stage_fps": frames / stage_s,
        "naive_found": int(np.isfinite(naive_points[:, 0, 0]).sum()), "fast_found": result.n_faces_found,
        "landmark_diff_px": difference, "traced_peak_mb": traced_peak / 2**20, "rss_mb": peak_rss_mb(),
    }


def bench_jitter(frames: int, workdir: Path, backend, windows=(0, 5)) -> list[dict]:
    """Spread of the transforms of a still 480p clip (truth: r = 0, t = 0 in every frame)."""
    from videdit.face.alignment import ffhq_quad, frame_transform, smooth_quads
    from videdit.synthetic import CameraPath, make_clip

    size = SIZES["480"]
    still = CameraPath(np.zeros(frames), np.zeros((frames, 2)), centre=(255.0, 110.0))
    clip = make_clip(workdir / "still.mp4", n_frames=frames, size=size, camera=still, audio=False)
    _, points = _landmarks_pass(clip.path, backend, tracked=True)
    points = points[np.isfinite(points[:, 0, 0])]
    rows = []
    for window in windows:
        quads = smooth_quads(np.stack([ffhq_quad(p) for p in points]), window)
        transforms = [frame_transform(p, q, quads[0], 1024) for p, q in zip(points, quads)]
        rotation = np.array([t.rotation_deg for t in transforms])
        translation = np.stack([t.translation for t in transforms])
        rows.append({"window": window, "frames": len(points), "rotation_std": float(rotation.std()),
                     "rotation_max": float(np.abs(rotation).max()),
                     "translation_std": float(translation.std(axis=0).max()),
                     "translation_max": float(np.abs(translation).max())})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks align", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="480,1080", help="comma list of 480, 720, 1080")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--crop-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (FAN only)")
    args = parser.parse_args(argv)

    from videdit.face.landmarks import DlibBackend

    start = time.perf_counter()
    backend = DlibBackend()
    load_s = time.perf_counter() - start
    print(f"align benchmark (CPU): {args.frames} frames per size, crops {args.crop_size}px, dlib backend "
          f"(loading the models: {load_s:.1f} s, once per process)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="videdit-bench-align-") as tmp:
        for label in args.sizes.split(","):
            label = label.strip().rstrip("p")
            if label not in SIZES:
                print(f"unknown size {label!r}; choose from {', '.join(SIZES)}", file=sys.stderr)
                return 2
            rows.append(bench_size(label, SIZES[label], args.frames, args.crop_size, Path(tmp), backend))
        jitter = bench_jitter(args.frames, Path(tmp), backend)

    print(f"{'input':>7} {'decode':>9} {'naive lm':>9} {'videdit lm':>10} {'speed-up':>8} {'stage':>8} "
          f"{'lm diff':>8} {'found n/v':>9} {'traced':>8} {'RSS':>8}")
    for r in rows:
        print(f"{r['label'] + 'p':>7} {r['decode_fps']:>7.1f}/s {r['naive_fps']:>7.2f}/s {r['fast_fps']:>8.2f}/s "
              f"{r['fast_fps'] / r['naive_fps']:>7.1f}x {r['stage_fps']:>6.2f}/s {r['landmark_diff_px']:>6.2f}px "
              f"{r['naive_found']:>4}/{r['fast_found']:<4} {r['traced_peak_mb']:>6.0f}MB {r['rss_mb']:>6.0f}MB")
    print("frames/s; speed-up = videdit lm / naive lm; lm diff = mean |landmark difference| between the two; "
          "traced = numpy/Python peak during the stage; RSS = process peak so far")
    print("jitter on a still 480p clip (true r = 0, t = 0): smooth_quads window, spread of r (deg) and t (crop widths)")
    for j in jitter:
        print(f"  window {j['window']}: r std {j['rotation_std']:.3f} max {j['rotation_max']:.3f} deg; "
              f"t std {j['translation_std']:.5f} max {j['translation_max']:.5f} ({j['frames']} frames)")
    for r in rows:
        print(f"BENCH align {r['label']}p stage_fps={r['stage_fps']:.2f} landmarks_fps={r['fast_fps']:.2f} "
              f"naive_landmarks_fps={r['naive_fps']:.2f} speedup={r['fast_fps'] / r['naive_fps']:.2f} "
              f"decode_fps={r['decode_fps']:.1f} crop={args.crop_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
