"""`videdit run` end to end with small stand-in networks: outputs, caching, crash/resume, folder mode, weights check."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from videdit.runner import read_log_events
from videdit.engines import run_many

pytestmark = pytest.mark.numeric

REPO = Path(__file__).resolve().parents[1]
FAST = {  # small enough for a 2-core CPU: 64 px stand-in generator, short clip
    "align.crop_size": 64,
    "encode.n_iters": 1,
    "encode.batch_size": 4,
    "tune.steps": 10,
    "tune.batch_size": 2,
    "tune.checkpoint_every": 2,
    "tune.allow_l2_only": True,
    "tune.lpips_weight": 0.0,
    "edit.direction": "age",
    "edit.strengths": [3.0],
}


def _pipeline(**overrides):
    from videdit.pipeline import Pipeline, StandInModels

    return Pipeline.from_preset("default", overrides={**FAST, **overrides}, quiet=True, models=StandInModels(resolution=64))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from videdit.synthetic import make_clip

    return make_clip(tmp_path_factory.mktemp("clip") / "face.mp4", n_frames=6, size=(224, 192))


@pytest.fixture(scope="module")
def reference(clip, tmp_path_factory):
    """One uninterrupted run, shared by the tests below (each pipeline run costs tens of seconds here)."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    result = _pipeline().run(clip.path, run_dir)
    assert result.status == "ok", result.error
    return result


def test_end_to_end_outputs(clip, reference):
    from videdit.io.probe import probe_video

    result, run_dir = reference, reference.run_dir
    for sub in ["align/transforms.npz", "encode/latents.npy", "tune/generator.safetensors", "smooth/transforms.npz"]:
        assert (run_dir / sub).exists(), sub
    assert [p.name for p in result.outputs] == ["face.age+3.mp4", "face.recon.mp4"]  # a strength asked for is named
    src, out = probe_video(clip.path), probe_video(result.outputs[0])
    assert (out.width, out.height, out.n_frames, out.fps) == (src.width, src.height, src.n_frames, src.fps)
    assert out.audio is not None and out.audio.codec == src.audio.codec
    assert np.load(run_dir / "encode" / "latents.npy").shape == (clip.n_frames, 16, 512)
    assert (run_dir / "settings.toml").read_text().count("[tune]") == 1


def test_cache_and_invalidation(clip, reference, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference.run_dir, run_dir)  # a run folder is relocatable
    # log.txt and the folder's lock record each run; stage outputs must not be touched
    mtimes = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name not in ("log.txt", ".lock")}

    again = _pipeline().run(clip.path, run_dir)
    assert set(again.stages.values()) == {"cached"}
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing rewritten

    changed = _pipeline(**{"edit.strengths": [-2.0]}).run(clip.path, run_dir)
    assert changed.stages == {"align": "cached", "encode": "cached", "tune": "cached", "edit": "ran",
                              "smooth": "ran", "render": "ran", "composite": "ran"}

    # new input content: everything reruns
    from videdit.synthetic import make_clip

    moved = tmp_path / "face.mp4"
    shutil.copy(clip.path, moved)
    assert set(_pipeline(**{"edit.strengths": [-2.0]}).run(moved, run_dir).stages.values()) == {"cached"}
    make_clip(moved, n_frames=clip.n_frames, size=clip.size, face_centre=(250.0, 112.0))
    redo = _pipeline(**{"edit.strengths": [-2.0]}).run(moved, run_dir)
    assert redo.stages["align"] == "ran" and redo.stages["encode"] == "ran" and redo.stages["tune"] == "ran"


