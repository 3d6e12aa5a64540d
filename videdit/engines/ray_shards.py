"""`--engine ray --shard-frames`: one long video across a cluster.

The driver takes each video through `Pipeline.run` itself: the serial stages (align, tune, edit, smooth)
run in the driver process, and each frame-wise stage (encode, render, composite) is cut into frame
ranges (videdit.shards) that run as Ray tasks, one per part. A part writes into the stage's work folder
on the shared filesystem (`RUN/<stage>.partial/parts/<start>-<end>/`), so only the task's arguments
(a PipelineSpec, paths and a frame range) and a small result travel in Ray's object store; the driver
merges the parts into the stage's normal outputs (one encode of the final videos) when every part is
there.

Faults: a task whose worker dies is retried by Ray (max_retries) and starts its part again; finished
parts are kept on disk, so a killed driver reruns only the missing ones. A part that fails for good
(an exception, or its worker lost on every attempt) fails the video with one line naming its frames,
after the other parts have finished.

Progress: a `FrameCounter` actor holds each part's frame count (a retried part starts its count again);
the driver adds the total to the stage's one bar.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from videdit.fileio import atomic_write_text
from videdit.layout import RAY_PART
from videdit.shards import FrameRange, ShardFailed, ShardOptions, one_line, run_part

if TYPE_CHECKING:
    from videdit.runner import VideoResult

# The ray_engine's PipelineSpec and RayPlan come in as arguments (ray_engine imports this module).

log = logging.getLogger(__name__)  # inside Pipeline.run: into the video's log.txt


class FrameCounter:
    """Frames done per part, added to by the workers; a retried part starts from 0 again."""

    def __init__(self):
        self.done: dict[str, int] = {}

    def start(self, part: str) -> None:
        self.done[part] = 0

    def add(self, part: str, n: int) -> None:
        self.done[part] = self.done.get(part, 0) + n

    def total(self) -> int:
        return sum(self.done.values())


def _attempt(folder: Path) -> int:
    """1 + the attempts an earlier worker recorded in this part's unfinished folder."""
    try:
        return int(json.loads((folder / RAY_PART).read_text())["attempt"]) + 1
    except (OSError, ValueError, KeyError, TypeError):
        return 1


def run_part_task(spec: Any, video: Path, run_dir: Path, stage: str, shards: ShardOptions,
                  frames: FrameRange, folder: Path, counter: Any, threads: int) -> int:
    """Body of one part's Ray task (also callable directly, with counter None): -> the attempt number.

    The worker rebuilds the pipeline and the stage's wiring from the spec, as the driver has them, and
    runs the stage's part function, so a part computes what the local engine's would.
    """
    import torch

    from videdit import progress
    from videdit.layout import PARTIAL_SUFFIX
    from videdit.wiring import StageWiring

    torch.set_num_threads(max(1, threads))  # the CPUs Ray reserved for this part
    key = f"{stage}:{frames[0]}-{frames[1]}"
    working = folder.with_name(folder.name + PARTIAL_SUFFIX)
    attempt = _attempt(working)
    pipe = spec.build()
    sharding = getattr(StageWiring(pipe, video, run_dir, shards=shards), f"stage_{stage}")().shards

    def part(start: int, end: int, out: Path) -> None:
        # Who is on this part, for a user (and the fault test): the part's folder is the shared place to say it.
        atomic_write_text(out / RAY_PART, json.dumps({"attempt": attempt, "host": socket.gethostname(),
                                                      "pid": os.getpid(), "started": time.time()}))
        sharding.part(start, end, out)

    count: Callable[[int], None] = (lambda n: None) if counter is None else (lambda n: counter.add.remote(key, n))
    if counter is not None:
        counter.start.remote(key)
    with progress.reporting(progress.CountingReporter(stage, count)):
        run_part(part, frames, folder)
    return attempt


