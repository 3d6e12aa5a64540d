"""The Ray engine: each video is one Ray task; its stages run in that task, on one worker.

Why this is enough for fault tolerance: stages are cached and atomic (videdit.runner) and PTI keeps
checkpoints in `RUN/tune.partial/`, so a task that Ray retries after its worker died starts
`Pipeline.run` again on the same run folder, which skips finished stages and resumes the one that was
cut off. This only holds when every node sees the inputs and run folders at the same path (a shared or
mounted filesystem): docs/ray.md.

Each attempt records itself in `RUN/.ray_task.json` (batch id, attempt number, host, pid, state), which
the driver reads for its progress line and which tells a user where a video ran.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from videdit.engines.jobs import VideoJob, format_duration, make_jobs
from videdit.errors import VideditError
from videdit.fileio import atomic_write_text
from videdit.layout import RAY_TASK
from videdit.runner import read_log_events

if TYPE_CHECKING:
    from videdit.pipeline import ModelSource, Pipeline
    from videdit.runner import VideoResult

TASK_STATUS_FILE = RAY_TASK
RAY_MISSING = "--engine ray needs Ray, which is not installed here: pip install 'videdit[ray]'"


def require_ray():
    """The `ray` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise VideditError(RAY_MISSING) from None
    return ray


# --------------------------------------------------------------------------------------------------
# What travels to the workers


@dataclass
class PipelineSpec:
    """The picklable parts a worker rebuilds its Pipeline from (a Pipeline itself holds loaded networks)."""

    settings: dict[str, Any]
    weights_dir: Path
    device: str
    models: "ModelSource | None" = None  # None: the released checkpoints from weights_dir (PretrainedModels)

    @classmethod
    def from_pipeline(cls, pipe: "Pipeline", device: str | None = None,
                      dumps: Callable[[Any], bytes] = pickle.dumps) -> "PipelineSpec":
        from videdit.pipeline import PretrainedModels

        # PretrainedModels is rebuilt from weights_dir + settings on the worker, so a checkpoint the
        # driver may have loaded is never shipped.
        models = None if type(pipe.models) is PretrainedModels else pipe.models
        spec = cls(dict(pipe.settings), Path(pipe.weights_dir).resolve(), device or pipe.device_request, models)
        try:
            dumps(spec)
        except Exception as exc:  # pickling failures come as many exception types
            raise VideditError(f"--engine ray: the pipeline's models ({type(pipe.models).__name__}) cannot be "
                               f"sent to Ray workers: {exc}".replace("\n", " ")) from None
        return spec

    def build(self) -> "Pipeline":
        from videdit.pipeline import Pipeline

        # Workers stay quiet (no interleaved stage lines from many videos); the driver reports progress.
        return Pipeline(self.settings, weights_dir=self.weights_dir, device=self.device, quiet=True, models=self.models)


@dataclass(frozen=True)
class RunRequest:
    """The per-video run options of `Pipeline.run`."""

    until: str | None = None
    from_stage: str | None = None
    force: bool = False

    def wanted_forced(self) -> set[str]:
        from videdit.records import STAGE_ORDER

        if self.force:
            return set(STAGE_ORDER)
        if self.from_stage:
            return set(STAGE_ORDER[STAGE_ORDER.index(self.from_stage):])
        return set()


