"""PTI tuning on a small generator and a short synthetic clip; LPIPS loading without downloads.

The tuning run of the `tuned` fixture is shared: the frozen-parameter, loss, PSNR and resume tests
all look at it, so the file stays well under a minute on a busy 2-core machine.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from videdit.errors import CheckpointError, MissingWeightsError
from videdit.tuning.data import batch_indices
from videdit.tuning.pti import TuneSettings, reconstruction_psnr, run_tune

pytestmark = pytest.mark.numeric

N_FRAMES = 6
RES = 32
# A fast, deliberately high learning rate so a dozen steps show a clear improvement.
SETTINGS = dict(steps=12, lr=1e-2, batch_size=4, checkpoint_every=3, lpips_random_backbone=True, progress=False)


def _make_video_inputs(root: Path):
    """align/ (unaligned crops of a moving photo + transforms.npz), pivot latents, a saved generator."""
    from videdit.checkpoints import save_generator
    from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs
    from videdit.synthetic import write_tune_inputs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = Generator(**tiny_generator_kwargs(RES, channels=8, num_layers=4)).eval()
    align, latents, _ = write_tune_inputs(root, G, N_FRAMES)
    save_generator(G, root / "G.safetensors")
    return align, latents, root / "G.safetensors"


@pytest.fixture(scope="module")
def video_inputs(tmp_path_factory):
    return _make_video_inputs(tmp_path_factory.mktemp("tune_inputs"))


@pytest.fixture(scope="module")
def tuned(video_inputs, tmp_path_factory):
    align, latents, gen_path = video_inputs
    out = tmp_path_factory.mktemp("tuned")
    result = run_tune(align, latents, gen_path, out, TuneSettings(**SETTINGS))
    return result, out


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_frozen_parameters_bit_identical(video_inputs, tuned):
    _, _, gen_path = video_inputs
    result, _ = tuned
    before, after = _tensors(gen_path), _tensors(result.generator_path)
    assert before.keys() == after.keys()
    frozen = [k for k in before if k.startswith(("mapping.", "synthesis.input."))]
    assert "synthesis.input.weight" in frozen and "synthesis.input.affine.weight" in frozen
    assert "synthesis.input.freqs" in frozen and "mapping.fc0.weight" in frozen
    for k in frozen:
        assert torch.equal(before[k], after[k]), k
    # Every other parameter of the synthesis network moved (the buffers did not).
    tuned_params = [k for k in before if k.startswith("synthesis.L") and k.endswith(("weight", "bias"))]
    assert len(tuned_params) > 10
    for k in tuned_params:
        assert not torch.equal(before[k], after[k]), k
    for k in before:
        if k.endswith(("magnitude_ema", "up_filter", "down_filter")):
            assert torch.equal(before[k], after[k]), k


def test_loss_goes_down_and_psnr_goes_up(video_inputs, tuned):
    from videdit.checkpoints import load_generator

    align, latents, gen_path = video_inputs
    result, out = tuned
    assert result.steps_done == SETTINGS["steps"] and result.lpips_used and not result.stopped_early
    losses = json.loads((out / "tune.json").read_text())["losses"]
    assert len(losses) == SETTINGS["steps"]
    assert np.mean(losses[-3:]) < 0.85 * np.mean(losses[:3]), losses
    before = reconstruction_psnr(load_generator(gen_path), align, latents)
    after = reconstruction_psnr(load_generator(result.generator_path), align, latents)
    # Measured on this setup: 10.34 dB -> 11.30 dB after 12 steps (loss 0.58 -> 0.41).
    assert after > before + 0.4, (before, after)


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted(video_inputs, tuned, tmp_path):
    align, latents, gen_path = video_inputs
    reference, _ = tuned
    out = tmp_path / "tune.partial"
    worker = Path(__file__).with_name("tune_worker.py")
    cmd = [sys.executable, str(worker), str(align), str(latents), str(gen_path), str(out), json.dumps(SETTINGS),
           str(torch.get_num_threads()), "0.4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            line = proc.stdout.readline()
            assert line, f"worker ended early: {proc.stderr.read()[-2000:]}"
            if line.strip() == "step 7":  # the checkpoint of step 6 is on disk; steps 8..12 are not done
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "generator.safetensors").exists()
    assert (out / "checkpoints" / "latest.pt").is_file()
    assert not [p for p in (out / "checkpoints").iterdir() if p.name != "latest.pt"]  # no stray partial file

    resumed = run_tune(align, latents, gen_path, out, TuneSettings(**SETTINGS))
    assert 6 <= resumed.resumed_from_step < SETTINGS["steps"]
    assert resumed.steps_done == SETTINGS["steps"]
    a, b = _tensors(reference.generator_path), _tensors(resumed.generator_path)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m} resumed_from={resumed.resumed_from_step}")
    # The losses of the resumed run continue the uninterrupted run's.
    ref_losses = json.loads((reference.generator_path.parent / "tune.json").read_text())["losses"]
    res_losses = json.loads((out / "tune.json").read_text())["losses"]
    np.testing.assert_allclose(res_losses, ref_losses, rtol=1e-5)


def test_checkpoint_of_other_settings_is_not_resumed(video_inputs, tuned, tmp_path):
    align, latents, gen_path = video_inputs
    _, out = tuned
    work = tmp_path / "t"
    (work / "checkpoints").mkdir(parents=True)
    (work / "checkpoints" / "latest.pt").write_bytes((out / "checkpoints" / "latest.pt").read_bytes())
    other = dict(SETTINGS, steps=2, lr=5e-3, lpips_weight=0.0)
    res = run_tune(align, latents, gen_path, work, TuneSettings(**other))
    assert res.resumed_from_step == 0 and res.steps_done == 2


def test_early_stop_ends_the_run(video_inputs, tmp_path):
    align, latents, gen_path = video_inputs
    settings = TuneSettings(**dict(SETTINGS, steps=50, early_stop_threshold=100.0, early_stop_window=3, lpips_weight=0.0))
    res = run_tune(align, latents, gen_path, tmp_path / "t", settings)
    assert res.stopped_early and res.steps_done == 3 and not res.lpips_used
    assert (tmp_path / "t" / "generator.safetensors").is_file()


def test_batches_are_a_function_of_step():
    pool = np.arange(5)
    a = [batch_indices(s, pool, 4, seed=3) for s in range(10)]
    assert all(np.array_equal(x, batch_indices(s, pool, 4, seed=3)) for s, x in enumerate(a))
    stream = np.concatenate(a)
    for epoch in range(8):  # every epoch visits each frame once
        assert sorted(stream[epoch * 5:(epoch + 1) * 5]) == list(range(5))
    assert not np.array_equal(np.concatenate([batch_indices(s, pool, 4, seed=4) for s in range(10)]), stream)


# --------------------------------------------------------------------------------------------------
# LPIPS without network access


@pytest.fixture
def offline_torch_home(tmp_path, monkeypatch):
    """An empty torch hub and weights folder; any download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VIDEDIT_WEIGHTS", str(tmp_path / "weights"))

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_missing_lpips_backbone_is_one_clear_line(offline_torch_home):
    from videdit.losses import make_reconstruction_loss

    with pytest.raises(MissingWeightsError) as err:
        make_reconstruction_loss(1.0, 1.0, "alex")
    message = str(err.value)
    assert "\n" not in message
    assert "alexnet-owt-7be5be79.pth" in message and str(offline_torch_home) in message
    assert "videdit weights fetch lpips_alexnet" in message and "allow_l2_only" in message


