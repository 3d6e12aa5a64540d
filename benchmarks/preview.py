"""`videdit preview` against the full run's estimate, on the stand-ins (the demo) and at R-1024.

    python -m benchmarks preview [--config demo|r1024] [--size 1920x1080] [--shot-frames 3] [--device auto]
                                 [--threads 2] [--json]

A two-shot clip (videdit.synthetic.make_scene_clip: the astronaut, then Grace Hopper, --shot-frames frames each)
is previewed twice in one process: first at strength 3 (everything runs: the shot pass, align and encode of the
two key frames, render and composite), then at -3 (the cache: render and composite only). Networks: `demo` the
stand-ins with the demo preset; `r1024` the released architectures at full size with random weights (the R
generator at 1024, ReStyle-e4e on IR-SE50: benchmarks.pipeline.RealConfigModels) with the default preset.

The full run is the tool's own up-front estimate (`Pipeline.estimate`: timed passes of each network and of the
clip's first frames on this
machine, the preset's passes per frame and PTI steps) for a 1-minute clip at 30 fps (1800 frames). The preview
of that minute is extrapolated from the measured one: the shot pass (decoding every frame) and the key frames' read
(decoding up to the last key frame) per frame x 1800, plus
the rest of the first preview per key frame x 6 (a minute with six shots or more has six key frames). Both
sides are measured in the same run, so the ratio holds on a loaded machine better than either time.
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
import time
from pathlib import Path

from benchmarks.common import markdown_table, set_threads
from benchmarks.pipeline import MINUTE_FRAMES, RealConfigModels, parse_size

KEY_FRAMES_PER_MINUTE = 6  # videdit.preview.MAX_AUTO_FRAMES


def build_pipeline(config: str, device: str):
    from videdit.models import StandInModels, stand_in_overrides
    from videdit.pipeline import Pipeline

    if config == "demo":
        return Pipeline.from_preset("demo", overrides=stand_in_overrides(), models=StandInModels(), device=device,
                                    quiet=True)
    overrides = {"align.crop_size": 1024, "tune.lpips_random_backbone": True, "edit.direction": "age"}
    return Pipeline.from_preset("default", overrides=overrides, models=RealConfigModels(1024), device=device,
                                quiet=True)


def make_two_shots(path: Path, size: tuple[int, int], shot_frames: int):
    from videdit.synthetic import FacePlacement, ShotSpec, make_scene_clip

    width, height = size
    face = height * 0.35
    return make_scene_clip(path, [
        ShotSpec(shot_frames, (FacePlacement("astronaut", face, (width * 0.4, height * 0.45), drift_px=(2, 1)),),
                 background=(60, 70, 80)),
        ShotSpec(shot_frames, (FacePlacement("grace_hopper", face * 1.2, (width * 0.55, height * 0.5),
                                             drift_px=(-2, 1)),), background=(150, 120, 90)),
    ], size=size)


def measure(args) -> dict:
    from videdit.face.shots import detect_shots
    from videdit.preview import run_preview

    with tempfile.TemporaryDirectory() as tmp:
        clip = make_two_shots(Path(tmp) / "two.mp4", args.size, args.shot_frames)
        pipe = build_pipeline(args.config, args.device)
        pipe.generator(), pipe.encoder()  # built before the clock: a fresh process pays this once, not per preview
        start, cpu = time.perf_counter(), time.process_time()
        detect_shots(clip.path)
        from videdit.io.reader import VideoReader

        list(VideoReader(clip.path).frames([clip.n_frames - 1]))  # the key frames' read: a decode up to the last one
        shots_s, shots_cpu = time.perf_counter() - start, time.process_time() - cpu
        timings = {}
        for name, strength in (("first", 3.0), ("another strength", -3.0)):
            this = pipe.derive({"edit.strengths": [strength]})
            start, cpu = time.perf_counter(), time.process_time()
            result = run_preview(this, clip.path, Path(tmp) / "run", estimate=False)
            timings[name] = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
                             "ran": [k for k, v in result.stages.items() if v == "ran"]}
        estimate = pipe.estimate(MINUTE_FRAMES, list(pipe.active_stages()), clip.path)  # align, composite on its frames
        full_s = sum(estimate.seconds.values())
    n_frames, n_keys = clip.n_frames, len(result.frames)
    per_frame_shots = shots_s / n_frames
    per_key = max(timings["first"]["seconds"] - shots_s, 0.0) / n_keys
    minute = per_frame_shots * MINUTE_FRAMES + per_key * KEY_FRAMES_PER_MINUTE
    per_key_render = timings["another strength"]["seconds"] / n_keys
    minute_render = per_key_render * KEY_FRAMES_PER_MINUTE
    return {"config": args.config, "size": list(args.size), "clip_frames": n_frames, "key_frames": n_keys,
            "device": pipe.device, "load_average": os.getloadavg()[0], "timings": timings,
            "shot_pass_seconds": shots_s, "shot_pass_cpu_seconds": shots_cpu,
            "full_run_estimate_seconds": full_s, "full_run_estimate_stages": estimate.seconds,
            "preview_minute_seconds": minute, "full_over_preview": full_s / minute,
            "strength_change_minute_seconds": minute_render, "full_over_strength_change": full_s / minute_render}


def format_result(r: dict) -> str:
    rows = [["first preview (measured)", f"{r['timings']['first']['seconds']:.1f}",
             ", ".join(r["timings"]["first"]["ran"])],
            ["another strength (measured)", f"{r['timings']['another strength']['seconds']:.1f}",
             ", ".join(r["timings"]["another strength"]["ran"])],
            ["shot pass + key-frame read of the clip (measured)", f"{r['shot_pass_seconds']:.1f}",
             f"{r['clip_frames']} frames decoded twice"],
            ["preview of a 1-minute clip (extrapolated)", f"{r['preview_minute_seconds']:.0f}",
             f"shot pass x {MINUTE_FRAMES} frames + per key frame x {KEY_FRAMES_PER_MINUTE}"],
            ["another strength, 1-minute clip (extrapolated)", f"{r['strength_change_minute_seconds']:.0f}",
             f"per key frame x {KEY_FRAMES_PER_MINUTE}"],
            ["full run of a 1-minute clip (the tool's estimate)", f"{r['full_run_estimate_seconds']:.0f}",
             ", ".join(f"{k} {v:.0f}" for k, v in r["full_run_estimate_stages"].items())]]
    head = (f"config {r['config']}, clip {r['size'][0]}x{r['size'][1]}, {r['clip_frames']} frames in 2 shots, "
            f"{r['key_frames']} key frames, {r['device']}, load average {r['load_average']:.1f}\n\n")
    tail = (f"\n\nfull run / preview (1-minute clip): {r['full_over_preview']:.0f}x; full run / strength change: "
            f"{r['full_over_strength_change']:.0f}x (goal: preview under 1/50 of the run)")
    return head + markdown_table(["what", "seconds", "note"], rows) + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks preview", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["demo", "r1024"], default="demo")
    parser.add_argument("--size", type=parse_size, default=(1920, 1080))
    parser.add_argument("--shot-frames", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    result = measure(args)
    print(json.dumps(result, indent=1) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
