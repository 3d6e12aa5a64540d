"""InterFaceGAN and StyleSpace edits: shapes, names, strengths, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from videdit.errors import InputError, MissingWeightsError
from videdit.stages.edit import (
    EditSettings,
    StyleChannel,
    apply_direction,
    load_direction,
    run_edit,
    write_keyed_edits,
    strength_label,
)

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


def test_direction_added_to_every_entry(latents_file, tmp_path):
    path, latents = latents_file
    d = _unit_direction()
    np.save(tmp_path / "my_boundary.npy", d)
    res = run_edit(path, tmp_path / "edit", EditSettings(direction=str(tmp_path / "my_boundary.npy"), strengths=[0, 2.5, -1]))
    assert list(res.latents_paths) == ["recon", "my_+0.0", "my_+2.5", "my_-1.0"]
    np.testing.assert_array_equal(np.load(res.latents_paths["recon"]), latents)
    np.testing.assert_array_equal(np.load(res.latents_paths["my_+0.0"]), latents)  # strength 0: bit for bit
    edited = np.load(res.latents_paths["my_+2.5"])
    # Every one of the 16 entries of every frame moved by exactly 2.5 along d.
    delta = edited.astype(np.float64) - latents
    np.testing.assert_allclose(delta, np.broadcast_to(2.5 * d.astype(np.float64), delta.shape), atol=1e-5)
    np.testing.assert_allclose((delta.reshape(-1, 512) @ d[0]), 2.5, atol=1e-4)


def test_flat_direction_shape_and_bad_shapes(tmp_path):
    d = _unit_direction(shape=(512,))
    np.save(tmp_path / "flat.npy", d)
    np.testing.assert_array_equal(load_direction(tmp_path / "flat.npy", 512), d)
    np.save(tmp_path / "bad.npy", np.zeros((2, 512), np.float32))
    with pytest.raises(InputError, match="shape"):
        load_direction(tmp_path / "bad.npy", 512)
    np.save(tmp_path / "small.npy", np.zeros((1, 256), np.float32))
    with pytest.raises(InputError, match="shape"):
        load_direction(tmp_path / "small.npy", 512)
    np.save(tmp_path / "nan.npy", np.full((512,), np.nan, np.float32))
    with pytest.raises(InputError, match="finite"):
        load_direction(tmp_path / "nan.npy", 512)


def test_named_direction_from_weights_folder(latents_file, tmp_path):
    path, latents = latents_file
    wdir = tmp_path / "weights"
    wdir.mkdir()
    with pytest.raises(MissingWeightsError) as err:
        run_edit(path, tmp_path / "e1", EditSettings(direction="age"), weights_dir=wdir)
    assert "age_boundary.npy" in str(err.value) and "\n" not in str(err.value)
    d = _unit_direction(seed=3)
    np.save(wdir / "age_boundary.npy", d)
    res = run_edit(path, tmp_path / "e2", EditSettings(direction="age"), weights_dir=wdir)
    # Published defaults: the two ends of (-4, 5).
    assert list(res.latents_paths) == ["recon", "age_-4.0", "age_+5.0"]
    np.testing.assert_allclose(np.load(res.latents_paths["age_+5.0"]), latents + 5 * d[None], atol=1e-5)
    with pytest.raises(InputError, match="unknown edit"):
        run_edit(path, tmp_path / "e3", EditSettings(direction="beard"), weights_dir=wdir)


def test_no_edit_gives_reconstruction_only(latents_file, tmp_path):
    path, latents = latents_file
    res = run_edit(path, tmp_path / "edit", EditSettings(direction=""))
    assert list(res.latents_paths) == ["recon"]
    np.testing.assert_array_equal(np.load(res.latents_paths["recon"]), latents)


def test_stylespace_sidecar(latents_file, tmp_path):
    path, latents = latents_file
    spec = [StyleChannel(layer=3, channel=7, offset=2.0), StyleChannel(layer="L5_52_64", channel=1, offset=-1.0)]
    res = run_edit(path, tmp_path / "edit", EditSettings(stylespace=spec, strengths=[1.5]))
    out = res.latents_paths["stylespace_+1.5"]
    np.testing.assert_array_equal(np.load(out), latents)  # W+ untouched
    offsets = json.loads((tmp_path / "edit" / "latents_stylespace_+1.5.npy.stylespace.json").read_text())["offsets"]
    assert offsets == [{"layer": 3, "channel": 7, "offset": 3.0}, {"layer": "L5_52_64", "channel": 1, "offset": -1.5}]
    # The same spec from a JSON file.
    (tmp_path / "eyes.json").write_text(json.dumps([{"layer": 3, "channel": 7, "offset": 2.0}]))
    res2 = run_edit(path, tmp_path / "edit2", EditSettings(stylespace=str(tmp_path / "eyes.json"), strengths=[1]))
    assert "eyes_+1.0" in res2.latents_paths


def test_apply_direction_and_labels():
    w = np.ones((2, 3, 4), np.float32)
    d = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(apply_direction(w, d, -2.0)[1, 2], [1, -1, -3, -5])
    assert strength_label(5) == "+5.0" and strength_label(-4) == "-4.0" and strength_label(0.25) == "+0.25"


def test_pipeline_keyed_form(latents_file, tmp_path):
    path, latents = latents_file
    d = _unit_direction(shape=(512,))
    res = run_edit(path, tmp_path / "edit", [("recon", 0.0), ("age", 3.0)], d)
    assert list(res.latents_paths) == ["recon", "age"]
    np.testing.assert_array_equal(np.load(tmp_path / "edit" / "latents_recon.npy"), latents)
    np.testing.assert_allclose(np.load(tmp_path / "edit" / "latents_age.npy"), latents + 3 * d, atol=1e-5)
    with pytest.raises(InputError):
        write_keyed_edits(path, tmp_path / "e2", [("x", 1.0)], np.zeros(256, np.float32))
    # StyleSpace in the keyed form: a sidecar per non-zero strength.
    res = write_keyed_edits(path, tmp_path / "e3", [("recon", 0.0), ("eyes", 2.0)], None,
                            stylespace=[StyleChannel(layer=1, channel=0, offset=0.5)])
    assert not (tmp_path / "e3" / "latents_recon.npy.stylespace.json").exists()
    side = json.loads((tmp_path / "e3" / "latents_eyes.npy.stylespace.json").read_text())
    assert side == {"offsets": [{"layer": 1, "channel": 0, "offset": 1.0}]}
    np.testing.assert_array_equal(np.load(res.latents_paths["eyes"]), latents)
