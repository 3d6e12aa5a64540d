"""Benchmark of the composite stage: `python -m benchmarks composite [options]`.

1. Cost per frame of compositing a 1024 px render into a 1080p frame (face box ~500 px), against a
   baseline that warps the render over the whole frame and pastes the box with a hard edge (what
   the published code's approach amounts to, plus the warp back); PNG decoding and H.264 encoding of
   one frame are timed too, for scale.
2. Quality on the demo clip (videdit.synthetic.make_clip, the clip `videdit demo` makes) after the real
   align stage: the unaligned crops themselves are the "renders" (identity), so the composite should
   give back the source: the error is compared with the codec's own error (the source frames just
   re-encoded). A colour-drifted render shows what colour matching does to the seam. The seam factor
   is the gradient energy across the mask border in the output over the same in the source.
3. Peak memory (RSS) of the stage on a short and a 4x longer clip, each in a fresh process.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import from the repository root instead
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import best_time, child_env, peak_rss_mb, set_threads
from videdit import records


def _template_landmarks(geometry) -> np.ndarray:
    """A plausible 68-point face in crop coordinates (u, v in [0, 1]) mapped to the frame."""
    uv = np.zeros((68, 2))
    t = np.linspace(0.08 * np.pi, 0.92 * np.pi, 17)
    uv[0:17] = np.stack([0.5 - 0.3 * np.cos(t), 0.42 + 0.38 * np.sin(t)], -1)
    uv[17:27] = np.stack([np.linspace(0.26, 0.74, 10), np.full(10, 0.36)], -1)
    uv[27:36] = [0.5, 0.5]
    uv[36:42] = [0.38, 0.43]
    uv[42:48] = [0.62, 0.43]
    uv[48:68] = [0.5, 0.66]
    uv[48], uv[54] = [0.41, 0.66], [0.59, 0.66]
    return geometry.to_source(uv)


def bench_speed(size=(1920, 1080), box_px=500.0, resolution=1024, repeats=3) -> dict:
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from videdit import compositing as C
    from videdit.io.writer import VideoWriter

    width, height = size
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    centre = np.array([width * 0.5 + 13.3, height * 0.45 + 7.7])
    angle = np.deg2rad(8.0)
    x = np.array([np.cos(angle), np.sin(angle)]) * box_px / 2
    y = np.array([-x[1], x[0]])
    quad = np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])
    geometry = C.CropGeometry.from_quad(quad)
    render = np.ascontiguousarray(C.crop_from_frame(frame, quad, resolution).clip(0, 255).astype(np.uint8))
    landmarks = _template_landmarks(geometry)

    def baseline():
        # Whole-frame inverse warp and a hard-edged box paste.
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
        uv = geometry.to_crop(np.stack([xs, ys], -1))
        grid = torch.from_numpy((2.0 * uv - 1.0).astype(np.float32))[None]
        image = torch.from_numpy(render).permute(2, 0, 1)[None].float()
        warped = F.grid_sample(image, grid, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
        inside = ((uv >= 0) & (uv <= 1)).all(-1)
        out = frame.copy()
        out[inside] = warped[inside].clip(0, 255).astype(np.uint8)
        return out

    def ours(mask: str, color_match: bool):
        def run():
            blend_mask = C.make_blend_mask(frame.shape[:2], quad, resolution, landmarks=landmarks, mask=mask)
            return C.composite_frame(frame, render, quad, resolution, blend_mask, color_match=color_match)
        return run

    png_path = Path(tempfile.mkdtemp()) / "render.png"
    Image.fromarray(render).save(png_path, compress_level=1)

    def decode_png():
        with Image.open(png_path) as image:
            np.asarray(image.convert("RGB"))

    timings = {
        "baseline_full_frame_paste": best_time(baseline, repeats),
        "landmarks_color_match": best_time(ours("landmarks", True), repeats),
        "landmarks_no_color_match": best_time(ours("landmarks", False), repeats),
        "box_color_match": best_time(ours("box", True), repeats),
        "png_decode_1024": best_time(decode_png, repeats),
    }
    n_encode = 10
    video_path = png_path.with_suffix(".mp4")
    t0 = time.perf_counter()
    with VideoWriter(video_path, 25, size, crf=18) as writer:
        for _ in range(n_encode):
            writer.write(frame)
    timings["h264_encode_per_frame"] = (time.perf_counter() - t0) / n_encode
    shutil.rmtree(png_path.parent, ignore_errors=True)
    return timings


def _prepare_run(folder: Path, n_frames: int, crop_size: int, drift=(30.0, -20.0, 10.0)) -> dict:
    """The demo clip, the real align stage, and renders made from its unaligned crops."""
    from PIL import Image

    from videdit.stages.align import AlignSettings, run_align
    from videdit.synthetic import make_clip

    folder.mkdir(parents=True, exist_ok=True)
    clip = make_clip(folder / "clip.mp4", n_frames=n_frames)
    align = run_align(clip.path, folder / "align", AlignSettings(crop_size=crop_size, preview=False))
    render_dir = records.RunFolder(folder).render
    for key in ("recon", "drift"):
        (render_dir / key).mkdir(parents=True, exist_ok=True)
    for png in records.frame_paths(align.unaligned_dir, align.n_frames):
        shutil.copyfile(png, render_dir / "recon" / png.name)
        with Image.open(png) as image:
            crop = np.asarray(image.convert("RGB")).astype(np.float32)
        Image.fromarray((crop + np.asarray(drift)).clip(0, 255).astype(np.uint8)).save(render_dir / "drift" / png.name)
    records.RenderInfo(resolution=crop_size, keys=["recon", "drift"], num_frames=align.n_frames).save(render_dir)
    return {"clip": clip.path, "align": folder / "align", "render": render_dir, "faces": align.n_faces_found}


def _frames(path: Path) -> np.ndarray:
    from videdit.io.reader import VideoReader

    return np.stack([f.image for f in VideoReader(path)]).astype(np.float64)


def bench_quality(folder: Path, n_frames: int, crop_size: int) -> dict:
    from videdit.io.probe import probe_video
    from videdit.io.writer import VideoWriter
    from videdit.stages.composite import CompositeSettings, run_composite

    run = _prepare_run(folder, n_frames, crop_size)
    source = _frames(run["clip"])
    info = probe_video(run["clip"])
    reencoded = folder / "reencoded.mp4"
    with VideoWriter(reencoded, info.fps, info.size, crf=18) as writer:
        for frame in source.astype(np.uint8):
            writer.write(frame)
    report = {"frames": n_frames, "faces_found": run["faces"], "crop_size": crop_size,
              "codec_only_mean_abs_error": float(np.abs(_frames(reencoded) - source).mean())}
    for name, settings in [("color_match", CompositeSettings(save_masks=True, seam_every=1)),
                           ("no_color_match", CompositeSettings(color_match=False, seam_every=1)),
                           ("box_color_match", CompositeSettings(mask="box", seam_every=1))]:
        out_dir = folder / f"composite_{name}"
        t0 = time.perf_counter()
        result = run_composite(run["clip"], run["align"], run["render"], ["recon", "drift"], out_dir, settings)
        seconds = time.perf_counter() - t0
        recon = _frames(result.videos["recon"])
        entry = {"seconds_per_frame_both_keys": seconds / n_frames,
                 "identity_mean_abs_error": float(np.abs(recon - source).mean()),
                 "seam_factor": {k: round(v, 4) for k, v in result.seam_factor.items()}}
        if result.masks_video is not None:
            masks = _frames(result.masks_video)[..., 0] / 255.0
            inside = masks > 0.5
            entry["identity_error_inside_mask"] = float(np.abs(recon - source)[inside].mean())
            entry["codec_only_error_inside_mask"] = float(np.abs(_frames(reencoded) - source)[inside].mean())
            entry["mask_fraction_of_frame"] = float((masks > 0.02).mean())
        report[name] = entry
    return report


_MEMORY_CHILD = """
import sys, json
from pathlib import Path