@dataclass
class TaskStatus:
    """Contents of RUN/.ray_task.json: the latest attempt at this video."""

    batch: str
    attempt: int
    host: str
    pid: int
    state: str  # running | finished
    started: float
    finished: float | None = None

    @classmethod
    def read(cls, run_dir: Path) -> "TaskStatus | None":
        try:
            return cls(**json.loads((Path(run_dir) / TASK_STATUS_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, run_dir: Path) -> None:
        atomic_write_text(Path(run_dir) / TASK_STATUS_FILE, json.dumps(asdict(self)))


# --------------------------------------------------------------------------------------------------
# The worker side


def stages_to_force(request: RunRequest, run_dir: Path, log_offset: int) -> set[str]:
    """The stages this attempt must recompute.

    Stages are forced only once per batch: one that finished after the batch began (its log lines
    after `log_offset`) is fresh and is kept; one that started but was cut off has its old complete
    folder removed, so that its work folder from this batch resumes instead of restarting.
    """
    wanted = request.wanted_forced()
    if not wanted:
        return set()
    events = read_log_events(run_dir)[log_offset:]
    done = {stage for stage, event in events if event == "done"}
    started = {stage for stage, event in events if event in ("start", "resume")} - done
    for stage in started & wanted:
        shutil.rmtree(Path(run_dir) / stage, ignore_errors=True)
    return wanted - done - started


def run_video_task(spec: PipelineSpec, job: VideoJob, request: RunRequest, batch: str, log_offset: int,
                   threads: int) -> tuple["VideoResult", int]:
    """Body of the Ray task of one video (also callable directly): -> (result, attempt number)."""
    from videdit.runner import VideoResult

    host = socket.gethostname()
    if not job.video.is_file():
        return VideoResult(job.video, job.run_dir, status="failed",
                           error=f"{job.video} is not visible on worker {host}: inputs and run folders must be on a "
                                 "filesystem every Ray node mounts at the same path"), 1
    job.run_dir.mkdir(parents=True, exist_ok=True)
    previous = TaskStatus.read(job.run_dir)
    attempt = previous.attempt + 1 if previous and previous.batch == batch else 1
    status = TaskStatus(batch, attempt, host, os.getpid(), "running", time.time())
    status.write(job.run_dir)

    import torch

    torch.set_num_threads(max(1, threads))  # the CPUs Ray reserved for this video, not the whole node
    forced = stages_to_force(request, job.run_dir, log_offset)
    pipe = spec.build()
    result = pipe.run(job.video, job.run_dir, until=request.until, force=forced or False)
    status.state, status.finished = "finished", time.time()
    status.write(job.run_dir)
    return result, attempt


# --------------------------------------------------------------------------------------------------
# The driver side


@dataclass
class RayPlan:
    """Resources per video and how many videos the cluster runs at once."""

    cpus_per_video: float
    gpus_per_video: float
    device: str
    slots: int
    cluster: dict[str, float] = field(default_factory=dict)


def plan_resources(nodes: list[dict], device_request: str, cpus_per_video: float,
                   gpus_per_video: float | None) -> RayPlan:
    """Check the request against the cluster's nodes (as `ray.nodes()` lists them) before submitting anything.

    `gpus_per_video=None`: 1 where the cluster has GPUs, else 0 (CPU). With 0 GPUs the worker runs on
    the CPU even under `--device auto`, so it never uses a GPU that Ray did not give it.
    """
    if cpus_per_video <= 0:
        raise VideditError(f"--cpus-per-video must be positive, got {cpus_per_video:g}")
    if gpus_per_video is not None and gpus_per_video < 0:
        raise VideditError(f"--gpus-per-video must be 0 or more, got {gpus_per_video:g}")
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    total = {k: sum(r.get(k, 0.0) for r in alive) for k in ("CPU", "GPU")}
    gpus = (1.0 if total["GPU"] >= 1 else 0.0) if gpus_per_video is None else float(gpus_per_video)
    if gpus > 0 and total["GPU"] < gpus:
        raise VideditError(f"--gpus-per-video {gpus:g}: the Ray cluster has {total['GPU']:g} GPUs "
                           "(start workers on GPU machines, or use --gpus-per-video 0 to run on CPUs)")
    if device_request == "cuda" and gpus == 0:
        raise VideditError("--device cuda with --engine ray needs --gpus-per-video above 0")
    device = "cpu" if gpus == 0 else device_request

    def videos_on(node: dict[str, float]) -> int:
        n = math.floor(node.get("CPU", 0.0) / cpus_per_video + 1e-9)
        if gpus > 0:
            n = min(n, math.floor(node.get("GPU", 0.0) / gpus + 1e-9))
        return n

    slots = sum(videos_on(r) for r in alive)
    if slots == 0:
        raise VideditError(f"no node of the Ray cluster has {cpus_per_video:g} CPUs and {gpus:g} GPUs for one video "
                           f"(cluster: {total['CPU']:g} CPUs, {total['GPU']:g} GPUs): lower --cpus-per-video / --gpus-per-video")
    return RayPlan(cpus_per_video, gpus, device, slots, total)


def remote_task(ray, plan: RayPlan, max_retries: int):
    """`run_video_task` as a Ray remote function with the plan's resources.

    Only lost workers are retried (retry_exceptions=False). With GPUs, each video gets a fresh worker
    process (max_calls=1): a reused one would keep its CUDA memory cache.
    """
    options = dict(num_cpus=plan.cpus_per_video, num_gpus=plan.gpus_per_video, max_retries=max_retries,
                   retry_exceptions=False)
    if plan.gpus_per_video > 0:
        options["max_calls"] = 1
    return ray.remote(**options)(run_video_task)


def _cloudpickle_dumps(ray) -> Callable[[Any], bytes]:
    from ray import cloudpickle  # what Ray itself sends task arguments with

    return cloudpickle.dumps


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _failure_message(ray, exc: Exception, max_retries: int) -> str:
    if isinstance(exc, ray.exceptions.RayTaskError):
        # An exception in the pipeline (not a lost worker): Ray does not retry it, it would fail again.
        cause = getattr(exc, "cause", None) or exc
        return f"{type(cause).__name__}: {_one_line(str(cause))}"
    return (f"worker lost on each of {max_retries + 1} attempts ({type(exc).__name__}); finished stages are kept, "
            "a rerun resumes them")


class _Progress:
    """The driver's view: done / running / queued / failed from results and the workers' status files."""

    def __init__(self, jobs: list[VideoJob], batch: str, offsets: list[int], slots: int, say):
        self.jobs, self.batch, self.offsets, self.slots, self.say = jobs, batch, offsets, slots, say
        self.results: dict[int, VideoResult] = {}
        self.t0 = time.time()
        self.last_line = 0.0

    def running(self) -> dict[int, tuple[int, str]]:
        """index -> (attempt, current stage) of the videos a worker is on now."""
        out = {}
        for i, job in enumerate(self.jobs):
            if i in self.results:
                continue
            status = TaskStatus.read(job.run_dir)
            if status and status.batch == self.batch and status.state == "running":
                events = read_log_events(job.run_dir)[self.offsets[i]:]
                out[i] = (status.attempt, events[-1][0] if events else "starting")
        return out

    def eta(self, running: dict[int, tuple[int, str]]) -> float | None:
        """Work left (a mean video per queued one, the rest of a mean video per running one) over the slots."""
        ok = [r.seconds for r in self.results.values() if r.status == "ok"]
        left = len(self.jobs) - len(self.results)
        if not left:
            return 0.0
        if not ok:
            return None
        mean = sum(ok) / len(ok)
        work = (left - len(running)) * mean
        for i in running:
            status = TaskStatus.read(self.jobs[i].run_dir)
            work += max(0.0, mean - (time.time() - status.started)) if status else mean
        return work / max(1, min(self.slots, left))

    def line(self) -> str:
        running = self.running()
        failed = sum(r.status != "ok" for r in self.results.values())
        queued = len(self.jobs) - len(self.results) - len(running)
        now = ", ".join(f"{self.jobs[i].video.name} {stage}" + (f" (attempt {a})" if a > 1 else "")
                        for i, (a, stage) in sorted(running.items()))
        return (f"[ray] {len(self.results) - failed}/{len(self.jobs)} done, {len(running)} running, {queued} queued, "
                f"{failed} failed, {format_duration(time.time() - self.t0)} elapsed, ETA {format_duration(self.eta(running))}"
                + (f" | {now}" if now else ""))

    def report(self) -> None:
        if self.say:
            self.say(self.line())
        self.last_line = time.time()


def check_head_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """One clear error when an explicit HOST:PORT (or ray://HOST:PORT) does not answer: ray.init would
    keep retrying for minutes before failing. Ray's own addresses ('auto', 'local', default) pass."""
    import socket

    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise VideditError(f"--address must be HOST:PORT, ray://HOST:PORT, 'auto' or 'local', got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise VideditError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} "
                           f"(is `ray start --head` running there, and the port open?)") from None


def run_videos_ray(pipeline: "Pipeline", videos: Sequence[Path], out: Path | None = None, *,
                   address: str | None = None, gpus_per_video: float | None = None, cpus_per_video: float = 1.0,
                   max_retries: int = 2, until: str | None = None, from_stage: str | None = None, force: bool = False,
                   run_dirs: Sequence[Path] | None = None, echo: Callable[[str], None] | None = None,
                   progress_every: float = 30.0, shard_frames: int | str | None = None) -> list["VideoResult"]:
    """Run each video as one Ray task; results in input order, failures reported like the local engine's.

    shard_frames: instead, each video in turn with its align's crops, encode, render and composite cut into parts of this
    many frames ("auto": about one per worker), one Ray task per part (videdit.engines.ray_shards).

    address: None = Ray's default (RAY_ADDRESS, else the latest cluster started on this machine, else a
    new one-machine cluster); "auto" = an existing cluster on this machine; "HOST:PORT" = that head
    node. When Ray is already initialised in this process, that connection is used and left open.
    max_retries: attempts after a worker or node is lost (exceptions in the pipeline are not retried).
    """
    ray = require_ray()
    from videdit.runner import VideoResult

    if max_retries < 0:
        raise VideditError(f"--max-retries must be 0 or more, got {max_retries}")
    say = echo or (None if pipeline.quiet else pipeline.echo)
    jobs = make_jobs(pipeline, videos, out, run_dirs)
    request = RunRequest(until, from_stage, force)

    started_here = not ray.is_initialized()
    if started_here:
        import logging

        check_head_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except ConnectionError as exc:
            raise VideditError(f"cannot reach the Ray cluster at {address or 'the default address'}: {_one_line(str(exc))}") from None
    try:
        plan = plan_resources(ray.nodes(), pipeline.device_request, cpus_per_video, gpus_per_video)
        spec = PipelineSpec.from_pipeline(pipeline, device=plan.device, dumps=_cloudpickle_dumps(ray))
        if shard_frames is not None:
            from videdit.engines.ray_shards import run_videos_sharded
            from videdit.shards import parse_shard_frames

            return run_videos_sharded(ray, pipeline, jobs, plan, spec, shard_frames=parse_shard_frames(shard_frames),
                                      max_retries=max_retries, until=until, from_stage=from_stage, force=force, say=say)
        batch = uuid.uuid4().hex
        offsets = [len(read_log_events(job.run_dir)) for job in jobs]
        if say:
            say(f"[ray] {len(jobs)} videos, {plan.cpus_per_video:g} CPU + {plan.gpus_per_video:g} GPU each, "
                f"up to {plan.slots} at once (cluster: {plan.cluster['CPU']:g} CPUs, {plan.cluster['GPU']:g} GPUs)")

        task = remote_task(ray, plan, max_retries)
        spec_ref = ray.put(spec)  # stored once, not copied into every task's arguments
        threads = max(1, int(plan.cpus_per_video))
        pending = {}
        for i, job in enumerate(jobs):
            ref = task.options(name=f"videdit:{job.video.name}").remote(spec_ref, job, request, batch, offsets[i], threads)
            pending[ref] = i

        progress = _Progress(jobs, batch, offsets, plan.slots, say)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    i = pending.pop(ref)
                    job = jobs[i]
                    try:
                        result, attempt = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        status = TaskStatus.read(job.run_dir)
                        attempt = status.attempt if status and status.batch == batch else 0
                        seconds = time.time() - status.started if status and status.batch == batch else 0.0
                        result = VideoResult(job.video, job.run_dir, status="failed",
                                             error=_failure_message(ray, exc, max_retries), seconds=seconds)
                    progress.results[i] = result
                    if say:
                        retried = f", attempt {attempt}" if attempt > 1 else ""
                        say(f"  {job.video.name}: {result.status} ({result.seconds:.1f}s{retried})"
                            + (f": {result.error}" if result.error else ""))
                if ready or time.time() - progress.last_line >= progress_every:
                    progress.report()
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return [progress.results[i] for i in range(len(jobs))]
    finally:
        if started_here:
            ray.shutdown()
