"""The command line: fast help, one-line errors for bad input, weights management."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from videdit import weights as W
from videdit.errors import VideditError


def videdit(*args, cwd=None, env=None):
    env = dict(os.environ if env is None else env)
    return subprocess.run([sys.executable, "-m", "videdit", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)


def test_help_and_version():
    out = videdit("--help")
    assert out.returncode == 0 and "run" in out.stdout and "demo" in out.stdout and "weights" in out.stdout
    from videdit import __version__

    assert __version__ in videdit("--version").stdout


def test_help_imports_no_heavy_packages():
    code = "import sys, videdit.cli; heavy = [m for m in ('torch', 'av', 'dlib', 'numpy', 'scipy') if m in sys.modules]; print(heavy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    from videdit.synthetic import make_clip, write_tone

    d = tmp_path_factory.mktemp("bad")
    (d / "empty.mp4").write_bytes(b"")
    good = make_clip(d / "good.mp4", n_frames=6, size=(128, 128), audio=False)
    data = good.path.read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (d / "text.mp4").write_text("this is not a video\n" * 50)
    write_tone(d / "audio_only.mp4", seconds=0.5)
    import numpy as np

    make_clip(d / "noface.mp4", photo=np.full((200, 200, 3), 90, np.uint8), n_frames=4, size=(128, 128), audio=False)
    return d


@pytest.mark.parametrize("name", ["empty.mp4", "truncated.mp4", "text.mp4", "audio_only.mp4", "noface.mp4", "missing.mp4"])
def test_bad_input_is_one_clear_line(bad_inputs, tmp_path, name):
    out = videdit("run", bad_inputs / name, "--until", "align", "--out", tmp_path / "run", "-q")
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr and lines[0].startswith("videdit: error:")
    assert name.split(".")[0].split("_")[0] in lines[0] or "face" in lines[0] or "no such" in lines[0].lower()


def test_weights_list_and_add(tmp_path):
    env = dict(os.environ, VIDEDIT_WEIGHTS=str(tmp_path / "w"), TORCH_HOME=str(tmp_path / "torch"))
    out = videdit("weights", "list", env=env)
    assert out.returncode == 0 and "restyle_e4e_ffhq.pt" in out.stdout and "missing" in out.stdout
    f = tmp_path / "mine.npy"
    np.save(f, np.ones((1, 512), np.float32))  # `weights add` checks the content: a real boundary
    out = videdit("weights", "add", f, "--as", "edit_age", env=env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "w" / "age_boundary.npy").read_bytes() == f.read_bytes()
    listed = videdit("weights", "list", env=env).stdout
    assert "age_boundary.npy" in listed and "present" in listed.split("age_boundary.npy")[1].splitlines()[0]


def test_weights_add_rejects_a_wrong_file(tmp_path):
    f = tmp_path / "alexnet.pth"
    f.write_bytes(b"not alexnet")
    with pytest.raises(VideditError, match="text file"):
        W.add(f, tmp_path / "w", "lpips_alexnet")


def test_bad_shard_frames_is_one_line(tmp_path):
    for value in ("0", "2.5"):
        out = videdit("run", tmp_path / "x.mp4", "--shard-frames", value)
        assert out.returncode != 0
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "--shard-frames must be a whole number" in lines[0], out.stderr