from benchmarks.common import peak_rss_mb, set_threads
set_threads(2)
from videdit.stages.composite import CompositeSettings, run_composite
base = peak_rss_mb()
folder = Path(sys.argv[1])
run_composite(folder / "clip.mp4", folder / "align", folder / "render", ["recon", "drift"], folder / "mem_out",
              CompositeSettings())
print(json.dumps({"rss_after_imports_mb": base, "peak_rss_mb": peak_rss_mb()}))
"""


def bench_memory(folder: Path, lengths: tuple[int, int], crop_size: int) -> dict:
    report = {}
    for n in lengths:
        sub = folder / f"mem_{n}"
        sub.mkdir(parents=True, exist_ok=True)
        _prepare_run(sub, n, crop_size)
        env = dict(child_env(), OMP_NUM_THREADS="2")  # the child imports benchmarks.common
        out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(sub)], capture_output=True, text=True, env=env,
                             check=True)
        report[n] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks composite", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=12, help="length of the demo clip for the quality part")
    parser.add_argument("--crop-size", type=int, default=256, help="crop / render size for the demo clip")
    parser.add_argument("--memory-frames", default="8,32", help="two clip lengths for the memory part")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: speed, quality, memory")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))

    set_threads(2)
    import torch

    print(f"composite benchmark: torch {torch.__version__}, {os.cpu_count()} CPUs, 2 threads")
    if "speed" not in skip:
        timings = bench_speed(repeats=args.repeats)
        base = timings["baseline_full_frame_paste"]
        print("\n1080p frame, 1024 render, ~500 px box (best of %d):" % args.repeats)
        for name, seconds in timings.items():
            print(f"  {name:28s} {seconds * 1000:8.1f} ms   {seconds / base:5.2f} x baseline")
    with tempfile.TemporaryDirectory(prefix="videdit-bench-composite-") as tmp:
        if "quality" not in skip:
            report = bench_quality(Path(tmp) / "quality", args.frames, args.crop_size)
            print("\ndemo clip (%d frames, 320x256, crop %d), identity renders and a colour drift (+30,-20,+10):"
                  % (args.frames, args.crop_size))
            print(json.dumps(report, indent=1))
        if "memory" not in skip:
            lengths = tuple(int(v) for v in args.memory_frames.split(","))
            report = bench_memory(Path(tmp) / "memory", lengths, args.crop_size)
            print("\npeak RSS of run_composite by clip length (fresh process each):")
            for n, entry in report.items():
                print(f"  {n:4d} frames: peak {entry['peak_rss_mb']:7.1f} MB (after imports {entry['rss_after_imports_mb']:.1f} MB)")
            short, long = (report[n]["peak_rss_mb"] for n in lengths)
            print(f"  ratio long/short: {long / short:.3f}")
    print(f"\nbench process peak RSS: {peak_rss_mb():.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