class RayParts:
    """A PartExecutor (videdit.shards): every part of a stage as one Ray task, the frames counted through
    a FrameCounter actor onto the driver's bar."""

    def __init__(self, ray, plan: Any, spec_ref, video: Path, run_dir: Path, shards: ShardOptions,
                 max_retries: int, poll_s: float = 0.5):
        self.ray, self.plan, self.spec_ref = ray, plan, spec_ref
        self.video, self.run_dir, self.shards = video, run_dir, shards
        self.max_retries, self.poll_s = max_retries, poll_s
        options = dict(num_cpus=plan.cpus_per_video, num_gpus=plan.gpus_per_video, max_retries=max_retries,
                       retry_exceptions=False)
        if plan.gpus_per_video > 0:
            options["max_calls"] = 1  # as for whole videos: a fresh process frees its CUDA memory
        self.task = ray.remote(**options)(run_part_task)
        self.counter_class = ray.remote(num_cpus=0)(FrameCounter)

    def __call__(self, stage: str, todo: list[tuple[FrameRange, Path]], part, count: Callable[[int], None]) -> None:
        ray = self.ray
        if not todo:
            return
        counter = self.counter_class.remote()
        threads = max(1, int(self.plan.cpus_per_video))
        pending = {}
        for frames, folder in todo:
            ref = self.task.options(name=f"videdit:{self.video.name}:{stage}:{frames[0]}-{frames[1]}").remote(
                self.spec_ref, self.video, self.run_dir, stage, self.shards, frames, folder, counter, threads)
            pending[ref] = frames
        failures: list[ShardFailed] = []
        counted = 0
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=self.poll_s)
                for ref in ready:
                    frames = pending.pop(ref)
                    try:
                        attempt = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:  # an exception in the part: not retried
                        failures.append(ShardFailed(stage, frames, one_line(getattr(exc, "cause", None) or exc)))
                        continue
                    except ray.exceptions.RayError as exc:  # its worker lost on every attempt
                        failures.append(ShardFailed(stage, frames, f"worker lost on each of {self.max_retries + 1} "
                                                                   f"attempts ({type(exc).__name__})"))
                        continue
                    if attempt > 1:
                        log.warning("%s: frames %d-%d done on attempt %d (a worker was lost before)", stage, frames[0],
                                    frames[1] - 1, attempt)
                total = ray.get(counter.total.remote())
                if total > counted:
                    count(total - counted)
                    counted = total
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            ray.kill(counter)
        if failures:  # the other parts have finished and are kept
            raise failures[0]


def run_videos_sharded(ray, pipeline, jobs: Sequence, plan: Any, spec: Any, *, shard_frames: int | None,
                       max_retries: int, until: str | None, from_stage: str | None, force: bool,
                       say: Callable[[str], None] | None) -> list["VideoResult"]:
    """Each video in turn through Pipeline.run on the driver, its frame-wise stages in parts across the cluster."""
    shards = ShardOptions(frames=shard_frames, workers=plan.slots)
    spec_ref = ray.put(spec)
    if say:
        cut = f"{shard_frames} frames" if shard_frames else f"about 1 per worker ({plan.slots} workers)"
        say(f"[ray] {len(jobs)} videos, one after another; encode, render and composite in parts of {cut}, "
            f"{plan.cpus_per_video:g} CPU + {plan.gpus_per_video:g} GPU each (cluster: {plan.cluster['CPU']:g} CPUs, "
            f"{plan.cluster['GPU']:g} GPUs)")
    results = []
    for job in jobs:
        parts = RayParts(ray, plan, spec_ref, job.video, job.run_dir, shards, max_retries)
        result = pipeline.run(job.video, job.run_dir, until=until, from_stage=from_stage, force=force, shards=shards,
                              parts=parts)
        results.append(result)
        if say:
            say(f"  {job.video.name}: {result.status} ({result.seconds:.1f}s)" + (f": {result.error}" if result.error else ""))
    return results
