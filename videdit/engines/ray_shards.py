"""`--engine ray --shard-frames`: one long video across a cluster.

The driver takes each video through `Pipeline.run` itself: the serial work (align's landmark pass, tune, edit,
smooth) runs in the driver process, and each frame-wise stage (align's crops, encode, render, composite) is cut
into frame ranges (videdit.shards), each run by one of the video's `PartWorker` actors (one per worker slot, made
when first needed). An actor builds the pipeline and loads its networks once and keeps them for every
part of every stage of the video (a task per part rebuilt them for each: seconds per part on a CPU, the
whole part's work for short ones); the actors end with the video. A part writes into the stage's work folder
on the shared filesystem (`RUN/<stage>.partial/parts/<start>-<end>/`), so only the task's arguments
(a PipelineSpec, paths and a frame range) and a small result travel in Ray's object store; the driver
merges the parts into the stage's normal outputs (one encode of the final videos) when every part is
there.

Faults: an actor whose process dies is restarted by Ray and its part is run again (max_retries each);
finished parts are kept on disk, so a killed driver reruns only the missing ones. A part that fails for good
(an exception, or its worker lost on every attempt) fails the video with one line naming its frames,
after the other parts have finished.

Progress: a `FrameCounter` actor holds each part's frame count (a retried part starts its count again);
the driver adds the total to the stage's one bar.

With several face tracks (`--faces`), the tracks' stages run on the driver one track after another, except
tuning: every track's tuning goes to a worker (`RayTrackTasks`), all side by side; a retried one resumes from
its last checkpoint in the track's `tune.partial/`, and the steps of all of them count on one bar.
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


def _counting(stage: str | None, key: str, counter: Any):
    """The reporter a worker runs a part or a track's stage under: its bar's steps go to the driver's
    FrameCounter (none: nowhere)."""
    from videdit import progress

    count: Callable[[int], None] = (lambda n: None) if counter is None else (lambda n: counter.add.remote(key, n))
    if counter is not None:
        counter.start.remote(key)
    return progress.reporting(progress.CountingReporter(stage, count))


def run_part_here(pipe: Any, video: Path, run_dir: Path, stage: str, shards: ShardOptions, frames: FrameRange,
                  folder: Path, counter: Any = None) -> int:
    """One part of a sharded stage, computed with `pipe` as the driver's own run of the stage would
    (what a PartWorker runs; callable directly, with counter None) -> the attempt number."""
    from videdit.layout import PARTIAL_SUFFIX
    from videdit.wiring import StageWiring

    attempt = _attempt(folder.with_name(folder.name + PARTIAL_SUFFIX))
    sharding = getattr(StageWiring(pipe, video, run_dir, shards=shards), f"stage_{stage}")().shards

    def part(start: int, end: int, out: Path) -> None:
        # Who is on this part, for a user (and the fault test): the part's folder is the shared place to say it.
        atomic_write_text(out / RAY_PART, json.dumps({"attempt": attempt, "host": socket.gethostname(),
                                                      "pid": os.getpid(), "started": time.time()}))
        sharding.part(start, end, out)

    with _counting(stage, f"{stage}:{frames[0]}-{frames[1]}", counter):
        run_part(part, frames, folder)
    return attempt


def run_track_stage_here(pipe: Any, video: Path, run_dir: Path, stage: str, track: Any, video_frames: int,
                         work: Path, counter: Any = None) -> float:
    """One face track's `stage`, into `work` (the track's `<stage>.partial/`, made by the driver), computed
    with `pipe` as the driver's own run of it would (what a PartWorker runs; callable directly) -> seconds."""
    from videdit.layout import LOG
    from videdit.runlog import StageLog, log_stage
    from videdit.track_runs import track_label
    from videdit.wiring import StageWiring

    built = getattr(StageWiring(pipe, video, run_dir / track.dir, track=track, video_frames=video_frames),
                    f"stage_{stage}")()
    t0 = time.perf_counter()
    # The warnings go to the video's log.txt, as they would from the driver (lines appended whole).
    with StageLog(run_dir / LOG).capture(), log_stage(stage), _counting(None, track_label(track) + stage, counter):
        built.fn(work)
    return time.perf_counter() - t0


