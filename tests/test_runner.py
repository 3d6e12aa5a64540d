"""The stage runner: caching by manifest, invalidation, atomic completion, resume of partial work."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from videdit.runner import Stage, StageRunner, read_log_events


def _chain(run_dir: Path, src: Path, scale: int, calls: list[str]):
    """Two stages: 'double' reads src, 'add' reads double's output."""

    def double(work: Path):
        calls.append("double")
        (work / "out.txt").write_text(str(int(src.read_text()) * scale))

    def add(work: Path):
        calls.append("add")
        (work / "out.txt").write_text(str(int((run_dir / "double" / "out.txt").read_text()) + 1))

    return [
        Stage("double", double, params={"scale": scale}, inputs={"src": src}),
        Stage("add", add, params={}, inputs={"double": run_dir / "double"}),
    ]


def _run_all(run_dir, stages):
    runner = StageRunner(run_dir)
    outcomes = []
    for st in stages:
        # downstream inputs are resolved when the stage runs, after its upstream exists
        outcomes.append(runner.run(st).status)
    return outcomes


def test_second_run_is_cached_and_param_change_reruns_downstream(tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("5")
    run = tmp_path / "run"
    calls: list[str] = []
    assert _run_all(run, _chain(run, src, 2, calls)) == ["ran", "ran"]
    assert (run / "add" / "out.txt").read_text() == "11"
    assert _run_all(run, _chain(run, src, 2, calls)) == ["cached", "cached"]
    assert calls == ["double", "add"]
    # new parameter: that stage and the ones reading its output rerun
    assert _run_all(run, _chain(run, src, 3, calls)) == ["ran", "ran"]
    assert (run / "add" / "out.txt").read_text() == "16"
    events = read_log_events(run)
    assert events.count(("double", "cached")) == 1 and events.count(("double", "done")) == 2


def test_input_content_not_mtime_decides(tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("5")
    run = tmp_path / "run"
    calls: list[str] = []
    _run_all(run, _chain(run, src, 2, calls))
    os.utime(src, ns=(1, 1))  # touched, same content
    assert _run_all(run, _chain(run, src, 2, calls)) == ["cached", "cached"]
    src.write_text("6")
    assert _run_all(run, _chain(run, src, 2, calls)) == ["ran", "ran"]
    assert (run / "add" / "out.txt").read_text() == "13"


def test_upstream_rerun_with_identical_output_keeps_downstream_cached(tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("5")
    run = tmp_path / "run"
    calls: list[str] = []
    _run_all(run, _chain(run, src, 2, calls))
    runner = StageRunner(run, force={"double"})
    stages = _chain(run, src, 2, calls)
    assert [runner.run(s).status for s in stages] == ["ran", "cached"]


def test_failed_stage_leaves_no_final_folder_and_resumes(tmp_path):
    run = tmp_path / "run"
    attempts = []

    def flaky(work: Path):
        attempts.append(sorted(p.name for p in work.iterdir() if not p.name.startswith(".")))
        (work / "part1.txt").write_text("a")
        if len(attempts) == 1:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C midway
        (work / "part2.txt").write_text("b")

    stage = Stage("s", flaky, params={"p": 1})
    with pytest.raises(KeyboardInterrupt):
        StageRunner(run).run(stage)
    assert not (run / "s").exists() and (run / "s.partial" / "part1.txt").exists()
    assert StageRunner(run).run(stage).status == "ran"
    assert attempts[1] == ["part1.txt"]  # the second attempt saw the partial work
    assert sorted(p.name for p in (run / "s").iterdir()) == ["manifest.json", "part1.txt", "part2.txt"]
    assert not (run / "s.partial").exists()


def test_partial_work_from_other_params_is_discarded(tmp_path):
    run = tmp_path / "run"
    seen = []

    def fn(work: Path):
        seen.append(sorted(p.name for p in work.iterdir() if not p.name.startswith(".")))
        (work / "x").write_text("1")
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        StageRunner(run).run(Stage("s", fn, params={"p": 1}))
    with pytest.raises(RuntimeError):
        StageRunner(run).run(Stage("s", fn, params={"p": 2}))
    assert seen == [[], []]


def test_deleted_output_file_invalidates_cache(tmp_path):
    run = tmp_path / "run"
    n = []

    def fn(work: Path):
        n.append(1)
        (work / "a.bin").write_bytes(b"123")

    st = Stage("s", fn)
    StageRunner(run).run(st)
    (run / "s" / "a.bin").unlink()
    assert StageRunner(run).run(st).status == "ran"
    assert len(n) == 2
