"""The edit stage on the live path: EditSpecs -> edit/latents_<key>.npy (W+) and styles_<key>.safetensors (S)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from videdit.edits import load_direction, parse_edit, parse_edits
from videdit.errors import InputError, MissingWeightsError, VideditError
from videdit.stages.edit import apply_direction, run_edit

pytestmark = pytest.mark.numeric


@pytest.fixture
def latents_file(tmp_path):
    latents = np.random.default_rng(0).standard_normal((4, 16, 512)).astype(np.float32)
    path = tmp_path / "latents.npy"
    np.save(path, latents)
    return path, latents


def _unit_direction(seed=1, shape=(1, 512)):
    d = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return d / np.linalg.norm(d)


def _tiny_synthesis():
    from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Generator(**tiny_generator_kwargs(16, channels=8, num_layers=4)).synthesis


def test_direction_added_to_every_entry(latents_file, tmp_path):
    path, latents = latents_file
    d = _unit_direction()
    np.save(tmp_path / "my_boundary.npy", d)
    specs = parse_edits([str(tmp_path / "my_boundary.npy")], [0, 2.5, -1])
    res = run_edit(path, tmp_path / "edit", specs, direction=lambda target: load_direction(target, 512))
    assert list(res.latents_paths) == ["recon", "my+0", "my+2.5", "my-1"] and res.num_frames == 4
    assert [p.name for p in res.latents_paths.values()] == ["latents_recon.npy", "latents_my+0.npy",
                                                             "latents_my+2.5.npy", "latents_my-1.npy"]
    np.testing.assert_array_equal(np.load(res.latents_paths["recon"]), latents)
    np.testing.assert_array_equal(np.load(res.latents_paths["my+0"]), latents)  # strength 0: bit for bit (a copy)
    edited = np.load(res.latents_paths["my+2.5"])
    # Every one of the 16 entries of every frame moved by 2.5 along d. In float32 (|w| < 6, |2.5 d| <= 2.5) the
    # product and the sum each round by at most half an ulp of 8: 2 * 4.8e-7 < 1e-6 per entry; 1e-5 leaves room.
    delta = edited.astype(np.float64) - latents
    np.testing.assert_allclose(delta, np.broadcast_to(2.5 * d.astype(np.float64), delta.shape), atol=1e-5)
    # d is a unit vector: the step along it is the strength (those errors against d: 1e-6 * sum|d_i| <=
    # 1e-6 * sqrt(512) = 2.3e-5 < 1e-4).
    np.testing.assert_allclose(delta.reshape(-1, 512) @ d[0], 2.5, atol=1e-4)


def test_flat_direction_shape_and_bad_shapes(tmp_path):
    d = _unit_direction(shape=(512,))
    np.save(tmp_path / "flat.npy", d)
    np.testing.assert_array_equal(load_direction(tmp_path / "flat.npy", 512), d)
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 512), np.float32))
    with pytest.raises(InputError, match="shape"):
        load_direction(tmp_path / "bad.npy", 512)
    np.save(tmp_path / "small.npy", np.zeros((1, 256), np.float32))
    with pytest.raises(InputError, match="shape"):
        load_direction(tmp_path / "small.npy", 512)
    np.save(tmp_path / "nan.npy", np.full((512,), np.nan, np.float32))
    with pytest.raises(InputError, match="finite"):
        load_direction(tmp_path / "nan.npy", 512)


def test_named_direction_from_weights_folder(latents_file, tmp_path):
    """A direction by name comes from the weights folder (PretrainedModels); missing, it is one line naming the
    file; the default strength is the upper end of the published range (videdit.edits, age: +5)."""
    from videdit.models import PretrainedModels

    path, latents = latents_file
    wdir = tmp_path / "weights"
    wdir.mkdir()
    models = PretrainedModels(wdir)
    with pytest.raises(MissingWeightsError) as err:
        run_edit(path, tmp_path / "e1", parse_edits(["age"]), direction=lambda t: models.edit_direction(t)[0])
    assert "age_boundary.npy" in str(err.value) and "videdit weights fetch edit_age" in str(err.value)
    d = _unit_direction(seed=3)
    np.save(wdir / "age_boundary.npy", d)
    res = run_edit(path, tmp_path / "e2", parse_edits(["age"]), direction=lambda t: models.edit_direction(t)[0])
    assert list(res.latents_paths) == ["recon", "age"]
    np.testing.assert_allclose(np.load(res.latents_paths["age"]), latents + 5 * d[None], atol=1e-5)  # as above
    with pytest.raises(VideditError, match="unknown edit"):
        parse_edit("beard")


def test_no_edit_gives_reconstruction_only(latents_file, tmp_path):
    path, latents = latents_file
    res = run_edit(path, tmp_path / "edit", parse_edits([]))
    assert list(res.latents_paths) == ["recon"]
    np.testing.assert_array_equal(np.load(res.latents_paths["recon"]), latents)


def test_channel_edit_writes_per_frame_offsets(latents_file, tmp_path):
    from videdit.stylespace import load_styles

    path, latents = latents_file
    synthesis = _tiny_synthesis()
    widths = synthesis.style_widths()
    key = list(widths)[2]
    res = run_edit(path, tmp_path / "edit", parse_edits([f"s:{key}:1"], [0.0, 1.5]), synthesis=synthesis)
    assert list(res.latents_paths) == ["recon", f"s-{key}-1+0", f"s-{key}-1+1.5"]
    assert [p.name for p in res.latents_paths.values()][1:] == [f"styles_s-{key}-1+0.safetensors",
                                                                f"styles_s-{key}-1+1.5.safetensors"]
    np.testing.assert_array_equal(np.load(res.latents_paths["recon"]), latents)  # W+ untouched
    zero, moved = (load_styles(res.latents_paths[k], widths) for k in (f"s-{key}-1+0", f"s-{key}-1+1.5"))
    assert list(moved) == list(widths) and all(v.shape == (4, widths[k]) for k, v in moved.items())
    assert all(not v.any() for v in zero.values())  # strength 0: no offset anywhere
    expected = {k: torch.zeros(4, w) for k, w in widths.items()}
    expected[key][:, 1] = 1.5
    assert all(torch.equal(moved[k], expected[k]) for k in widths)  # that channel only, every frame


def test_edits_need_their_sources_and_valid_directions(latents_file, tmp_path):
    path, _ = latents_file
    with pytest.raises(InputError, match="direction source"):
        run_edit(path, tmp_path / "e1", parse_edits(["age"]))
    with pytest.raises(InputError, match="synthesis network"):
        run_edit(path, tmp_path / "e2", parse_edits(["s:L1_36_512:0"]))
    with pytest.raises(InputError, match="512 finite values") as err:
        run_edit(path, tmp_path / "e3", parse_edits(["age"]), direction=lambda t: np.zeros(256, np.float32))
    assert "\n" not in str(err.value)
    with pytest.raises(VideditError, match="unknown StyleSpace layer"):
        run_edit(path, tmp_path / "e4", parse_edits(["s:L99_1_1:0"]), synthesis=_tiny_synthesis())


def test_apply_direction():
    w = np.ones((2, 3, 4), np.float32)
    d = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(apply_direction(w, d, -2.0)[1, 2], [1, -1, -3, -5])
    np.testing.assert_array_equal(apply_direction(w, d, 0.0), w)