def test_ffv1_writes_lossless_mkv_outputs_end_to_end(clip, reference, tmp_path):
    """--codec ffv1 is lossless FFV1 in .mkv: the composite's videos and the published ones, which eval finds."""
    import shutil

    from videdit.evaluate.frames import full_frame_outputs
    from videdit.io.probe import probe_video

    run_dir = tmp_path / "run"
    shutil.copytree(reference.run_dir, run_dir)
    result = _pipeline(**{"composite.codec": "ffv1"}).run(clip.path, run_dir)
    assert result.status == "ok", result.error
    assert result.stages["composite"] == "ran" and result.stages["render"] == "cached"  # only the codec changed
    assert [p.name for p in result.outputs] == ["face.age+3.mkv", "face.recon.mkv"]
    assert sorted(p.name for p in (run_dir / "composite").glob("*.mkv")) == ["age+3.mkv", "recon.mkv"]
    from videdit.io.reader import VideoReader

    assert probe_video(result.outputs[0]).codec == "ffv1"
    assert sum(1 for _ in VideoReader(result.outputs[0])) == clip.n_frames  # (an .mkv's frame count is an estimate)
    # The earlier run's .mp4 outputs are gone, not left beside them (the comparison is always an H.264 .mp4).
    from videdit.layout import is_compare_name

    assert not [p for p in run_dir.glob("face.*.mp4") if not is_compare_name(p.name)]
    assert [s.video.name for s in full_frame_outputs(run_dir, clip.path).values()] == ["face.recon.mkv", "face.age+3.mkv"]


def test_missing_weights_listed_at_once_before_touching_video(tmp_path):
    from videdit.pipeline import Pipeline

    env = dict(os.environ, VIDEDIT_WEIGHTS=str(tmp_path / "empty"), TORCH_HOME=str(tmp_path / "torch"))
    video = tmp_path / "not_even_a_video.mp4"
    video.write_text("x")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "videdit", "run", str(video), "--edit", "age"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 3
    assert "restyle_e4e_ffhq.pt" in proc.stderr and "alexnet-owt-7be5be79.pth" in proc.stderr and "age_boundary.npy" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "not_even_a_video.mp4.videdit").exists()
    print(f"missing-weights check took {elapsed:.2f}s")