def test_allow_l2_only_warns_once_and_uses_l2(offline_torch_home, caplog):
    from videdit.losses import make_reconstruction_loss

    with caplog.at_level(logging.WARNING, logger="videdit"):
        loss = make_reconstruction_loss(2.0, 1.0, "alex", allow_l2_only=True)
    assert len([r for r in caplog.records if "alexnet-owt-7be5be79.pth" in r.getMessage()]) == 1
    assert loss.lpips is None
    a, b = torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.5)
    total, parts = loss(a, b)
    assert torch.isclose(total, torch.tensor(2 * 0.25)) and set(parts) == {"l2"}


def test_lpips_backbone_loaded_from_local_file(offline_torch_home):
    import torchvision

    from videdit.losses import build_lpips

    offline_torch_home.mkdir(parents=True)
    torch.manual_seed(5)
    alexnet = torchvision.models.alexnet(weights=None)
    torch.save(alexnet.state_dict(), offline_torch_home / "alexnet-owt-7be5be79.pth")
    model = build_lpips("alex")
    assert torch.equal(model.net.slice1[0].weight, alexnet.features[0].weight)
    assert torch.equal(getattr(model.net.slice5, "10").bias, alexnet.features[10].bias)
    assert not any(p.requires_grad for p in model.parameters())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    d = model(x, x.flip(-1)).flatten()
    assert (d > 0).all() and torch.allclose(model(x, x).flatten(), torch.zeros(2), atol=1e-6)
    # A file that is not AlexNet's is a clear CheckpointError, not a crash deep inside torch.
    torch.save({"features.0.weight": torch.zeros(3)}, offline_torch_home / "alexnet-owt-7be5be79.pth")
    with pytest.raises(CheckpointError, match="wrong shape|no features"):
        build_lpips("alex")


def test_settings_match_preset_keys():
    """Every [tune] key of the default preset is a TuneSettings field (the pipeline builds it from there)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    preset = tomllib.loads((Path(__file__).resolve().parents[1] / "videdit" / "presets" / "default.toml").read_text())
    fields = set(asdict(TuneSettings()))
    assert set(preset["tune"]) - {"tuner"} <= fields


@pytest.mark.slow
def test_micro_batches_give_the_batch_gradient(video_inputs, tuned, tmp_path):
    """A step over a batch of 4 in micro-batches of 1 (the CPU default: the `tuned` run) or 3 (4 = 3 + 1)
    optimises what the whole batch at once does: the tuned weights and the losses agree to float round-off
    (over 12 Adam steps, which magnify round-off in near-zero gradients to about 1e-5)."""
    align, latents, gen_path = video_inputs
    runs = {1: tuned[1]}
    for micro in (4, 3):
        runs[micro] = tmp_path / f"micro{micro}"
        run_tune(align, latents, gen_path, runs[micro], TuneSettings(**dict(SETTINGS, micro_batch=micro)))
    # the same settings twice: the same bytes (small GEMMs at batch 1 are reproducible: videdit sets MKL_CBWR)
    again = run_tune(align, latents, gen_path, tmp_path / "again", TuneSettings(**dict(SETTINGS, checkpoint_every=0)))
    first, second = _tensors(runs[1] / "generator.safetensors"), _tensors(tmp_path / "again" / "generator.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert again.steps_done == SETTINGS["steps"]
    start = _tensors(gen_path)
    whole = _tensors(runs[4] / "generator.safetensors")
    assert any(not torch.equal(whole[k], start[k]) for k in whole)  # tuning moved weights: agreeing is not trivial
    whole_losses = json.loads((runs[4] / "tune.json").read_text())["losses"]
    for micro in (1, 3):
        tuned_weights = _tensors(runs[micro] / "generator.safetensors")
        for key in whole:
            torch.testing.assert_close(tuned_weights[key], whole[key], rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(json.loads((runs[micro] / "tune.json").read_text())["losses"], whole_losses, rtol=1e-4)
