"""Frame-sharded stages without Ray: parts and their merge (videdit.shards, videdit.runner) run in this process.

The same part and merge functions run as Ray tasks with `--engine ray` (tests/test_ray.py); here they show that
a sharded run's outputs are the unsharded run's, byte for byte, and that a run cut off mid-stage keeps its
finished parts and resumes at part granularity.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from videdit.errors import VideditError
from videdit.runner import Stage, StageRunner, read_log_events
from videdit.shards import ShardFailed, ShardOptions, Sharding, run_parts_here, shard_ranges

SMALL = {  # 64 px stand-in networks, batches of 2 so that 7 frames in parts of 3 mix whole and partial batches
    "align.crop_size": 64,
    "encode.n_iters": 1,
    "encode.batch_size": 2,
    "encode.fit_memory": False,  # no probe pass per part: the batches are the configured ones anyway
    "encode.input_size": 64,
    "tune.steps": 1,
    "tune.batch_size": 2,
    "tune.allow_l2_only": True,
    "tune.lpips_weight": 0.0,
    "render.batch_size": 2,
    "render.fit_memory": False,
    "edit.direction": "age",
    "edit.strengths": [3.0],
}
N_FRAMES = 7


def _pipeline():
    from videdit.pipeline import Pipeline, StandInModels

    return Pipeline.from_preset("default", overrides=SMALL, quiet=True, models=StandInModels(resolution=64),
                                estimate_time=False)


def _recording(executed: list):
    """A part executor that runs the parts here and notes (stage, [frame ranges]) of each call."""
    def run(stage, todo, part, count):
        executed.append((stage, [frames for frames, _ in todo]))
        run_parts_here(stage, todo, part, count)

    return run


def _failing_at(first_frame: int, message: str, done: list | None = None):
    """A part executor whose part starting at `first_frame` raises RuntimeError(message); the others run here."""
    def run(stage, todo, part, count):
        def broken(start, end, folder):
            if start == first_frame:
                raise RuntimeError(message)
            if done is not None:
                done.append((start, end))
            part(start, end, folder)

        run_parts_here(stage, todo, broken, count)

    return run


def _tree(folder: Path) -> dict[str, str]:
    """sha256 of every output file under a stage folder (the manifest records mtimes, so it is left out)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "manifest.json"}


# --------------------------------------------------------------------------------------------------
# The cut and the runner's part mechanics, on a toy stage


def test_shard_ranges_cover_the_frames_in_whole_batches():
    for n in (1, 5, 7, 64, 1001):
        for size in (1, 2, 3, 10, 5000):
            for multiple in (1, 2, 4):
                ranges = shard_ranges(n, size, multiple)
                assert ranges[0][0] == 0 and ranges[-1][1] == n
                assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous, no overlap
                assert all(start % multiple == 0 for start, _ in ranges)  # every part starts on a batch boundary
                assert all(end > start for start, end in ranges)
    assert ShardOptions(workers=2).ranges(7, 2) == [(0, 4), (4, 7)]  # about one part per worker
    assert ShardOptions(frames=3).ranges(7, 2) == [(0, 4), (4, 7)]  # rounded up to whole batches
    with pytest.raises(VideditError, match="--shard-frames"):
        ShardOptions(frames=0)


def _toy_stage(n: int, size: int, calls: list, fail_at: int | None = None) -> Stage:
    """Frame i's output is i squared; parts write their rows, the merge joins them."""

    def part(start: int, end: int, folder: Path):
        from videdit import progress

        calls.append((start, end))
        with progress.bar(end - start, "toy", "frame") as bar:
            if start == fail_at:
                raise RuntimeError("disk on fire\nsecond line")
            np.save(folder / "rows.npy", np.arange(start, end) ** 2)
            bar.update(end - start)

    def merge(folders: list[Path], work: Path):
        np.save(work / "rows.npy", np.concatenate([np.load(f / "rows.npy") for f in folders]))

    def whole(work: Path):
        np.save(work / "rows.npy", np.arange(n) ** 2)

    return Stage("toy", whole, {"n": n}, shards=Sharding(lambda: ShardOptions(frames=size).ranges(n), part, merge))


