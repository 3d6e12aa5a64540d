"""--engine local vs --engine ray on this machine: `python -m benchmarks engines [--clips 4] [--frames 4] ...`.

Both engines process the same short synthetic clips with small stand-in networks, each in its own child
process (local is the baseline). On one machine with as many CPUs as Ray is given, the two should take
about the same time: Ray's worth is many machines, this shows what it costs on one. Reported:

- wall time of each engine (Ray also with its cluster start-up, timed apart), and the ratio to local;
- Ray's scheduling overhead per video, from the workers' status files and the driver's clock:
  dispatch (task submitted or slot freed -> task body starts: worker start, argument transfer),
  in-task (task body minus `Pipeline.run`: pipeline rebuild, status files), return (task end -> driver
  has the result);
- peak memory: the child's own peak (VmHWM) and the peak total resident memory of its process tree
  (sampled every 0.2 s: for Ray, the driver, raylet, GCS, agents and workers).
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

from benchmarks.common import child_command, peak_rss_mb


def _overrides(args) -> dict:
    return {
        "align.crop_size": 64,
        "encode.n_iters": 1,
        "encode.batch_size": 4,
        "encode.input_size": 64,
        "tune.steps": args.steps,
        "tune.batch_size": 2,
        "tune.checkpoint_every": max(1, args.steps // 2),
        "tune.allow_l2_only": True,
        "tune.lpips_weight": 0.0,
        "edit.direction": "age",
        "edit.strengths": [3.0],
    }


def _tree_rss_mb(root_pid: int) -> float:
    """Resident memory of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total / 2**20


def _stage_seconds(run_dir: Path) -> dict[str, float]:
    """Seconds each stage took, from the manifests the stage runner writes."""
    from videdit.layout import MANIFEST, STAGE_ORDER

    out = {}
    for stage in STAGE_ORDER:
        manifest = Path(run_dir) / stage / MANIFEST
        if manifest.exists():
            out[stage] = float(json.loads(manifest.read_text()).get("seconds", 0.0))
    return out


def cost_table(video_s: float, overhead_s: float, videos=(10, 100, 1000), workers=(1, 8, 64)) -> str:
    """Expected wall time of N videos on K workers (one video per GPU): ceil(N / K) rounds of one video each."""
    from videdit.engines import format_duration

    lines = [f"{'videos':>8s} " + " ".join(f"{f'{k} worker' + ('s' if k > 1 else ''):>11s}" for k in workers)]
    for n in videos:
        lines.append(f"{n:8d} " + " ".join(f"{format_duration(-(-n // k) * (video_s + overhead_s)):>11s}" for k in workers))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Children: one engine each


