"""The edit front-end end to end: text (StyleCLIP) and channel edits through `videdit run`'s pipeline, with a
tiny CLIP built offline with random weights, a tiny stand-in generator and random delta_i_c / s_stats."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from videdit.edits import parse_edit, parse_edits
from videdit.errors import VideditError

pytestmark = pytest.mark.numeric

BASE = {"align.crop_size": 64, "encode.n_iters": 1, "encode.batch_size": 4, "tune.tuner": "none",
        "render.side_by_side": False}


def test_parse_edits_names_and_defaults():
    assert parse_edit("age").keys() == [("age", 5.0)]
    assert parse_edit("age", [-4, 5]).keys() == [("age-4", -4.0), ("age+5", 5.0)]
    # one strength: the name says it unless it is the default (talk.age-4.mp4, not talk.age.mp4)
    assert parse_edit("age", [-4]).keys() == [("age-4", -4.0)] and parse_edit("age", [5]).keys() == [("age", 5.0)]
    assert parse_edit("s:L6_148_512:501", [-10]).keys() == [("s-L6_148_512-501-10", -10.0)]
    assert parse_edit("text:a tanned face", alpha=[2]).keys() == [("text-a-tanned-face+2", 2.0)]
    text = parse_edit("text:a tanned face")
    assert (text.kind, text.strengths, text.beta, text.label) == ("text", (3.5,), 0.13, "text-a-tanned-face")
    assert parse_edit("text:a face with an afro", alpha=[0, 4]).keys() == [("text-a-face-with-an-afro+0", 0.0),
                                                                           ("text-a-face-with-an-afro+4", 4.0)]
    assert parse_edit("s:L6_148_512:501").label == "s-L6_148_512-501"
    assert parse_edit("dirs/glasses_boundary.npy").label == "glasses"
    for bad, words in [("bogus", "unknown edit"), ("s:L6", "s:KEY:CHANNEL"), ("text:", "needs a prompt")]:
        with pytest.raises(VideditError, match=words):
            parse_edit(bad)
    with pytest.raises(VideditError, match="same output"):
        parse_edits(["age", "age"])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny CLIP, and delta_i_c / s_stats laid out like the stand-in generator's StyleSpace."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    from videdit.pipeline import StandInModels
    from videdit.styleclip import SStats, save_s_stats
    from videdit.synthetic import make_clip

    root = tmp_path_factory.mktemp("styleclip")
    torch.manual_seed(0)
    clip = CLIP(32, CLIPVisionCfg(layers=1, width=64, patch_size=16, image_size=32),
                CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1), quick_gelu=True)
    torch.save(clip.state_dict(), root / "clip.pt")
    widths = StandInModels(resolution=64).load_generator("cpu").synthesis.style_widths()
    rng = np.random.default_rng(0)
    save_s_stats(root / "s_stats", SStats({"theta": 0.0, "x": 0.0, "y": 0.0},
                                          {k: rng.standard_normal(w).astype(np.float32) for k, w in widths.items()},
                                          {k: (0.5 + rng.random(w)).astype(np.float32) for k, w in widths.items()}))
    np.save(root / "delta_i_c.npy", rng.standard_normal((sum(widths.values()), 32)).astype(np.float32))
    np.save(root / "delta_i_c_short.npy", rng.standard_normal((sum(widths.values()) - 3, 32)).astype(np.float32))
    clip_video = make_clip(root / "face.mp4", n_frames=5, size=(192, 160))
    return {"root": root, "widths": widths, "video": clip_video.path,
            "settings": {"edit.clip": str(root / "clip.pt"), "edit.delta_i_c": str(root / "delta_i_c.npy"),
                         "edit.s_stats": str(root / "s_stats")}}


def _run(files, run_dir, **overrides):
    from videdit.pipeline import Pipeline, StandInModels

    pipe = Pipeline.from_preset("default", overrides={**BASE, **files["settings"], **overrides}, quiet=True,
                                models=StandInModels(resolution=64))
    return pipe.run(files["video"], run_dir)


def _frames(run_dir, key):
    from PIL import Image

    return [np.asarray(Image.open(p)) for p in sorted((run_dir / "render" / key).glob("*.png"))]


@pytest.mark.slow
def test_text_edit_end_to_end(files, tmp_path):
    from videdit.io.probe import probe_video

    run_dir = tmp_path / "run"
    result = _run(files, run_dir, **{"edit.edits": ["text:a smiling face"], "edit.alpha": [0.0, 40.0]})
    assert result.status == "ok", result.error
    keys = ["text-a-smiling-face+0", "text-a-smiling-face+40"]
    assert [p.name for p in result.outputs] == [f"face.{k}.mp4" for k in keys] + ["face.recon.mp4"]
    assert probe_video(result.outputs[0]).n_frames == 5
    recon, zero, strong = _frames(run_dir, "recon"), _frames(run_dir, keys[0]), _frames(run_dir, keys[1])
    assert all(np.array_equal(a, b) for a, b in zip(recon, zero)), "alpha 0 must render the reconstruction"
    assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(recon, strong)]) > 0.5

    # Another prompt: only the edit stages run again.
    again = _run(files, run_dir, **{"edit.edits": ["text:a face with an afro"], "edit.alpha": [0.0, 40.0]})
    assert again.status == "ok", again.error
    assert again.stages == {"align": "cached", "encode": "cached", "tune": "cached", "edit": "ran",
                            "smooth": "ran", "render": "ran", "composite": "ran"}


def test_channel_edit_moves_only_with_strength(files, tmp_path):
    key = next(k for k in files["widths"] if k.startswith("L2_"))
    result = _run(files, tmp_path / "run", **{"edit.edits": [f"s:{key}:1", "age"], "edit.strengths": [0.0, 30.0]})
    assert result.status == "ok", result.error
    recon = _frames(result.run_dir, "recon")
    assert all(np.array_equal(a, b) for a, b in zip(recon, _frames(result.run_dir, f"s-{key}-1+0")))
    assert not all(np.array_equal(a, b) for a, b in zip(recon, _frames(result.run_dir, f"s-{key}-1+30")))
    from safetensors.torch import load_file

    offsets = load_file(str(result.run_dir / "smooth" / f"styles_s-{key}-1+30.safetensors"))
    assert offsets[key][:, 1].eq(30.0).all() and float(sum(v.abs().sum() for v in offsets.values())) == 30.0 * 5


@pytest.mark.parametrize("overrides, words", [
    ({"edit.edits": ["s:L99_1_1:0"]}, "unknown StyleSpace layer 'L99_1_1'"),
    ({"edit.edits": ["s:L1_36_512:9999"]}, "out of range"),
    ({"edit.edits": ["text:a face"], "edit.delta_i_c": "SHORT"}, "style channels"),
    ({"edit.edits": ["text:a face"], "edit.clip": "/nonexistent/ViT-B-32.pt"}, "ViT-B-32.pt"),
])
@pytest.mark.slow
def test_bad_edits_are_one_line(files, tmp_path, overrides, words):
    if overrides.get("edit.delta_i_c") == "SHORT":
        overrides = dict(overrides, **{"edit.delta_i_c": str(files["root"] / "delta_i_c_short.npy")})
    if overrides["edit.edits"][0].startswith("s:L1_"):
        key = next(k for k in files["widths"] if k.startswith("L1_"))
        overrides = dict(overrides, **{"edit.edits": [f"s:{key}:9999"]})
    from videdit.errors import VideditError

    try:
        result = _run(files, tmp_path / "run", **overrides)
        assert result.status == "failed", overrides
        error = result.error
    except VideditError as err:  # refused as the pipeline is made (a file that is not there): before any work
        error = str(err)
    assert "\n" not in error and words in error, error


@pytest.mark.slow
def test_a_malicious_s_stats_is_refused(files, tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "s_stats").write_bytes(pickle.dumps(Payload()))
    result = _run(files, tmp_path / "run", **{"edit.edits": ["text:a face"], "edit.s_stats": str(tmp_path / "s_stats")})
    assert result.status == "failed" and "\n" not in result.error
    assert not marker.exists()


def test_missing_text_edit_files_are_listed_before_any_work(tmp_path):
    env = dict(os.environ, VIDEDIT_WEIGHTS=str(tmp_path / "empty"))
    video = tmp_path / "talk.mp4"
    video.write_bytes(b"x")
    proc = subprocess.run([sys.executable, "-m", "videdit", "run", str(video), "--edit", "text:a smiling face"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert "ViT-B-32.pt" in proc.stderr and "delta_i_c.npy" in proc.stderr and "s_stats" in proc.stderr
    assert not (tmp_path / "talk.mp4.videdit").exists()