class PartWorker:
    """A Ray actor: one worker slot of a video, holding the pipeline built from the spec (and the networks it
    loads) for every part and track it is given."""

    def __init__(self, spec: Any, threads: int):
        import torch

        # The CPUs Ray reserved for this worker: the thread count the driver's run must use too (docs/ray.md).
        torch.set_num_threads(max(1, threads))
        self.spec, self.pipe = spec, None

    def _pipeline(self):
        if self.pipe is None:
            self.pipe = self.spec.build()
        return self.pipe

    def run_part(self, *args) -> int:
        return run_part_here(self._pipeline(), *args)

    def run_track_stage(self, *args) -> float:
        return run_track_stage_here(self._pipeline(), *args)


class RayWorkers:
    """The video's PartWorker actors, at most one per worker slot, made as the work needs them: `run` gives each
    job to a free actor and returns when every job has ended. A lost actor process is restarted and its job
    run again (max_retries each); a job that raises is not retried."""

    def __init__(self, ray, plan: Any, spec: Any, max_retries: int, poll_s: float = 0.5):
        # The spec (settings and where the networks come from: bytes) goes to each actor by value, so a restarted
        # actor never depends on an object-store entry that may have gone.
        self.ray, self.plan, self.spec = ray, plan, spec
        self.max_retries, self.poll_s = max_retries, poll_s
        options = dict(num_cpus=plan.cpus_per_video, num_gpus=plan.gpus_per_video, max_restarts=max_retries,
                       max_task_retries=max_retries)
        self.actor_class = ray.remote(**options)(PartWorker)
        self.counter_class = ray.remote(num_cpus=0)(FrameCounter)
        self.actors: list[Any] = []

    def run(self, method: str, jobs: list[tuple[str, tuple]], count: Callable[[int], None],
            failed: Callable[[str, BaseException], str]) -> dict[str, Any]:
        """jobs: (name, the method's arguments but the counter) -> {name: its result, or the line `failed`
        makes of its error}; `count(n)` as the workers' bars move."""
        ray = self.ray
        counter = self.counter_class.remote()
        wanted = min(len(jobs), max(1, int(self.plan.slots)))
        threads = max(1, int(self.plan.cpus_per_video))
        while len(self.actors) < wanted:
            self.actors.append(self.actor_class.remote(self.spec, threads))
        free, queue, running = list(self.actors[:wanted]), list(jobs), {}
        ended: dict[str, Any] = {}
        counted = 0
        try:  # (Ctrl-C: the actors, and what they run, end with `close`)
            while queue or running:
                while free and queue:
                    actor, (name, args) = free.pop(0), queue.pop(0)
                    running[getattr(actor, method).options(name=f"videdit:{name}").remote(*args, counter)] = (actor, name)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=self.poll_s)
                for ref in ready:
                    actor, name = running.pop(ref)
                    try:
                        ended[name] = ray.get(ref)
                    except ray.exceptions.RayActorError as exc:  # lost on every attempt: a new actor in its place
                        ended[name] = failed(name, exc)
                        actor = self._replace(actor, threads)
                    except ray.exceptions.RayError as exc:
                        ended[name] = failed(name, exc)
                    free.append(actor)
                total = ray.get(counter.total.remote())
                if total > counted:
                    count(total - counted)
                    counted = total
        finally:
            ray.kill(counter)
        return ended

    def _replace(self, actor: Any, threads: int) -> Any:
        self.ray.kill(actor)
        new = self.actor_class.remote(self.spec, threads)
        self.actors[self.actors.index(actor)] = new
        return new

    def lost_line(self, exc: BaseException) -> str:
        """Why a job failed: its own error (not retried), or its worker lost on every attempt."""
        if isinstance(exc, self.ray.exceptions.RayTaskError):
            return one_line(getattr(exc, "cause", None) or exc)
        return f"worker lost on each of {self.max_retries + 1} attempts ({type(exc).__name__})"

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []

    def __enter__(self) -> "RayWorkers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RayParts:
    """A PartExecutor (videdit.shards): every part of a stage to one of the video's workers, the frames
    counted through a FrameCounter actor onto the driver's bar."""

    def __init__(self, workers: RayWorkers, video: Path, run_dir: Path, shards: ShardOptions):
        self.workers, self.video, self.run_dir, self.shards = workers, video, run_dir, shards

    def __call__(self, stage: str, todo: list[tuple[FrameRange, Path]], part, count: Callable[[int], None]) -> None:
        if not todo:
            return
        frames_of = {f"{self.video.name}:{stage}:{frames[0]}-{frames[1]}": frames for frames, _ in todo}
        jobs = [(name, (self.video, self.run_dir, stage, self.shards, frames, folder))
                for name, (frames, folder) in zip(frames_of, todo)]
        ended = self.workers.run("run_part", jobs, count, lambda name, exc: self.workers.lost_line(exc))
        failures = []
        for name, frames in frames_of.items():
            outcome = ended[name]
            if isinstance(outcome, str):  # the other parts have finished and are kept
                failures.append(ShardFailed(stage, frames, outcome))
            elif outcome > 1:
                log.warning("%s: frames %d-%d done on attempt %d (a worker was lost before)", stage, frames[0],
                            frames[1] - 1, outcome)
        if failures:
            raise failures[0]