def test_parts_merge_resume_and_one_bar(tmp_path):
    from videdit import progress

    class Counted(progress.Reporter):
        """Keeps the bars the runner opens on the driver (the parts' own bars go through CountingReporter)."""

        def __init__(self):
            super().__init__(quiet=True)
            self.bars: list = []

        def bar(self, total, desc, unit="it", initial=0):
            self.bars.append(super().bar(total, desc, unit, initial))
            return self.bars[-1]

    counted = Counted()
    run_dir = tmp_path / "run"
    calls: list = []
    with progress.reporting(counted):
        with pytest.raises(ShardFailed) as failed:
            StageRunner(run_dir).run(_toy_stage(10, 3, calls, fail_at=6))
        assert str(failed.value).startswith("toy: frames 6-8 failed: RuntimeError: second line")
        assert "\n" not in str(failed.value)
        parts = run_dir / "toy.partial" / "parts"
        assert sorted(p.name for p in parts.iterdir()) == ["000000-000003", "000003-000006", "000006-000009.partial"]
        assert counted.bars[-1].n == 6 and counted.bars[-1].total == 10  # one bar, every part's frames

        calls.clear()
        outcome = StageRunner(run_dir).run(_toy_stage(10, 3, calls))
    assert outcome.status == "ran" and calls == [(6, 9), (9, 10)]  # the finished parts were kept
    assert ("toy", "parts") in read_log_events(run_dir)
    assert np.array_equal(np.load(run_dir / "toy" / "rows.npy"), np.arange(10) ** 2)
    assert not (run_dir / "toy" / "parts").exists() and not (run_dir / "toy.partial").exists()
    assert (counted.bars[-1].n, counted.bars[-1].total) == (10, 10)

    # a new cut (another --shard-frames) leaves the old parts behind: only the new plan's parts are merged
    calls.clear()
    (run_dir / "toy.partial" / "parts" / "000000-000004").mkdir(parents=True)  # a stray part of another cut
    StageRunner(run_dir, force=True).run(_toy_stage(10, 5, calls))
    assert calls == [(0, 5), (5, 10)]
    assert np.array_equal(np.load(run_dir / "toy" / "rows.npy"), np.arange(10) ** 2)


# --------------------------------------------------------------------------------------------------
# The real stages: sharded run == unsharded run, byte for byte


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from videdit.synthetic import make_clip

    return make_clip(tmp_path_factory.mktemp("clip") / "face.mp4", n_frames=N_FRAMES, size=(224, 192))


@pytest.fixture(scope="module")
def unsharded(clip, tmp_path_factory):
    result = _pipeline().run(clip.path, tmp_path_factory.mktemp("whole") / "run")
    assert result.status == "ok", result.error
    return result


@pytest.fixture(scope="module")
def sharded(clip, unsharded, tmp_path_factory):
    """The unsharded run's folder with align's crops, encode, render and composite done again in parts. Encode,
    tune, edit and smooth stay cached only if the sharded align and encode wrote the same files (their keys hold
    their inputs' output digests)."""
    import shutil

    run_dir = tmp_path_factory.mktemp("sharded") / "run"
    shutil.copytree(unsharded.run_dir, run_dir)
    executed: list = []
    result = _pipeline().run(clip.path, run_dir, shards=ShardOptions(frames=3), parts=_recording(executed),
                             force={"align", "encode", "render", "composite"})
    assert result.status == "ok", result.error
    return result, executed


@pytest.mark.slow  # two runs of the pipeline: minutes on 2 shared cores
@pytest.mark.numeric
def test_sharded_run_equals_unsharded_byte_for_byte(unsharded, sharded):
    result, executed = sharded
    # parts of 3 frames rounded up to whole batches of 2 (encode, render); align and composite have no batches
    assert executed == [("align", [(0, 3), (3, 6), (6, 7)]), ("encode", [(0, 4), (4, 7)]),
                        ("render", [(0, 4), (4, 7)]), ("composite", [(0, 3), (3, 6), (6, 7)])]
    assert [result.stages[s] for s in ("align", "encode", "tune", "edit", "smooth", "render", "composite")] == \
        ["ran", "ran", "cached", "cached", "cached", "ran", "ran"]
    for stage in ("align", "encode", "render", "composite"):
        ours, theirs = _tree(result.run_dir / stage), _tree(unsharded.run_dir / stage)
        assert ours == theirs, stage
        assert not (result.run_dir / stage / "parts").exists()
    assert [p.name for p in result.outputs] == [p.name for p in unsharded.outputs]
    for ours, theirs in zip(result.outputs, unsharded.outputs):
        assert ours.read_bytes() == theirs.read_bytes(), ours.name


