"""Runs you can trust: damaged caches are found, one run per folder, every failure is one line and
never takes a batch down, settings are checked before any work."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from videdit.runner import read_log_events

REPO = Path(__file__).resolve().parents[1]
SMALL = {"align.crop_size": 64, "encode.n_iters": 1, "encode.batch_size": 4}


def _pipeline(**overrides):
    from videdit.pipeline import Pipeline, StandInModels

    return Pipeline.from_preset("default", overrides={**SMALL, **overrides}, quiet=True, models=StandInModels(resolution=64))


def _cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "videdit", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def _one_line_error(proc) -> str:
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from videdit.synthetic import make_clip

    return make_clip(tmp_path_factory.mktemp("clip") / "face.mp4", n_frames=5, size=(192, 160))


@pytest.fixture(scope="module")
def encoded(clip, tmp_path_factory):
    """A run through encode, untouched: the reference the damaged runs must come back to."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    result = _pipeline().run(clip.path, run_dir, until="encode")
    assert result.status == "ok", result.error
    return run_dir


def test_a_flipped_byte_in_cached_latents_is_found_and_recomputed(clip, encoded, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(encoded, run_dir)
    latents = run_dir / "encode" / "latents.npy"
    data = bytearray(latents.read_bytes())
    data[-3] ^= 0x40  # one byte of one float: the file keeps its size
    latents.write_bytes(bytes(data))
    assert latents.read_bytes() != (encoded / "encode" / "latents.npy").read_bytes()

    result = _pipeline().run(clip.path, run_dir, until="encode")
    assert result.status == "ok", result.error
    assert result.stages == {"align": "cached", "encode": "ran"}
    assert ("encode", "damaged") in read_log_events(run_dir)
    assert latents.read_bytes() == (encoded / "encode" / "latents.npy").read_bytes()


def test_a_same_size_garbage_frame_is_found_by_the_fast_check(clip, encoded, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(encoded, run_dir)
    frame = run_dir / "align" / "aligned" / "000002.png"
    frame.write_bytes(os.urandom(frame.stat().st_size))
    result = _pipeline().run(clip.path, run_dir, until="encode")
    assert result.status == "ok", result.error
    assert result.stages["align"] == "ran"
    log = (run_dir / "log.txt").read_text()
    assert "align damaged aligned/000002.png" in log
    assert frame.read_bytes() == (encoded / "align" / "aligned" / "000002.png").read_bytes()
    assert result.stages["encode"] == "cached"  # align came back the same, so encode's inputs did too


def test_verify_rehashes_frames_whose_mtime_was_kept(clip, encoded, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(encoded, run_dir)
    frame = run_dir / "align" / "unaligned" / "000001.png"
    st = frame.stat()
    frame.write_bytes(os.urandom(st.st_size))
    os.utime(frame, ns=(st.st_atime_ns, st.st_mtime_ns))  # a forger who restores the mtime
    assert _pipeline().run(clip.path, run_dir, until="align").stages["align"] == "cached"  # the fast check is fooled
    from videdit.pipeline import Pipeline, StandInModels

    verified = Pipeline.from_preset("default", overrides=SMALL, quiet=True, models=StandInModels(resolution=64),
                                    verify=True).run(clip.path, run_dir, until="align")
    assert verified.stages["align"] == "ran"


@pytest.mark.slow
def test_two_runs_on_one_folder_one_is_refused(clip, encoded, tmp_path):
    run_dir = tmp_path / "run"
    # The second run only needs align (no weights), so it gets as far as the folder's lock.
    args = [sys.executable, "-m", "videdit", "run", str(clip.path), "--out", str(run_dir), "--until", "align",
            "--set", "align.crop_size=64", "-q"]
    code = ("import sys; from videdit.pipeline import Pipeline, StandInModels; "
            "p = Pipeline.from_preset('default', overrides={'align.crop_size': 64, 'encode.n_iters': 1, 'encode.batch_size': 4}, "
            "quiet=True, models=StandInModels(resolution=64)); "
            f"r = p.run(sys.argv[1], sys.argv[2], until='encode'); print(r.status, r.error)")
    first = subprocess.Popen([sys.executable, "-c", code, str(clip.path), str(run_dir)], stdout=subprocess.PIPE, text=True)
    lock = run_dir / ".lock"
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.is_file() and str(first.pid) in lock.read_text()):
        time.sleep(0.05)
    assert str(first.pid) in lock.read_text(), "the first run never took the folder"
    second = subprocess.run(args, capture_output=True, text=True, timeout=300)
    line = _one_line_error(second)
    assert "in use by another videdit run" in line and f"pid {first.pid}" in line, line
    out, _ = first.communicate(timeout=600)
    assert out.split()[0] == "ok", out
    assert (run_dir / "encode" / "latents.npy").read_bytes() == (encoded / "encode" / "latents.npy").read_bytes()
    # The lock went with the process: a later run gets the folder.
    assert _pipeline().run(clip.path, run_dir, until="encode").status == "ok"


class _ExplodingOnce:
    """A stand-in model source whose first encoder load raises an error that is not videdit's own."""

    def __new__(cls):
        from videdit.pipeline import StandInModels

        class Exploding(StandInModels):
            calls = 0

            def load_encoder(self, device):
                Exploding.calls += 1
                if Exploding.calls == 1:
                    raise RuntimeError("CUDA error: an illegal memory access was encountered")
                return super().load_encoder(device)

        return Exploding(resolution=64)


def test_an_unexpected_exception_fails_one_video_and_the_batch_goes_on(clip, tmp_path):
    import shutil

    from videdit.engines import format_summary, run_many
    from videdit.pipeline import Pipeline

    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(clip.path, folder / "a.mp4")
    shutil.copy(clip.path, folder / "b.mp4")
    pipe = Pipeline.from_preset("default", overrides=SMALL, quiet=True, models=_ExplodingOnce())
    results = run_many(pipe, folder, out=tmp_path / "runs", until="encode")
    assert [r.status for r in results] == ["failed", "ok"]
    error = results[0].error
    assert "\n" not in error and "RuntimeError" in error and "log.txt" in error
    log = (results[0].run_dir / "log.txt").read_text()
    assert "Traceback (most recent call last)" in log and "illegal memory access" in log
    assert ("run", "failed") in read_log_events(results[0].run_dir)
    assert format_summary(results).endswith("1 done, 1 failed")


def test_a_corrupt_direction_file_is_one_line(clip, tmp_path):
    html = tmp_path / "age_boundary.npy"
    html.write_text("<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head></html>")
    result = _pipeline(**{"edit.direction": str(html), "tune.tuner": "none"}).run(clip.path, tmp_path / "run")
    assert result.status == "failed"
    assert "\n" not in result.error and str(html) in result.error and "internal error" not in result.error


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder that cannot be written: a read-only tmpfs where mounting is allowed, else /sys (EPERM)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode == 0:
        yield mount / "out"
        subprocess.run(["umount", str(mount)], capture_output=True)
    else:
        yield Path("/sys/videdit-test-out")


def test_output_folder_problems_are_one_line(clip, tmp_path, unwritable_dir):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, expected in [(unwritable_dir, "cannot write the run folder"), (a_file, "is a file"),
                          (a_file / "run", "lies under")]:
        proc = _cli("run", clip.path, "--out", out, "--until", "align")
        assert expected in _one_line_error(proc), (out, proc.stderr)


def test_missing_input_is_reported_before_weights(tmp_path):
    env = dict(os.environ, VIDEDIT_WEIGHTS=str(tmp_path / "empty"))
    proc = _cli("run", tmp_path / "nonexist.mp4", "--edit", "age", env=env, cwd=tmp_path)
    line = _one_line_error(proc)
    assert "no such file" in line and "nonexist.mp4" in line and proc.returncode == 1


@pytest.mark.parametrize("setting, expected", [
    ("tune.steps=-5", "tune.steps = -5: must be >= 0"),
    ("tune.lr=abc", "tune.lr = 'abc': expected a number"),
    ("tune.batch_size=0", "tune.batch_size = 0: must be >= 1"),
    ("tune.stepz=3", "unknown setting(s) tune.stepz"),
    ("edit.strenght=3", "unknown setting(s) edit.strenght"),
])
def test_bad_settings_fail_before_any_work_whatever_until_says(clip, tmp_path, setting, expected):
    run_dir = tmp_path / "run"
    proc = _cli("run", clip.path, "--out", run_dir, "--until", "align", "--set", setting)
    assert expected in _one_line_error(proc)
    assert not run_dir.exists()


def test_expand_must_not_be_negative(clip, tmp_path):
    proc = _cli("run", clip.path, "--out", tmp_path / "run", "--until", "align", "--expand", "-10,0,0,0")
    assert "render.expand = -10: must be >= 0" in _one_line_error(proc)


def test_settings_toml_records_every_option_and_the_preset(clip, encoded):
    import tomllib

    saved = tomllib.loads((encoded / "settings.toml").read_text())
    assert saved["preset"] == "default"
    assert saved["tune"]["early_stop_window"] == 50  # a default that no preset file names
    assert saved["align"]["crop_size"] == 64 and saved["composite"]["seam_every"] == 5


def test_demo_exits_with_its_runs_code(tmp_path):
    """A broken source clip (what a kill mid-write used to leave) fails the run, and the demo says so in its exit code."""
    source = tmp_path / "demo" / "source"
    source.mkdir(parents=True)
    (source / "astronaut.mp4").write_bytes(b"\x00" * 48)
    proc = _cli("demo", "--out", tmp_path / "demo", "-q", env=dict(os.environ, VIDEDIT_WEIGHTS=str(tmp_path / "w")))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # One video: as `videdit run` does (the demo is `run --stand-ins`), the failure is one line on stderr.
    assert [line for line in proc.stderr.splitlines() if "not a readable video" in line], proc.stderr


def test_recursive_folder_runs_skip_run_folders(tmp_path):
    from videdit.engines import list_videos

    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.mov").write_bytes(b"x")
    run = tmp_path / "a.mp4.videdit"
    (run / "render").mkdir(parents=True)
    for name in ("a.age.mp4", "align/preview.mp4", "render/recon.mp4", "composite/recon.mp4"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(b"x")
    assert list_videos(tmp_path, recursive=True) == [tmp_path / "a.mp4", tmp_path / "sub" / "b.mov"]
    assert list_videos(tmp_path) == [tmp_path / "a.mp4"]
