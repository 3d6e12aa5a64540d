"""`--engine ray`: the same outputs as `--engine local` on a local 2-CPU Ray cluster, and a video whose
worker is SIGKILLed midway finishes by resuming its cached stages (and PTI from its checkpoint). With
`--shard-frames`, one video's frame-wise stages in parts across the workers: the same bytes, a killed
part's worker retried, a killed driver resumed at part granularity, every part's frames counted.

The Ray tests skip when Ray is not installed (`pip install 'videdit[ray]'`); the checks of the engine's
own logic (options, forced stages, what travels to the workers) run everywhere.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import pickle
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from videdit.errors import VideditError
from videdit.runner import StageLog, read_log_events

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (pip install 'videdit[ray]')")

# Small enough for 2 shared cores: 64 px stand-in networks, 3-frame clips, 4 PTI steps with a
# checkpoint after each (the fault test kills a worker between two of them).
SMALL = {
    "align.crop_size": 64,
    "encode.n_iters": 1,
    "encode.batch_size": 4,
    "encode.input_size": 64,
    "tune.steps": 4,
    "tune.batch_size": 2,
    "tune.checkpoint_every": 1,
    "tune.allow_l2_only": True,
    "tune.lpips_weight": 0.0,
    "edit.direction": "age",
    "edit.strengths": [3.0],
}
CLIP_NAMES = ("a_face.mp4", "b_face.mp4", "c_face.mp4")


def _pipeline(quiet: bool = True, echo=None):
    from videdit.pipeline import Pipeline, StandInModels

    return Pipeline.from_preset("default", overrides=SMALL, quiet=quiet, echo=echo, models=StandInModels(resolution=64))


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Engine logic (no Ray needed)


def test_ray_missing_is_one_line_error(monkeypatch, tmp_path):
    import sys

    from videdit.engines import run_videos

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(VideditError) as err:
        run_videos(_pipeline(), [tmp_path / "x.mp4"], tmp_path / "out", engine="ray")
    assert "pip install 'videdit[ray]'" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(VideditError, match="unknown engine 'spark'"):
        run_videos(_pipeline(), [tmp_path / "x.mp4"], engine="spark")


def test_unreachable_head_is_one_line_error_not_a_hang():
    """An explicit HOST:PORT that nothing listens on fails at once (ray.init would retry for minutes)."""
    import socket

    from videdit.engines.ray_engine import check_head_reachable

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(VideditError, match="cannot reach the Ray cluster") as err:
            check_head_reachable(address, timeout_s=2.0)
        assert "\n" not in str(err.value)
    with pytest.raises(VideditError, match="HOST:PORT"):
        check_head_reachable("my-cluster")
    with socket.socket() as server:  # a listening port passes; Ray's own address words pass untouched
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_head_reachable(f"127.0.0.1:{server.getsockname()[1]}")
    for address in (None, "auto", "local"):
        check_head_reachable(address)


def test_pipeline_spec_pickles_and_rebuilds(tmp_path):
    from videdit.engines.ray_engine import PipelineSpec
    from videdit.pipeline import Pipeline, PretrainedModels, StandInModels

    pipe = _pipeline()
    spec = pickle.loads(pickle.dumps(PipelineSpec.from_pipeline(pipe)))
    rebuilt = spec.build()
    assert rebuilt.settings == pipe.settings
    assert isinstance(rebuilt.models, StandInModels)
    assert rebuilt.models.generator_identity() == pipe.models.generator_identity()
    assert rebuilt.models.encoder_identity() == pipe.models.encoder_identity()
    assert rebuilt.quiet  # workers leave progress to the driver

    released = Pipeline.from_preset("default", weights_dir=tmp_path / "w", quiet=True)
    spec = pickle.loads(pickle.dumps(PipelineSpec.from_pipeline(released, device="cpu")))
    assert spec.models is None and spec.device == "cpu"  # rebuilt on the worker, nothing loaded is shipped
    rebuilt = spec.build()
    assert isinstance(rebuilt.models, PretrainedModels) and rebuilt.weights_dir == released.weights_dir.resolve()
    assert rebuilt.models.encoder_name == released.models.encoder_name

    class LockedModels(StandInModels):
        def __init__(self):
            super().__init__()
            self.lock = threading.Lock()  # pickles with neither pickle nor cloudpickle

    with pytest.raises(VideditError, match="cannot be sent to Ray workers"):
        PipelineSpec.from_pipeline(Pipeline(pipe.settings, models=LockedModels(), quiet=True))


def test_plan_resources_checks_before_submitting():
    from videdit.engines.ray_engine import plan_resources

    cpu_node = {"Alive": True, "Resources": {"CPU": 8.0}}
    gpu_node = {"Alive": True, "Resources": {"CPU": 16.0, "GPU": 4.0}}
    dead_gpu_node = {"Alive": False, "Resources": {"CPU": 16.0, "GPU": 4.0}}

    plan = plan_resources([cpu_node, gpu_node], "auto", cpus_per_video=2, gpus_per_video=None)
    assert (plan.gpus_per_video, plan.device, plan.slots) == (1.0, "auto", 4)  # GPUs limit the GPU node to 4
    plan = plan_resources([cpu_node, gpu_node], "auto", cpus_per_video=2, gpus_per_video=0.5)
    assert plan.slots == 8
    plan = plan_resources([cpu_node, dead_gpu_node], "auto", cpus_per_video=3, gpus_per_video=None)
    assert (plan.gpus_per_video, plan.device, plan.slots) == (0.0, "cpu", 2)  # no GPU reserved: run on CPU

    for kwargs, message in [
        (dict(gpus_per_video=1), "has 0 GPUs"),
        (dict(gpus_per_video=None, cpus_per_video=9), "no node of the Ray cluster has 9 CPUs"),
        (dict(gpus_per_video=0, device="cuda"), "--device cuda"),
        (dict(cpus_per_video=0), "--cpus-per-video must be positive"),
        (dict(gpus_per_video=-1), "--gpus-per-video must be 0 or more"),
    ]:
        args = {"device": "auto", "cpus_per_video": 1, "gpus_per_video": None, **kwargs}
        with pytest.raises(VideditError, match=message):
            plan_resources([cpu_node], args["device"], args["cpus_per_video"], args["gpus_per_video"])


@needs_ray
def test_remote_task_options_for_cpu_and_gpu_plans():
    """Ray validates task options when they are set: building the task for each kind of plan must pass."""
    import ray

    from videdit.engines.ray_engine import RayPlan, remote_task

    for plan in (RayPlan(1.0, 0.0, "cpu", 2), RayPlan(4.0, 0.5, "auto", 8)):
        task = remote_task(ray, plan, max_retries=2)
        task.options(name="videdit:x.mp4")  # what the engine does per video
        assert task._default_options["num_gpus"] == plan.gpus_per_video
        assert task._default_options["max_retries"] == 2 and task._default_options["retry_exceptions"] is False
        assert task._default_options.get("max_calls") == (1 if plan.gpus_per_video else None)


def test_forced_stages_recomputed_once_per_batch(tmp_path):
    """--force / --from on a retry: what the first attempt finished stays; a cut-off stage resumes."""
    from videdit.engines.ray_engine import RunRequest, stages_to_force

    run_dir = tmp_path / "run"
    log = StageLog(run_dir / "log.txt")
    for stage in ("align", "encode", "tune"):  # an earlier, complete run
        log.write(stage, "start")
        log.write(stage, "done", "1.00s")
        (run_dir / stage).mkdir(parents=True)
    offset = len(read_log_events(run_dir))

    assert stages_to_force(RunRequest(), run_dir, offset) == set()
    assert stages_to_force(RunRequest(from_stage="tune"), run_dir, offset) == {"tune", "edit", "smooth", "stitch", "render", "composite"}

    # the first attempt of this batch redid align and was killed in encode
    log.write("align", "start")
    log.write("align", "done", "1.00s")
    log.write("encode", "start")
    (run_dir / "encode.partial").mkdir()
    forced = stages_to_force(RunRequest(force=True), run_dir, offset)
    assert forced == {"tune", "edit", "smooth", "stitch", "render", "composite"}
    assert not (run_dir / "encode").exists()  # stale output gone, so encode.partial resumes
    assert (run_dir / "align").exists() and (run_dir / "tune").exists() and (run_dir / "encode.partial").exists()


def test_jobs_name_run_folders_like_run_many(tmp_path):
    from videdit.engines import make_jobs

    pipe = _pipeline()
    jobs = make_jobs(pipe, [tmp_path / "x" / "a.mp4", tmp_path / "b.mp4"], tmp_path / "out")
    assert [j.run_dir for j in jobs] == [tmp_path / "out" / "a.mp4.videdit", tmp_path / "out" / "b.mp4.videdit"]
    assert make_jobs(pipe, [tmp_path / "a.mp4"])[0].run_dir == tmp_path / "a.mp4.videdit"
    assert make_jobs(pipe, [tmp_path / "a.mp4"], run_dirs=[tmp_path / "r"])[0].run_dir == tmp_path / "r"  # one file, --out
    with pytest.raises(VideditError, match="share a run folder"):
        make_jobs(pipe, [tmp_path / "x" / "a.mp4", tmp_path / "a.mp4"], tmp_path / "out")


# --------------------------------------------------------------------------------------------------
# On a Ray cluster


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from videdit.synthetic import make_clip

    folder = tmp_path_factory.mktemp("videos")
    for i, name in enumerate(CLIP_NAMES):
        make_clip(folder / name, n_frames=3, size=(256, 224), face_centre=(255.0 - 8 * i, 110.0 + 3 * i))
    return folder


@pytest.fixture(scope="module")
def local_results(clips, tmp_path_factory):
    """--engine local on the three clips, one torch thread (what a 1-CPU Ray task gets), for bit-equal outputs."""
    import torch

    from videdit.engines.local import run_videos_local

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = run_videos_local(_pipeline(), [clips / n for n in CLIP_NAMES], tmp_path_factory.mktemp("local"))
    finally:
        torch.set_num_threads(threads)
    assert [r.status for r in results] == ["ok"] * 3, [r.error for r in results]
    return {r.input.name: r for r in results}


@pytest.fixture(scope="module")
def ray_cluster():
    """A fresh one-machine Ray cluster with 2 CPUs, stopped after this module's tests."""
    if not HAVE_RAY:
        pytest.skip("Ray is not installed (pip install 'videdit[ray]')")
    import ray

    temp_dir = tempfile.mkdtemp(prefix="vray")  # short: Ray's socket paths live under it
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=80 * 1024**2,
             _temp_dir=temp_dir, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _assert_same_outputs(result, reference):
    assert [p.name for p in result.outputs] == [p.name for p in reference.outputs]
    for ours, theirs in zip(result.outputs, reference.outputs):
        assert _sha(ours) == _sha(theirs), ours
    ours, theirs = result.run_dir, reference.run_dir
    assert np.array_equal(np.load(ours / "encode" / "latents.npy"), np.load(theirs / "encode" / "latents.npy"))
    from safetensors.numpy import load_file

    a, b = load_file(ours / "tune" / "generator.safetensors"), load_file(theirs / "tune" / "generator.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@needs_ray
def test_ray_outputs_equal_local(ray_cluster, clips, local_results, tmp_path):
    from videdit.engines.ray_engine import run_videos_ray
    from videdit.engines import format_summary

    videos = [clips / n for n in CLIP_NAMES] + [tmp_path / "d_corrupt.mp4"]
    videos[-1].write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    lines: list[str] = []
    results = run_videos_ray(_pipeline(), videos, tmp_path / "runs", cpus_per_video=1, max_retries=1, echo=lines.append)

    assert [r.input.name for r in results] == [v.name for v in videos]
    assert [r.status for r in results] == ["ok", "ok", "ok", "failed"], [r.error for r in results]
    assert results[3].error and "\n" not in results[3].error
    for r in results[:3]:
        assert r.run_dir == tmp_path / "runs" / (r.input.name + ".videdit")
        _assert_same_outputs(r, local_results[r.input.name])
        assert json.loads((r.run_dir / ".ray_task.json").read_text())["attempt"] == 1
    assert any("[ray] 3/4 done, 0 running, 0 queued, 1 failed" in line for line in lines), lines
    assert format_summary(results).endswith("3 done, 1 failed")


@pytest.mark.slow
@needs_ray
def test_killed_worker_resumes_from_cached_stages(ray_cluster, clips, local_results, tmp_path):
    from videdit.engines.ray_engine import TaskStatus, run_videos_ray
    from videdit.tuning.data import CHECKPOINT_NAME

    videos = [clips / n for n in CLIP_NAMES[:2]]
    victim_dir = tmp_path / "runs" / (videos[1].name + ".videdit")
    killed: dict[str, object] = {}

    def kill_in_tune():
        """SIGKILL the victim's worker once PTI has written a checkpoint, before tune finishes."""
        deadline = time.time() + 600
        while time.time() < deadline:
            log = victim_dir / "log.txt"
            if (log.exists() and "tune start" in log.read_text()
                    and (victim_dir / "tune.partial" / "checkpoints" / CHECKPOINT_NAME).exists()):
                status = TaskStatus.read(victim_dir)
                killed["too_late"] = (victim_dir / "tune" / "manifest.json").exists()
                os.kill(status.pid, signal.SIGKILL)
                killed["pid"] = status.pid
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_in_tune, daemon=True)
    killer.start()
    results = run_videos_ray(_pipeline(), videos, tmp_path / "runs", cpus_per_video=1, max_retries=2, echo=None)
    killer.join(timeout=5)

    assert "pid" in killed, "the victim never reached a PTI checkpoint"
    assert not killed["too_late"], "tune had finished before the kill: nothing was tested"
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
    for r in results:
        assert all(p.exists() for p in r.outputs) and len(r.outputs) == 2

    status = TaskStatus.read(victim_dir)
    assert status.attempt == 2 and status.pid != killed["pid"] and status.state == "finished"
    events = read_log_events(victim_dir)
    count = {e: events.count(e) for e in set(events)}
    # the first attempt computed align and encode once; the retry found them cached and resumed tune
    assert count[("align", "start")] == 1 and count[("align", "cached")] == 1
    assert count[("encode", "start")] == 1 and count[("encode", "cached")] == 1
    assert count[("tune", "resume")] == 1 and count[("tune", "done")] == 1
    assert events.index(("align", "cached")) > events.index(("tune", "start"))
    tune_info = json.loads((victim_dir / "tune" / "tune.json").read_text())
    assert tune_info["resumed_from_step"] >= 1 and tune_info["steps_done"] == SMALL["tune.steps"]

    bystander = results[0]
    assert TaskStatus.read(bystander.run_dir).attempt == 1
    _assert_same_outputs(bystander, local_results[bystander.input.name])
    # PTI resumes from its checkpoint to the same generator as an uninterrupted run
    _assert_same_outputs(results[1], local_results[results[1].input.name])