def test_folder_mode_reports_failures_and_finishes_the_rest(clip, reference, tmp_path):
    import shutil

    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(clip.path, folder / "a_good.mp4")
    (folder / "b_corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    from videdit.synthetic import make_clip

    make_clip(folder / "c_noface.mp4", photo=np.full((300, 300, 3), 128, np.uint8), n_frames=4, size=(128, 128), audio=False)
    shutil.copytree(reference.run_dir, tmp_path / "runs" / "a_good.mp4.videdit")  # the good one is cached
    results = run_many(_pipeline(), folder, out=tmp_path / "runs")
    status = {r.input.name: r.status for r in results}
    assert status == {"a_good.mp4": "ok", "b_corrupt.mp4": "failed", "c_noface.mp4": "failed"}
    assert all(r.error and "\n" not in r.error for r in results if r.status == "failed")
    assert results[0].outputs and results[0].outputs[0].exists()
    from videdit.engines import format_summary

    table = format_summary(results)
    assert "1 done, 2 failed" in table


WORKER = """
import sys
from videdit.pipeline import Pipeline, StandInModels
sys.path.insert(0, {tests!r})
from test_pipeline import FAST
p = Pipeline.from_preset("default", overrides=FAST, quiet=True, models=StandInModels(resolution=64))
r = p.run({video!r}, {run!r})
print(r.status, r.error)
"""


@pytest.mark.slow
@pytest.mark.parametrize("kill_during", ["align", "encode", "tune"])
def test_killed_run_resumes_to_identical_outputs(clip, reference, tmp_path, kill_during):
    """SIGKILL during a stage, rerun, compare with an uninterrupted run."""
    ref_dir, run_dir = reference.run_dir, tmp_path / "run"
    code = WORKER.format(tests=str(Path(__file__).parent), video=str(clip.path), run=str(run_dir))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    log = run_dir / "log.txt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and f"{kill_during} start" in log.read_text():
            if kill_during != "tune" or (run_dir / "tune.partial" / "checkpoints" / "latest.pt").exists():
                time.sleep(0.3)
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / kill_during / "manifest.json").exists(), "killed too late to test anything"

    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.stdout.startswith("ok"), done.stdout + done.stderr
    events = read_log_events(run_dir)
    if kill_during == "tune":
        assert ("tune", "resume") in events

    for rel in ["encode/latents.npy", "smooth/latents_recon.npy"]:
        np.testing.assert_allclose(np.load(run_dir / rel), np.load(ref_dir / rel), rtol=0, atol=1e-5)
    from safetensors.numpy import load_file

    a, b = load_file(run_dir / "tune" / "generator.safetensors"), load_file(ref_dir / "tune" / "generator.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-5, err_msg=k)


def test_hyperstyle_tuner_renders_per_frame_offsets(clip, reference, tmp_path):
    """--tuner hyperstyle end to end: tune writes per-frame offsets and render applies them frame by frame."""
    import shutil

    import torch

    from videdit.checkpoints import load_generator, save_network
    from videdit.networks.hyperstyle import FrameOffsets, HyperNetwork, synthesize
    from videdit.pipeline import StandInModels
    from videdit.io.color import to_uint8
    from videdit.tuning.data import inverse_transforms

    G0 = StandInModels(resolution=64).load_generator("cpu")
    torch.manual_seed(7)
    hyper = HyperNetwork.for_generator(G0, input_size=32, code_dim=32, inner_channels=16, rank=4)
    with torch.no_grad():  # an untrained hypernetwork predicts zero offsets: give its output layers weights
        for block in hyper.shared.values():
            block.cols.normal_(0, 4.0)  # large: the frames of the clip differ little, so must their offsets
    hyper_path = save_network(hyper, tmp_path / "hyper.safetensors", kind="hypernetwork")

    run_dir = tmp_path / "run"
    shutil.copytree(reference.run_dir, run_dir)
    result = _pipeline(**{"tune.tuner": "hyperstyle", "hyperstyle.hypernetwork": str(hyper_path),
                          "hyperstyle.n_iters": 1, "hyperstyle.smooth_window": 1}).run(clip.path, run_dir)
    assert result.status == "ok", result.error
    assert result.stages["align"] == "cached" and result.stages["encode"] == "cached" and result.stages["render"] == "ran"
    render_info = json.loads((run_dir / "render" / "render.json").read_text())
    offsets = FrameOffsets.load(run_dir / "tune" / "offsets.safetensors")
    assert render_info["weight_offsets"]["layers"] == offsets.layers and offsets.num_frames == clip.n_frames
    for name in offsets.layers:  # the base weights are the untuned generator's
        assert torch.equal(offsets.base[name], getattr(G0.synthesis, name).weight)
    # The rendered reconstruction is frame i's own offsets on the untuned generator, not the mean-offset one.
    ws = torch.from_numpy(np.load(run_dir / "smooth" / "latents_recon.npy"))
    with np.load(run_dir / "smooth" / "transforms.npz") as t:
        inv = inverse_transforms(t["matrix"])
    from PIL import Image

    last = clip.n_frames - 1
    with torch.no_grad():
        per_frame = synthesize(G0, ws[[0, last]], inv[[0, last]], offsets.deltas([0, last]))
        mean = load_generator(run_dir / "tune" / "generator.safetensors").synthesis(ws[[0, last]], transform=inv[[0, last]])
    for j, i in enumerate((0, last)):
        got = np.asarray(Image.open(run_dir / "render" / "recon" / f"{i:06d}.png")).astype(np.float32)
        want, mean_img = to_uint8(per_frame[j:j + 1])[0], to_uint8(mean[j:j + 1])[0]
        assert np.abs(got - want).max() <= 1
        # The stand-in renders a low-contrast face: count the 8-bit values that differ. The render equals
        # the per-frame offsets' image up to float round-off and not the mean offsets' one.
        off_frame, off_mean = (got != want).mean(), (got != mean_img).mean()
        print(f"frame {i}: values off from per-frame {off_frame:.4f}, from mean offsets {off_mean:.4f}")
        assert off_frame < 0.001 and off_mean > 0.004  # measured: 0 and 0.0077 of the values


def test_align_cache_key_names_encoder_input_only_when_published(tmp_path):
    """Run folders aligned before align.encoder_input existed hold direct cuts: "direct" keeps their cache key
    (no new field), so they stay cached with it; "published" (the default) crops differ, so its key does."""
    from videdit.pipeline import Pipeline, StandInModels

    def align_params(overrides):
        pipe = Pipeline.from_preset("demo", overrides=overrides, quiet=True, device="cpu",
                                    models=StandInModels(resolution=32))
        return next(s.params for s in pipe.stages_for(tmp_path / "clip.mp4", tmp_path / "run") if s.name == "align")

    direct, published = align_params({"align.encoder_input": "direct"}), align_params({})
    assert "encoder_input" not in direct
    assert published == dict(direct, encoder_input="published")