@pytest.mark.slow
@pytest.mark.numeric
def test_cut_off_stage_resumes_its_missing_parts(clip, unsharded, sharded, tmp_path):
    """A part that fails fails the video with one line naming its frames; the rerun computes only the missing
    parts and ends with the same bytes."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(sharded[0].run_dir, run_dir)
    shutil.rmtree(run_dir / "composite")
    for published in run_dir.glob("face.*.mp4"):
        published.unlink()
    done: list = []
    result = _pipeline().run(clip.path, run_dir, shards=ShardOptions(frames=3),
                             parts=_failing_at(3, "worker caught fire", done))
    assert result.status == "failed"
    assert result.error.startswith("composite: frames 3-5 failed: RuntimeError: worker caught fire"), result.error
    assert (run_dir / "composite.partial" / "parts" / "000000-000003").is_dir()
    assert done == [(0, 3)]

    resumed: list = []
    result = _pipeline().run(clip.path, run_dir, shards=ShardOptions(frames=3), parts=_recording(resumed))
    assert result.status == "ok", result.error
    assert resumed == [("composite", [(3, 6), (6, 7)])]
    assert _tree(run_dir / "composite") == _tree(unsharded.run_dir / "composite")


@pytest.mark.slow
@pytest.mark.numeric
def test_sharded_align_resumes_after_its_landmark_pass(clip, unsharded, sharded, tmp_path):
    """align in parts: the landmark pass runs once, when the stage plans its parts; a part that fails leaves the
    pass and the finished parts, and the rerun cuts only the missing crops, ending with the unsharded bytes."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(sharded[0].run_dir, run_dir)
    shutil.rmtree(run_dir / "align")
    said: list[str] = []
    from videdit.pipeline import Pipeline, StandInModels

    def pipe():
        return Pipeline.from_preset("default", overrides=SMALL, quiet=False, echo=said.append, stream=io.StringIO(),
                                    estimate_time=False, models=StandInModels(resolution=64))

    result = pipe().run(clip.path, run_dir, until="align", shards=ShardOptions(frames=3), parts=_failing_at(3, "disk on fire"))
    assert result.status == "failed" and result.error.startswith("align: frames 3-5 failed: RuntimeError: disk on fire")
    assert (run_dir / "align.partial" / "parts" / "000000-000003").is_dir()
    resumed: list = []
    result = pipe().run(clip.path, run_dir, shards=ShardOptions(frames=3), parts=_recording(resumed))
    assert result.status == "ok", result.error
    assert resumed == [("align", [(3, 6), (6, 7)])]  # encode and the rest: cached (same align bytes)
    assert sum("crops in parts" in line for line in said) == 1, said  # the landmark pass ran once
    assert _tree(run_dir / "align") == _tree(unsharded.run_dir / "align")


def test_sharded_align_with_the_covering_box_equals_unsharded(clip, tmp_path):
    """align.box = "cover" (no crop is final during the landmark pass) with the preview off: the landmark pass
    cuts nothing and the parts cut every crop, to the unsharded stage's bytes."""
    from videdit.pipeline import Pipeline, StandInModels

    def pipe():
        return Pipeline.from_preset("default", overrides={**SMALL, "align.box": "cover", "align.preview": False},
                                    quiet=True, estimate_time=False, models=StandInModels(resolution=64))

    whole = pipe().run(clip.path, tmp_path / "whole", until="align")
    executed: list = []
    parts = pipe().run(clip.path, tmp_path / "parts", until="align", shards=ShardOptions(frames=3),
                       parts=_recording(executed))
    assert whole.status == parts.status == "ok", (whole.error, parts.error)
    assert executed == [("align", [(0, 3), (3, 6), (6, 7)])]
    assert _tree(tmp_path / "parts" / "align") == _tree(tmp_path / "whole" / "align")