def _child(args) -> dict:
    import torch

    from videdit.pipeline import Pipeline, StandInModels

    videos = sorted(Path(args.workdir, "clips").glob("*.mp4"))
    out = Path(args.workdir, f"runs_{args.child}")
    shutil.rmtree(out, ignore_errors=True)
    pipe = Pipeline.from_preset("default", overrides=_overrides(args), quiet=True, models=StandInModels(resolution=64))
    if args.child == "local" and args.local_threads:
        torch.set_num_threads(args.local_threads)
    report: dict = {"engine": args.child, "torch_threads": torch.get_num_threads()}
    if args.child == "local":
        from videdit.engines.local import run_videos_local

        t0 = time.perf_counter()
        results = run_videos_local(pipe, videos, out)
        report["wall_s"] = time.perf_counter() - t0
    else:
        import logging

        import ray

        from videdit.engines.ray_engine import TaskStatus, run_videos_ray

        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=args.num_cpus, num_gpus=0, include_dashboard=False,
                 object_store_memory=100 * 2**20, logging_level=logging.WARNING)
        report["cluster_start_s"] = time.perf_counter() - t0
        lines: list[tuple[float, str]] = []
        t0 = time.perf_counter()
        results = run_videos_ray(pipe, videos, out, cpus_per_video=args.cpus_per_video, progress_every=1e9,
                                 echo=lambda line: lines.append((time.time(), line)))
        report["wall_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        ray.shutdown()
        report["cluster_stop_s"] = time.perf_counter() - t1
        submitted = next(t for t, line in lines if line.startswith("[ray]") and " videos, " in line)
        received = {line.split(":")[0].strip(): t for t, line in lines if line.startswith("  ")}
        report["videos"] = []
        for r in results:
            status = TaskStatus.read(r.run_dir)
            report["videos"].append({"name": r.input.name, "submitted": submitted, "started": status.started,
                                     "finished": status.finished, "received": received[r.input.name],
                                     "run_s": r.seconds})
        report["slots"] = int(args.num_cpus // args.cpus_per_video)
    report["per_video_s"] = [r.seconds for r in results]
    report["stage_s"] = [_stage_seconds(r.run_dir) for r in results]
    report["status"] = [r.status for r in results]
    report["peak_rss_mb"] = peak_rss_mb()
    return report


def _run_child(args, engine: str) -> dict:
    cmd, env = child_command("engines", "--child", engine, "--workdir", args.workdir, "--steps", str(args.steps),
                             "--num-cpus", str(args.num_cpus), "--cpus-per-video", str(args.cpus_per_video),
                             "--local-threads", str(args.local_threads))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    peak_tree = 0.0
    while proc.poll() is None:
        peak_tree = max(peak_tree, _tree_rss_mb(proc.pid))
        time.sleep(0.2)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"{engine} child failed ({proc.returncode}):\n{out}")
    report = json.loads(out.strip().splitlines()[-1])
    report["peak_tree_rss_mb"] = peak_tree
    return report


def _ray_overheads(report: dict) -> dict[str, float]:
    """Mean dispatch / in-task / return seconds per video (see the module docstring); prints each video's."""
    videos = sorted(report["videos"], key=lambda v: v["started"])
    slots = max(1, report["slots"])
    finished = sorted(v["finished"] for v in videos)
    dispatch, in_task, back = [], [], []
    print(f"\n{'ray task':12s} {'dispatch':>9s} {'in-task':>8s} {'run':>7s} {'return':>7s}")
    for i, v in enumerate(videos):
        # the i-th video to start got a free slot at submission, or when the (i - slots)-th video ended
        free_at = v["submitted"] if i < slots else max(v["submitted"], finished[i - slots])
        dispatch.append(v["started"] - free_at)
        in_task.append(v["finished"] - v["started"] - v["run_s"])
        back.append(v["received"] - v["finished"])
        print(f"{v['name']:12s} {dispatch[-1]:8.2f}s {in_task[-1]:7.2f}s {v['run_s']:6.1f}s {back[-1]:6.2f}s")
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {"dispatch_s": mean(dispatch), "in_task_s": mean(in_task), "return_s": mean(back),
            "total_s": mean(dispatch) + mean(in_task) + mean(back)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks engines", description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4, help="number of clips")
    parser.add_argument("--frames", type=int, default=4, help="frames per clip")
    parser.add_argument("--steps", type=int, default=4, help="PTI steps per clip")
    parser.add_argument("--num-cpus", type=float, default=2, help="CPUs the local Ray cluster gets")
    parser.add_argument("--cpus-per-video", type=float, default=1)
    parser.add_argument("--local-threads", type=int, default=0,
                        help="torch threads of the local baseline (default 0: torch's default, as `videdit run` uses)")
    parser.add_argument("--workdir", default=None, help="keep clips and run folders here (default: a temporary folder)")
    parser.add_argument("--child", choices=["local", "ray"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(_child(args)))
        return 0
    try:
        import ray  # noqa: F401
    except ImportError:
        print("this benchmark needs Ray: pip install 'videdit[ray]'", file=sys.stderr)
        return 2

    from videdit.synthetic import make_clip

    temporary = args.workdir is None
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="vbench")
    try:
        clips = Path(args.workdir, "clips")
        clips.mkdir(parents=True, exist_ok=True)
        for i in range(args.clips):
            make_clip(clips / f"clip{i}.mp4", n_frames=args.frames, size=(256, 224), face_centre=(255.0 - 6 * i, 110.0))
        print(f"{args.clips} clips of {args.frames} frames (256x224), stand-in 64 px networks, {args.steps} PTI steps; "
              f"ray: {args.num_cpus:g} CPUs, {args.cpus_per_video:g} per video; {os.cpu_count()} CPUs here, "
              f"load average {os.getloadavg()[0]:.1f}")
        local = _run_child(args, "local")
        ray_report = _run_child(args, "ray")
    finally:
        if temporary:
            shutil.rmtree(args.workdir, ignore_errors=True)

    for r in (local, ray_report):
        if any(s != "ok" for s in r["status"]):
            print(f"{r['engine']}: some videos failed: {r['status']}", file=sys.stderr)
            return 1
    with_start = ray_report["wall_s"] + ray_report["cluster_start_s"]
    print(f"\n{'engine':24s} {'wall':>8s} {'vs local':>9s} {'mean video':>11s} {'peak RSS':>9s} {'peak tree RSS':>14s}")
    rows = [("local (baseline)", local["wall_s"], local),
            ("ray", ray_report["wall_s"], ray_report),
            ("ray + cluster start", with_start, ray_report)]
    for name, wall, r in rows:
        mean_video = sum(r["per_video_s"]) / len(r["per_video_s"])
        print(f"{name:24s} {wall:7.1f}s {wall / local['wall_s']:8.2f}x {mean_video:10.1f}s "
              f"{r['peak_rss_mb']:7.0f}MB {r['peak_tree_rss_mb']:12.0f}MB")
    o = _ray_overheads(ray_report)
    print(f"\nray cluster start {ray_report['cluster_start_s']:.1f}s, stop {ray_report['cluster_stop_s']:.1f}s; torch threads: "
          f"local {local['torch_threads']}, ray worker {max(1, int(args.cpus_per_video))}")
    print(f"ray scheduling overhead per video: {o['total_s']:.2f}s = dispatch {o['dispatch_s']:.2f}s + in-task "
          f"{o['in_task_s']:.2f}s + return {o['return_s']:.2f}s "
          f"({o['total_s'] / (sum(ray_report['per_video_s']) / len(ray_report['per_video_s'])) * 100:.1f}% of a mean video)")
    stages = {name: sum(v.get(name, 0.0) for v in local["stage_s"]) / len(local["stage_s"]) for name in local["stage_s"][0]}
    video_s = sum(stages.values())
    print("\nmean stage seconds per video (local): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
          + f"; total {video_s:.1f}s")
    print("expected wall time of N videos on K workers with these stage times, ceil(N/K) x (video + overhead):")
    print(cost_table(video_s, o["total_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
