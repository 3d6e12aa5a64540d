"""Align at video rate: this tree's align stage against an earlier commit's, in the same run.

`python -m benchmarks align_rate [--against REV] [--frames N] [--repeats K] [--cores 1,2]`

A 1080p clip of a real portrait moving about (videdit.synthetic.make_clip) goes through `run_align`
at the published settings (1024 px crops, box "first", preview on, dlib landmarks) twice per repeat:
once with the package as it was at REV (extracted with `git archive` into a temporary folder) and once
with this tree, each in a fresh process, alternating, so both see the same machine load. Printed:
frames per second (median over repeats), the speed-up, process CPU seconds per frame, and how the
outputs compare:

  transforms   every array of transforms.npz, equal or not (max abs difference);
  unaligned    the 1024 px crops of the fixed box (tuning's targets), pixel for pixel (mean and max difference);
  aligned      REV wrote 1024 px crops that the encoder resized to 256 (bilinear, antialiased, in float);
               this tree writes the 256 px crops directly: the mean and max difference of the encoder's
               input, in 8-bit steps.

With `--cores 1,2` the new code is also timed pinned to 1 core (taskset), for how it scales.

With `--marginal SHORT` each tree also aligns a SHORT-frame clip in every repeat, and the marginal rate is
(frames - SHORT) / (seconds - seconds of SHORT): start-up (imports, the dlib models) cancels. The 1080p
marginal rate of the issue: `--frames 90 --marginal 10`.
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
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# Runs in a child process whose sys.path starts with the tree to time; prints one JSON line.
_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from videdit.face.landmarks import DlibBackend
from videdit.stages.align import AlignSettings, run_align
backend = DlibBackend()
settings = AlignSettings(crop_size=1024)
def cpu():  # this process's CPU seconds, all threads (the crop and preview workers included)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
start_cpu, start = cpu(), time.perf_counter()
result = run_align(sys.argv[2], sys.argv[3], settings, backend=backend)
print(json.dumps({"seconds": time.perf_counter() - start, "cpu_s": cpu() - start_cpu, "frames": result.n_frames}))
"""