# --------------------------------------------------------------------------------------------------
# One video across the cluster: --shard-frames (videdit.engines.ray_shards)

SHARDED_FRAMES = 8  # two parts of 4 (one per worker, whole encode batches of 4)


@pytest.fixture(scope="module")
def long_clip_local(tmp_path_factory):
    """An 8-frame clip through --engine local, one torch thread: the bytes the sharded Ray run must give."""
    import torch

    from videdit.synthetic import make_clip

    clip = make_clip(tmp_path_factory.mktemp("long") / "long.mp4", n_frames=SHARDED_FRAMES, size=(256, 224))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = _pipeline().run(clip.path, tmp_path_factory.mktemp("long_local") / "run")
    finally:
        torch.set_num_threads(threads)
    assert result.status == "ok", result.error
    return clip, result


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): _sha(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def _local_run_less_framewise_stages(local, run_dir: Path) -> Path:
    """A copy of the local run's folder without align, encode, render, composite and the published videos: what
    the sharded engine has left to do (tune, edit and smooth stay cached when it writes the same bytes)."""
    shutil.copytree(local.run_dir, run_dir)
    for stage in ("align", "encode", "render", "composite"):
        shutil.rmtree(run_dir / stage)
    for published in local.outputs:
        (run_dir / published.name).unlink()
    return run_dir


@pytest.mark.slow
@needs_ray
def test_sharded_video_equals_local_with_a_worker_killed_in_encode(ray_cluster, long_clip_local, tmp_path):
    """The local run's folder less encode, render and composite, finished by the sharded Ray engine while one
    encode part's worker is SIGKILLed: Ray retries that part, and every output is the local run's, byte for
    byte (tune, edit and smooth stay cached: their keys hold encode's output digest)."""
    clip, local = long_clip_local
    run_dir = _local_run_less_framewise_stages(local, tmp_path / "run")
    killed: dict[str, object] = {}

    def kill_an_encode_part():
        deadline = time.time() + 600
        while time.time() < deadline:
            for marker in (run_dir / "encode.partial" / "parts").glob("*.partial/.ray_part.json"):
                try:
                    pid = json.loads(marker.read_text())["pid"]
                except (OSError, ValueError):
                    continue
                time.sleep(0.5)  # into the encoding
                killed["part"] = marker.parent.name
                killed["too_late"] = not marker.parent.exists()
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    import torch

    from videdit.engines.ray_engine import run_videos_ray

    killer = threading.Thread(target=kill_an_encode_part, daemon=True)
    killer.start()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    lines: list[str] = []
    try:
        results = run_videos_ray(_pipeline(), [clip.path], run_dirs=[run_dir], cpus_per_video=1, max_retries=2,
                                 shard_frames="auto", echo=lines.append)
    finally:
        torch.set_num_threads(threads)
    killer.join(timeout=5)

    assert "part" in killed and not killed["too_late"], "no encode part was killed midway: nothing was tested"
    (result,) = results
    assert result.status == "ok", result.error
    assert any("in parts of about 1 per worker (2 workers)" in line for line in lines), lines
    assert [result.stages[s] for s in ("align", "encode", "tune", "edit", "smooth", "render", "composite")] == \
        ["ran", "ran", "cached", "cached", "cached", "ran", "ran"]
    log = (run_dir / "log.txt").read_text()
    start = killed["part"].split(".")[0].split("-")
    assert f"encode: frames {int(start[0])}-{int(start[1]) - 1} done on attempt 2" in log, log[-2000:]
    for stage in ("align", "encode", "render", "composite"):
        assert _tree(run_dir / stage) == _tree(local.run_dir / stage), stage
    assert [p.name for p in result.outputs] == [p.name for p in local.outputs]
    for ours, theirs in zip(result.outputs, local.outputs):
        assert _sha(ours) == _sha(theirs), ours.name


DRIVER = """
import sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_ray import _pipeline
from videdit.shards import ShardOptions
r = _pipeline().run({video!r}, {run!r}, shards=ShardOptions(frames=4))
print(r.status, r.error)
"""


@pytest.mark.slow
@needs_ray
def test_killed_driver_resumes_at_part_granularity(ray_cluster, long_clip_local, tmp_path):
    """A driver SIGKILLed after encode's first part (here a local sharded run) leaves that part complete; the
    sharded Ray run that follows computes only the other one and ends with the local run's bytes."""
    import subprocess
    import sys

    import torch

    from videdit.engines.ray_engine import run_videos_ray

    clip, local = long_clip_local
    run_dir = _local_run_less_framewise_stages(local, tmp_path / "run")
    code = DRIVER.format(tests=str(Path(__file__).parent), video=str(clip.path), run=str(run_dir))
    first_part = run_dir / "encode.partial" / "parts" / "000000-000004"
    driver = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None and not first_part.is_dir():
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert first_part.is_dir() and not (run_dir / "encode" / "manifest.json").exists(), "killed too early or too late"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (result,) = run_videos_ray(_pipeline(), [clip.path], run_dirs=[run_dir], cpus_per_video=1, shard_frames=4,
                                   echo=None)
    finally:
        torch.set_num_threads(threads)
    assert result.status == "ok", result.error
    events = read_log_events(run_dir)
    assert ("encode", "resume") in events and ("encode", "parts") in events
    assert "encode parts 1 of 2 parts kept" in (run_dir / "log.txt").read_text()
    for stage in ("align", "encode", "render", "composite"):
        assert _tree(run_dir / stage) == _tree(local.run_dir / stage), stage
    for ours, theirs in zip(result.outputs, local.outputs):
        assert _sha(ours) == _sha(theirs), ours.name


@pytest.mark.slow
@needs_ray
def test_parts_on_ray_count_every_frame_on_one_bar(ray_cluster, long_clip_local, tmp_path):
    """RayParts: composite's two parts on two PartWorker actors; the FrameCounter actor brings every part's frames to
    the driver's count, once each."""
    from videdit.engines.ray_engine import PipelineSpec, plan_resources
    from videdit.engines.ray_shards import RayParts, RayWorkers
    from videdit.shards import ShardOptions, finished_parts, part_folder

    clip, local = long_clip_local
    run_dir = tmp_path / "run"
    shutil.copytree(local.run_dir, run_dir)
    shutil.rmtree(run_dir / "composite")
    pipe = _pipeline()
    plan = plan_resources(ray_cluster.nodes(), "cpu", 1, 0)
    shards = ShardOptions(workers=plan.slots)
    work = run_dir / "composite.partial"
    ranges = shards.ranges(SHARDED_FRAMES)
    assert ranges == [(0, 4), (4, 8)]
    counted: list[int] = []
    spec = PipelineSpec.from_pipeline(pipe, device="cpu")
    with RayWorkers(ray_cluster, plan, spec, max_retries=0, poll_s=0.05) as workers:
        RayParts(workers, clip.path, run_dir, shards)("composite", [(r, part_folder(work, r)) for r in ranges], None,
                                                      counted.append)
        assert len(workers.actors) == 2  # one per part: the cluster's two slots
    assert sum(counted) == SHARDED_FRAMES and all(n > 0 for n in counted)
    assert sorted(finished_parts(work)) == ranges


# --------------------------------------------------------------------------------------------------
# Several face tracks: their tuning side by side, one Ray task per track (RayTrackTasks)


TRACKS_SETTINGS = {**SMALL, "faces.select": "all", "faces.min_track_frames": 4, "tune.steps": 6}


def _tracks_pipeline(stream=None):
    from videdit.pipeline import Pipeline, StandInModels

    return Pipeline.from_preset("default", overrides=TRACKS_SETTINGS, quiet=stream is None, stream=stream,
                                estimate_time=False, models=StandInModels(resolution=64))


@pytest.fixture(scope="module")
def two_people_local(tmp_path_factory):
    """Two people side by side through --engine local with --faces all, one torch thread: the bytes the Ray
    runs with their tracks tuned side by side must give."""
    import torch

    from videdit.synthetic import FacePlacement, ShotSpec, make_scene_clip

    folder = tmp_path_factory.mktemp("two_people")
    clip = make_scene_clip(folder / "two.mp4", [ShotSpec(6, (
        FacePlacement("astronaut", 88.0, (80, 96), drift_px=(1.5, 0)),  # faces the HOG detector finds (80 px window)
        FacePlacement("grace_hopper", 88.0, (240, 96), drift_px=(-1.0, 0.5))))], size=(320, 192), crf=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the driver's and each 1-CPU worker's thread count (docs/ray.md)
    try:
        local = _tracks_pipeline().run(clip.path, folder / "local")
    finally:
        torch.set_num_threads(threads)
    assert local.status == "ok", local.error
    return clip, local


def _run_tracks_on_ray(clip, run_dir: Path, stream=None):
    import torch

    from videdit.engines.ray_engine import run_videos_ray

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (result,) = run_videos_ray(_tracks_pipeline(stream), [clip.path], run_dirs=[run_dir], cpus_per_video=1,
                                   shard_frames="auto", max_retries=2, echo=None)
    finally:
        torch.set_num_threads(threads)
    assert result.status == "ok", result.error
    return result


def _assert_tracks_equal(result, local) -> None:
    from safetensors.numpy import load_file

    for track in ("t1", "t2"):
        ours = load_file(result.run_dir / "tracks" / track / "tune" / "generator.safetensors")
        theirs = load_file(local.run_dir / "tracks" / track / "tune" / "generator.safetensors")
        assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours), track
    assert [p.name for p in result.outputs] == [p.name for p in local.outputs]
    for ours, theirs in zip(result.outputs, local.outputs):
        assert _sha(ours) == _sha(theirs), ours.name


@pytest.mark.slow
@needs_ray
def test_face_tracks_tuned_side_by_side_equal_local(ray_cluster, two_people_local, tmp_path):
    """Two people, --faces all: the sharded Ray run tunes both tracks at once on two workers, says so, and every
    output (each track's tuned generator, the final video) is the local run's, byte for byte."""
    import io

    clip, local = two_people_local
    said = io.StringIO()
    result = _run_tracks_on_ray(clip, tmp_path / "ray", said)
    lines = said.getvalue().splitlines()
    assert "tune: tracks t1, t2 side by side" in lines, lines
    assert any(line.startswith("[") and "t1/tune ran in" in line for line in lines), lines
    assert any(line.startswith("[") and "t2/tune ran in" in line for line in lines), lines
    assert result.stages["t1/tune"] == result.stages["t2/tune"] == "ran"
    _assert_tracks_equal(result, local)


def _worker_pids(doing: str) -> list[int]:
    """Ray worker processes whose title names `doing` (Ray titles a worker ray::<the call's name>: RayWorkers
    names each call videdit:<video>:<track>:<stage>, or videdit:<video>:<stage>:<frames> for a part)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and doing in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
@needs_ray
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the Ray worker to kill through /proc")
def test_face_track_worker_killed_in_tune_resumes_from_its_checkpoint(ray_cluster, two_people_local, tmp_path):
    """A worker SIGKILLed while it tunes a track, after both tracks' first PTI checkpoint: Ray restarts it and runs
    the track again, which resumes from its checkpoint; the outputs are still the local run's."""
    from videdit.tuning.data import CHECKPOINT_NAME

    clip, local = two_people_local
    run_dir = tmp_path / "ray"
    killed: dict[str, object] = {}

    def kill_a_tuning_worker():
        deadline = time.time() + 600
        checkpoints = [run_dir / "tracks" / t / "tune.partial" / "checkpoints" / CHECKPOINT_NAME for t in ("t1", "t2")]
        while time.time() < deadline:
            pids = _worker_pids(f"ray::videdit:{clip.path.name}:t1:tune") + \
                _worker_pids(f"ray::videdit:{clip.path.name}:t2:tune")
            if pids and all(c.exists() for c in checkpoints):
                killed["too_late"] = any((run_dir / "tracks" / t / "tune").exists() for t in ("t1", "t2"))
                os.kill(pids[0], signal.SIGKILL)
                killed["pid"] = pids[0]
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_tuning_worker, daemon=True)
    killer.start()
    result = _run_tracks_on_ray(clip, run_dir)
    killer.join(timeout=5)
    assert "pid" in killed, "no worker was seen tuning with both checkpoints written"
    assert not killed["too_late"], "a track's tuning had finished before the kill: nothing was tested"
    resumed = [json.loads((run_dir / "tracks" / t / "tune" / "tune.json").read_text()).get("resumed_from_step", 0)
               for t in ("t1", "t2")]
    assert max(resumed) >= 1, resumed  # the killed track went on from a checkpoint, not from step 0
    _assert_tracks_equal(result, local)
