"""`videdit directions fit`: InterFaceGAN's boundary fitting on scored latents and on example folders."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from videdit.directions_fit import FitSettings, classes_from_scores, fit_direction, project_out
from videdit.errors import VideditError


def videdit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "videdit", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def _planted(n=5000, dim=32, noise=0.1, seed=0):
    """W+ latents [n, 4, dim] whose attribute score is the projection of their W mean on a planted unit direction
    plus noise. dim 32 keeps the test quick: the classes hold 2% x n = 100 latents each, and recovering a direction
    to cosine 0.95 takes more examples per dimension (measured: 512 dims, 200 per class: cosine 0.92)."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal(dim)
    d /= np.linalg.norm(d)
    latents = rng.standard_normal((n, 4, dim)).astype(np.float32)
    scores = latents.mean(axis=1).astype(np.float64) @ d + noise * rng.standard_normal(n)
    return latents, scores, d


def test_planted_direction_recovered_from_latents_and_scores(tmp_path):
    latents, scores, d = _planted()
    np.save(tmp_path / "L.npy", latents)
    np.save(tmp_path / "S.npy", scores)
    out = videdit("directions", "fit", "--latents", tmp_path / "L.npy", "--scores", tmp_path / "S.npy",
                  "--out", tmp_path / "mine.npy")
    assert out.returncode == 0, out.stderr
    assert "100 positive, 100 negative" in out.stdout and "cross-validated accuracy" in out.stdout
    found = np.load(tmp_path / "mine.npy")
    assert found.dtype == np.float32 and found.shape == (32,)
    assert abs(float(np.linalg.norm(found)) - 1) < 1e-6  # unit (float32 rounding of 32 entries: ~1e-7)
    assert float(found @ d) >= 0.95
    info = json.loads((tmp_path / "mine.json").read_text())
    assert info["source"] == "scores" and info["counts"] == {"positive": 100, "negative": 100}
    assert info["settings"]["classifier"] == "svm" and info["settings"]["fraction"] == 0.02


def test_logistic_wplus_and_conditional():
    latents, scores, d = _planted(seed=1)
    pos, neg = classes_from_scores(latents, scores, 0.02)
    logistic = fit_direction(pos, neg, FitSettings(classifier="logistic"))
    assert float(logistic.direction @ d) >= 0.95
    wplus = fit_direction(pos, neg, FitSettings(space="wplus"))
    assert wplus.direction.shape == (4, 32)
    # each layer carries a quarter of the mean: the layers' rows point along d together
    assert float(wplus.direction.sum(axis=0) @ d / np.linalg.norm(wplus.direction.sum(axis=0))) >= 0.9
    other = np.random.default_rng(5).standard_normal(32)
    other /= np.linalg.norm(other)
    cond = fit_direction(pos, neg, FitSettings(), conditional=[other])
    # orthogonal to the condition up to float32 rounding of 32 products (~1e-7 each)
    assert abs(float(cond.direction @ other)) < 1e-5 and abs(float(np.linalg.norm(cond.direction)) - 1) < 1e-6
    expected = project_out(fit_direction(pos, neg, FitSettings()).direction, [other])
    np.testing.assert_allclose(cond.direction, expected, atol=1e-6)


def test_too_few_and_bad_inputs_are_one_line(tmp_path):
    latents, scores, _ = _planted(n=60)
    with pytest.raises(VideditError, match="need at least 2"):
        classes_from_scores(latents, scores, 0.02)  # 60 x 0.02 = 1 per class
    with pytest.raises(VideditError, match="negative: 0 examples"):
        fit_direction(latents[:3], latents[:0])
    np.save(tmp_path / "L.npy", latents)
    np.save(tmp_path / "S.npy", scores[:10])
    out = videdit("directions", "fit", "--latents", tmp_path / "L.npy", "--scores", tmp_path / "S.npy", "--out",
                  tmp_path / "x.npy")
    assert out.returncode == 1 and "60 latents but 10 scores" in out.stderr and "Traceback" not in out.stderr


def _face_images(folder, flips):
    """Face images made from the shipped photos: the photo, mirrored, shifted; `flips` chooses which."""
    from PIL import Image
    from skimage import data

    folder.mkdir()
    astronaut = data.astronaut()
    for name, image in [("plain", astronaut), ("mirrored", astronaut[:, ::-1]), ("shifted", np.roll(astronaut, 12, axis=1)),
                        ("shifted-down", np.roll(astronaut, 10, axis=0))]:
        if name in flips:
            Image.fromarray(np.ascontiguousarray(image)).save(folder / f"{name}.png")
    return folder


@pytest.mark.slow
def test_example_folders_on_the_stand_in_encoder_end_to_end(tmp_path):
    """--positive/--negative folders run end to end with the stand-in networks. The direction means nothing there
    (random encoder and generator); the test shows the plumbing: faces found, aligned, encoded, fitted, written,
    and that `--edit OUT.npy` takes the file. A folder with a faceless image is one line naming it."""
    from matplotlib.cbook import get_sample_data
    from PIL import Image

    pos = _face_images(tmp_path / "pos", ("plain", "mirrored"))
    neg = tmp_path / "neg"
    neg.mkdir()
    with get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    Image.fromarray(hopper).save(neg / "hopper.png")
    Image.fromarray(np.ascontiguousarray(hopper[:, ::-1])).save(neg / "hopper-mirrored.png")
    out = videdit("directions", "fit", "--positive", pos, "--negative", neg, "--stand-ins", "--out", tmp_path / "d.npy")
    assert out.returncode == 0, out.stderr
    assert "2 positive, 2 negative" in out.stdout
    d = np.load(tmp_path / "d.npy")
    assert d.shape == (512,) and abs(float(np.linalg.norm(d)) - 1) < 1e-6
    info = json.loads((tmp_path / "d.json").read_text())
    assert info["source"] == "examples" and info["models"] == "stand-in" and "means nothing" in info["note"]
    from videdit.edits import load_direction, parse_edit

    assert parse_edit(str(tmp_path / "d.npy")).kind == "w" and load_direction(tmp_path / "d.npy", 512).shape == (512,)

    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(neg / "grey.png")
    out = videdit("directions", "fit", "--positive", pos, "--negative", neg, "--stand-ins", "--out", tmp_path / "e.npy")
    assert out.returncode == 1 and "no face found in 1 file: grey.png" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow  # dlib's landmark model and the stand-in networks: about 25 s on the loaded 2-core machine
def test_example_faces_are_found_and_encoded_under_progress_bars(tmp_path):
    """`directions fit` on example folders shows how far it is: a bar over the files (landmarks, crops) and one
    over the encoder's batches, under the reporter the command installs."""
    import io

    from videdit.directions_fit import face_latents, media_files
    from videdit.models import StandInModels
    from videdit.progress import Reporter, reporting

    files = media_files(_face_images(tmp_path / "pos", ("plain",)))
    stream = io.StringIO()
    with reporting(Reporter(stream=stream, tty=False, interval=0.0)):  # plain lines, one per update
        latents = face_latents(files, StandInModels(), n_iters=1)
    assert latents.shape[0] == 1
    lines = stream.getvalue().splitlines()
    assert any(line.strip().startswith("directions: faces: 1/1 file") for line in lines), lines
    assert any(line.strip().startswith("directions: encode: 1/1 batch of 8") for line in lines), lines