def _extract(rev: str, into: Path) -> Path:
    """The videdit package as it was at `rev`, in a folder of its own."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "videdit"], check=True, capture_output=True).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _time_align(tree: Path, clip: Path, out: Path, cores: str | None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-c", _CHILD, str(tree), str(clip), str(out)]
    if cores:
        command = ["taskset", "-c", cores, *command]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _compare(before: Path, after: Path, encoder_size: int = 256) -> dict:
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from videdit import records

    old, new = np.load(before / records.TRANSFORMS), np.load(after / records.TRANSFORMS)
    transforms = {key: float(np.max(np.abs(old[key].astype(np.float64) - new[key].astype(np.float64))))
                  if old[key].size else 0.0 for key in old.files if key in new.files}
    n = len(old["rotation_deg"])
    unaligned = [np.abs(np.asarray(Image.open(before / records.UNALIGNED / records.frame_name(i)), dtype=np.int16)
                        - np.asarray(Image.open(after / records.UNALIGNED / records.frame_name(i)), dtype=np.int16))
                 for i in range(n)]
    unaligned_equal = all(not d.any() for d in unaligned)
    diffs = []
    for i in range(n):
        big = torch.from_numpy(np.asarray(Image.open(before / records.ALIGNED / records.frame_name(i))).copy()).permute(2, 0, 1)[None].float()
        encoder_input = F.interpolate(big, size=(encoder_size, encoder_size), mode="bilinear", align_corners=False, antialias=True)
        small = torch.from_numpy(np.asarray(Image.open(after / records.ALIGNED / records.frame_name(i))).copy()).permute(2, 0, 1)[None].float()
        diffs.append((small - encoder_input).abs())
    diffs = torch.cat(diffs)
    return {"transforms_max_diff": max(transforms.values()), "transforms_keys": len(transforms),
            "unaligned_equal": unaligned_equal, "unaligned_mean_diff": float(np.mean([d.mean() for d in unaligned])),
            "unaligned_max_diff": int(max(d.max() for d in unaligned)), "aligned_mean_diff": float(diffs.mean()),
            "aligned_max_diff": float(diffs.max())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks align_rate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="43b6d7b", help="git revision of the baseline (default: before the align work)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--marginal", type=int, default=0, help="also time a clip of this many frames; report the marginal rate")
    parser.add_argument("--cores", default="", help="also time the new code pinned to these core counts, e.g. 1,2")
    args = parser.parse_args(argv)

    from videdit.synthetic import make_clip

    with tempfile.TemporaryDirectory(prefix="videdit-bench-align-rate-") as tmp:
        tmp = Path(tmp)
        baseline = _extract(args.against, tmp / "baseline")
        clip = make_clip(tmp / "clip.mp4", n_frames=args.frames, size=(1920, 1080), scale=1080 / 480, audio=False).path
        short_clip = (make_clip(tmp / "short.mp4", n_frames=args.marginal, size=(1920, 1080), scale=1080 / 480,
                                audio=False).path if args.marginal else None)
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        short: dict[str, list[dict]] = {"before": [], "after": []}
        for _ in range(args.repeats):
            for side, tree in (("before", baseline), ("after", ROOT)):
                if short_clip is not None:
                    short[side].append(_time_align(tree, short_clip, tmp / f"{side}-short", None))
                runs[side].append(_time_align(tree, clip, tmp / side, None))
        pinned = {}
        for count in [int(c) for c in args.cores.split(",") if c.strip()]:
            cores = ",".join(str(c) for c in range(count))
            pinned[count] = [_time_align(ROOT, clip, tmp / "after", cores) for _ in range(args.repeats)]
        comparison = _compare(tmp / "before", tmp / "after")

    def fps(rows):
        return statistics.median(r["frames"] / r["seconds"] for r in rows)

    def cpu_per_frame(rows):
        return statistics.median(r["cpu_s"] / r["frames"] for r in rows)

    before, after = fps(runs["before"]), fps(runs["after"])
    print(f"align at 1080p, {args.frames} frames, 1024 px crops, preview on, dlib; median of {args.repeats}, "
          f"alternating in one run; {os.cpu_count()} cores visible")
    print("| code | frames/s | CPU s per frame | speed-up |")
    print("|---|---|---|---|")
    print(f"| before ({args.against}) | {before:.2f} | {cpu_per_frame(runs['before']):.3f} | 1 |")
    print(f"| after (this tree) | {after:.2f} | {cpu_per_frame(runs['after']):.3f} | **{after / before:.2f}** |")
    if args.marginal:
        def marginal(side, key):  # per repeat: (long - short) seconds per extra frame, then the median
            return statistics.median((r[key] - q[key]) / (r["frames"] - q["frames"])
                                     for r, q in zip(runs[side], short[side]))

        m_before, m_after = 1 / marginal("before", "seconds"), 1 / marginal("after", "seconds")
        pairwise = statistics.median(((b["seconds"] - bq["seconds"]) / (a["seconds"] - aq["seconds"]))
                                     for b, bq, a, aq in zip(runs["before"], short["before"], runs["after"], short["after"]))
        print(f"| marginal ({args.frames} - {args.marginal} frames), before | {m_before:.2f} | "
              f"{marginal('before', 'cpu_s'):.3f} | 1 |")
        print(f"| marginal ({args.frames} - {args.marginal} frames), after | {m_after:.2f} | "
              f"{marginal('after', 'cpu_s'):.3f} | **{pairwise:.2f}** (pairwise; CPU: "
              f"{marginal('before', 'cpu_s') / marginal('after', 'cpu_s'):.2f}) |")
    for count, rows in pinned.items():
        print(f"| after, pinned to {count} core{'s' if count > 1 else ''} | {fps(rows):.2f} | {cpu_per_frame(rows):.3f} | "
              f"{fps(rows) / before:.2f} |")
    c = comparison
    print(f"outputs: transforms.npz ({c['transforms_keys']} arrays) max difference {c['transforms_max_diff']:.3g}; "
          f"unaligned crops {'identical' if c['unaligned_equal'] else 'differ'} (mean {c['unaligned_mean_diff']:.2f}, "
          f"max {c['unaligned_max_diff']} 8-bit steps); encoder input from the aligned "
          f"crops: mean {c['aligned_mean_diff']:.2f}, max {c['aligned_max_diff']:.1f} (8-bit steps)")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print(f"BENCH align_rate before_fps={before:.2f} after_fps={after:.2f} speedup={after / before:.2f} "
          f"unaligned_equal={c['unaligned_equal']} transforms_max_diff={c['transforms_max_diff']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
