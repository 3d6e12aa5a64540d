"""The local-tweak tuner and its Laplacian-pyramid loss, on a tiny generator and a short synthetic clip.

`make_video_inputs` is also used by test_hyperstyle.py (same set-up as test_tune.py's).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from videdit.errors import CheckpointError, MissingWeightsError

N_FRAMES = 6
RES = 32
TWEAK = dict(max_steps=16, lr=1e-2, d_lr=1e-3, batch_size=2, global_batch=1, lambda_local=0.05, global_weight=0.5,
             checkpoint_every=8, stop_window=0, progress=False)


def tiny_generator(seed: int = 0):
    from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Generator(**tiny_generator_kwargs(RES, channels=8, num_layers=4)).eval()


def tiny_discriminator(seed: int = 0):
    from videdit.networks.discriminator import Discriminator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Discriminator(c_dim=0, img_resolution=RES, img_channels=3, channel_base=128, channel_max=8).eval()


def make_video_inputs(root: Path):
    """root/align (unaligned crops of a moving photo + transforms.npz), root/latents.npy, root/G.safetensors."""
    from videdit.checkpoints import save_generator
    from videdit.synthetic import write_tune_inputs

    G = tiny_generator()
    align, latents, _ = write_tune_inputs(root, G, N_FRAMES)
    save_generator(G, root / "G.safetensors")
    return align, latents, root / "G.safetensors"


def tensors(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


pytestmark = [pytest.mark.numeric, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def video_inputs(tmp_path_factory):
    return make_video_inputs(tmp_path_factory.mktemp("tweak_inputs"))


@pytest.fixture(scope="module")
def tweaked(video_inputs, tmp_path_factory):
    from videdit.tuning.local_tweak import LocalTweakSettings, run_local_tweak

    align, latents, gen_path = video_inputs
    out = tmp_path_factory.mktemp("tweaked")
    result = run_local_tweak(align, latents, gen_path, out, LocalTweakSettings(**TWEAK), discriminator=tiny_discriminator())
    return result, out


# --------------------------------------------------------------------------------------------------
# Laplacian pyramid


def test_laplacian_pyramid_rebuilds_the_image_and_weighs_bands():
    import torch.nn.functional as F

    from videdit.losses_pyramid import laplacian_loss, laplacian_pyramid

    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    bands = laplacian_pyramid(x, 5)
    assert [b.shape[-1] for b in bands] == [32, 16, 8, 4]  # 3 bands + low-pass: a 4 px level is not halved again
    rebuilt = bands[-1]
    for band in reversed(bands[:-1]):
        rebuilt = band + F.interpolate(rebuilt, size=band.shape[-2:], mode="bilinear", align_corners=False)
    # Three levels of a subtraction and a bilinear resample (4 taps, weights summing to 1) each round within a few
    # u = 2^-24 of values below 2: under 1e-6 in all, so 1e-5; a wrong resample leaves O(0.1) residue.
    torch.testing.assert_close(rebuilt, x, atol=1e-5, rtol=0)
    assert float(laplacian_loss(x, x)) == 0.0  # exact: the difference of equal tensors is zero
    # A constant shift lives in the low-pass level only: the loss is the shift itself.
    assert abs(float(laplacian_loss(x + 0.1, x)) - 0.1) < 1e-5
    # Fine noise counts in the fine band: more than its plain L1 share of the low-pass.
    noise = 0.1 * torch.randn(x.shape, generator=gen)
    assert float(laplacian_loss(x + noise, x)) > 0.05


def test_stopping_rule():
    from videdit.tuning.loop import should_stop

    assert not should_stop([1.0] * 3, window=5, threshold=2.0, rel_improvement=0.0)  # window not full
    assert should_stop([1.0] * 5, window=5, threshold=2.0, rel_improvement=0.0)
    assert not should_stop([1.0] * 5, window=5, threshold=0.5, rel_improvement=0.0)
    improving = list(np.linspace(1.0, 0.5, 10))
    assert not should_stop(improving, window=5, threshold=0.0, rel_improvement=0.01)
    assert should_stop([1.0] * 5 + [0.999] * 5, window=5, threshold=0.0, rel_improvement=0.01)
    assert not should_stop([1.0] * 20, window=0, threshold=5.0, rel_improvement=0.5)  # window 0: never


# --------------------------------------------------------------------------------------------------
# The tuner


def test_tweak_improves_reconstruction_and_keeps_frozen_parts(video_inputs, tweaked):
    from videdit.checkpoints import load_generator
    from videdit.tuning.pti import reconstruction_psnr

    align, latents, gen_path = video_inputs
    result, out = tweaked
    assert result.steps_done == TWEAK["max_steps"] and not result.stopped_early
    before, after = tensors(gen_path), tensors(result.generator_path)
    frozen = [k for k in before if k.startswith(("mapping.", "synthesis.input."))]
    assert "synthesis.input.affine.weight" in frozen and "mapping.fc0.weight" in frozen
    for k in frozen:
        assert torch.equal(before[k], after[k]), k
    moved = [k for k in before if k.startswith("synthesis.L") and k.endswith(".weight") and not torch.equal(before[k], after[k])]
    assert len(moved) >= 5, moved
    info = json.loads((out / "tuner.json").read_text())
    losses = info["laplacian_losses"]
    assert info["uses_discriminator"] and len(losses) == TWEAK["max_steps"]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    psnr_before = reconstruction_psnr(load_generator(gen_path), align, latents)
    psnr_after = reconstruction_psnr(load_generator(result.generator_path), align, latents)
    assert psnr_after > psnr_before + 0.3, (psnr_before, psnr_after)


def test_tweak_resumes_from_its_checkpoint(video_inputs, tweaked, tmp_path):
    from videdit.tuning.local_tweak import LocalTweakSettings, run_local_tweak

    align, latents, gen_path = video_inputs
    reference, out = tweaked
    work = tmp_path / "t"
    payload = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    assert payload["step"] == TWEAK["max_steps"] and payload["tuner"] == "local-tweak"
    # A shorter run (as if interrupted after its checkpoint), then the full one continues it.
    short = run_local_tweak(align, latents, gen_path, work, LocalTweakSettings(**dict(TWEAK, max_steps=8)),
                            discriminator=tiny_discriminator())
    assert short.resumed_from_step == 0 and short.steps_done == 8
    resumed = run_local_tweak(align, latents, gen_path, work, LocalTweakSettings(**TWEAK), discriminator=tiny_discriminator())
    assert resumed.resumed_from_step == 8 and resumed.steps_done == TWEAK["max_steps"]
    a, b = tensors(reference.generator_path), tensors(resumed.generator_path)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)


def test_discriminator_is_required_and_found_in_the_pickle(video_inputs, tmp_path):
    from videdit.checkpoints.fixtures import write_snapshot_pickle
    from videdit.tuning.local_tweak import LocalTweakSettings, run_local_tweak

    align, latents, gen_path = video_inputs
    settings = LocalTweakSettings(**dict(TWEAK, max_steps=1, checkpoint_every=0))
    with pytest.raises(MissingWeightsError, match="discriminator") as err:
        run_local_tweak(align, latents, gen_path, tmp_path / "a", settings)
    assert "\n" not in str(err.value)

    G = tiny_generator()
    no_d = write_snapshot_pickle(tmp_path / "g_only.pkl", {"G": G, "G_ema": G})
    with pytest.raises(CheckpointError, match="'D'") as err:
        run_local_tweak(align, latents, no_d, tmp_path / "b", settings)
    assert "\n" not in str(err.value) and "discriminator" in str(err.value)

    with_d = write_snapshot_pickle(tmp_path / "full.pkl", {"G": G, "D": tiny_discriminator(), "G_ema": G})
    result = run_local_tweak(align, latents, with_d, tmp_path / "c", settings)  # D read from the generator's pickle
    assert result.steps_done == 1 and json.loads((tmp_path / "c" / "tuner.json").read_text())["uses_discriminator"]


def test_reconstruction_only_needs_no_discriminator_and_stops(video_inputs, tmp_path):
    from videdit.tuning.local_tweak import LocalTweakSettings, run_local_tweak

    align, latents, gen_path = video_inputs
    settings = LocalTweakSettings(**dict(TWEAK, max_steps=50, lambda_local=0.0, global_weight=0.0, stop_window=2,
                                         stop_threshold=100.0))
    result = run_local_tweak(align, latents, gen_path, tmp_path / "t", settings)
    assert result.stopped_early and result.steps_done == 2