class RayTrackTasks:
    """A TrackStageTasks (videdit.track_runs): each face track's stage to one of the video's workers, side by
    side, their steps counted on one bar."""

    def __init__(self, workers: RayWorkers, video: Path, run_dir: Path):
        self.workers, self.video, self.run_dir = workers, video, run_dir

    def __call__(self, stage: str, jobs: list[tuple[Any, Path]]) -> dict[str, float | str]:
        from videdit import progress
        from videdit.records import TracksRecord

        video_frames = TracksRecord.load(self.run_dir).n_frames
        named = {f"{self.video.name}:{track.id}:{stage}": track for track, _ in jobs}
        work = [(name, (self.video, self.run_dir, stage, track, video_frames, folder))
                for name, (track, folder) in zip(named, jobs)]

        def failed(name: str, exc: BaseException) -> str:
            log.error("%s/%s failed:\n%s", named[name].id, stage, exc)  # the worker's traceback, into log.txt
            return self.workers.lost_line(exc)

        with progress.bar(None, f"{stage} ({len(jobs)} tracks)", "step") as bar:
            ended = self.workers.run("run_track_stage", work, bar.update, failed)
        return {named[name].id: outcome for name, outcome in ended.items()}


def run_videos_sharded(ray, pipeline, jobs: Sequence, plan: Any, spec: Any, *, shard_frames: int | None,
                       max_retries: int, until: str | None, from_stage: str | None, force: bool,
                       say: Callable[[str], None] | None) -> list["VideoResult"]:
    """Each video in turn through Pipeline.run on the driver, its frame-wise stages in parts across the cluster."""
    shards = ShardOptions(frames=shard_frames, workers=plan.slots)
    if say:
        cut = f"{shard_frames} frames" if shard_frames else f"about 1 per worker ({plan.slots} workers)"
        say(f"[ray] {len(jobs)} videos, one after another; align's crops, encode, render and composite in parts of {cut}, "
            f"{plan.cpus_per_video:g} CPU + {plan.gpus_per_video:g} GPU each (cluster: {plan.cluster['CPU']:g} CPUs, "
            f"{plan.cluster['GPU']:g} GPUs)")
    results = []
    for job in jobs:
        with RayWorkers(ray, plan, spec, max_retries) as workers:  # networks loaded once per worker and video
            result = pipeline.run(job.video, job.run_dir, until=until, from_stage=from_stage, force=force,
                                  shards=shards, parts=RayParts(workers, job.video, job.run_dir, shards),
                                  track_tasks=RayTrackTasks(workers, job.video, job.run_dir))
        results.append(result)
        if say:
            say(f"  {job.video.name}: {result.status} ({result.seconds:.1f}s)" + (f": {result.error}" if result.error else ""))
    return results
