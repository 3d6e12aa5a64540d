"""Start-up: this tree's command line against an earlier commit's, in the same run.

`python -m benchmarks startup [--against REV] [--repeats K]`

Three commands, each a fresh process, run with the package as it was at REV (extracted with `git archive`
into a temporary folder) and with this tree, alternating A B A B so both see the same machine load:

  help            `videdit --help`
  align           `videdit run CLIP --until align` on a one-frame 1080p clip: the start-up before the first
                  frame, plus that one frame (about 0.05 s) and the stage's bookkeeping
  missing weights `videdit run CLIP` with an empty weights folder: the one-line message (exit status 3)

Printed per command: the median wall seconds and process CPU seconds (user + system, the child's own
accounting) of each tree, the median of the pair-by-pair ratios before / after, and whether the process
loaded torch. The machine is shared: read the ratios, and the load average printed with them.
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
import time
from pathlib import Path

from benchmarks.align_rate import _extract

# Runs the command line of the tree in argv[1] on argv[2:]; says on its last stderr line whether torch was loaded.
_CHILD = r"""
import json, sys
tree = sys.argv[1]
sys.path.insert(0, tree)
sys.argv = ["videdit", *sys.argv[2:]]
try:
    from videdit.cli import main
    main()
finally:
    print("STARTUP " + json.dumps({"torch": "torch" in sys.modules}), file=sys.__stderr__)
"""


def _time_command(tree: Path, args: list[str], env: dict[str, str]) -> dict:
    """Wall and CPU seconds of one fresh process running the tree's CLI with `args`."""
    command = [sys.executable, "-c", _CHILD, str(tree), *args]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    _, stderr = child.communicate()
    wall = time.perf_counter() - start
    lines = [line for line in stderr.splitlines() if line.startswith("STARTUP ")]
    info = json.loads(lines[-1][len("STARTUP "):]) if lines else {"torch": None}
    return {"wall": wall, "rc": child.returncode, "stderr": stderr, **info}


def _cpu_children() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(tree: Path, args: list[str], env: dict[str, str], out: Path | None) -> dict:
    """One timed process; its CPU seconds are the growth of the reaped children's total around it."""
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    cpu0 = _cpu_children()
    row = _time_command(tree, args, env)
    row["cpu"] = _cpu_children() - cpu0
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks startup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="323a6f8", help="git revision of the baseline (default: before the start-up work)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from videdit.synthetic import make_clip

    with tempfile.TemporaryDirectory(prefix="videdit-bench-startup-") as tmp:
        tmp = Path(tmp)
        trees = {"before": _extract(args.against, tmp / "baseline"), "after": Path(__file__).resolve().parents[1]}
        clip = make_clip(tmp / "clip.mp4", n_frames=1, size=(1920, 1080), scale=1080 / 480, audio=False).path
        empty = tmp / "no-weights"
        empty.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        cases = {
            "help": (["--help"], env, None, 0),
            "align": (["run", str(clip), "--until", "align", "--out", str(tmp / "run")], env, tmp / "run", 0),
            "missing weights": (["run", str(clip), "--out", str(tmp / "run-nw")], {**env, "VIDEDIT_WEIGHTS": str(empty)},
                                tmp / "run-nw", 3),
        }
        rows: dict[str, dict[str, list[dict]]] = {name: {"before": [], "after": []} for name in cases}
        for _ in range(args.repeats):
            for name, (cli_args, case_env, out, expected_rc) in cases.items():
                for side in ("before", "after"):
                    row = _run(trees[side], cli_args, case_env, out)
                    if row["rc"] != expected_rc:
                        raise SystemExit(f"startup: {side} `{name}` exited {row['rc']} (expected {expected_rc}):\n"
                                         f"{row['stderr'][-2000:]}")
                    rows[name][side].append(row)

    load = os.getloadavg()[0]
    print(f"start-up, fresh processes, median of {args.repeats}, before/after alternating in one run; "
          f"load average {load:.2f} at the end")
    print("| command | before wall s | after wall s | before CPU s | after CPU s | × faster (CPU, pairwise) | torch loaded before / after |")
    print("|---|---|---|---|---|---|---|")
    summary = []
    for name, sides in rows.items():
        med = {side: {k: statistics.median(r[k] for r in sides[side]) for k in ("wall", "cpu")} for side in sides}
        speedup = statistics.median(b["cpu"] / a["cpu"] for b, a in zip(sides["before"], sides["after"]))
        torch_flags = " / ".join("yes" if sides[s][-1]["torch"] else "no" for s in ("before", "after"))
        print(f"| {name} | {med['before']['wall']:.2f} | {med['after']['wall']:.2f} | {med['before']['cpu']:.2f} | "
              f"{med['after']['cpu']:.2f} | **{speedup:.2f}** | {torch_flags} |")
        summary.append(f"{name.replace(' ', '_')}={speedup:.2f}")
    print("BENCH startup " + " ".join(summary) + f" load={load:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
