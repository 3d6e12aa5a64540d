"""A one-person clip with a hard cut: the run finds the cut, and no smoothing window crosses it: the frames
next to the cut equal those of the two shots processed alone."""
from __future__ import annotations

import numpy as np
import pytest

SMALL = {"align.crop_size": 64, "encode.n_iters": 1, "encode.batch_size": 4, "tune.tuner": "none",
         "render.side_by_side": False}


def _pipeline(**overrides):
    from videdit.pipeline import Pipeline, StandInModels

    return Pipeline.from_preset("default", overrides={**SMALL, **overrides}, quiet=True, models=StandInModels(resolution=64))


@pytest.fixture(scope="module")
def cut_clip(tmp_path_factory):
    """One person (the astronaut), a hard cut at frame 5 to another framing of her: a slow drift in each shot."""
    from videdit.synthetic import FacePlacement, ShotSpec, make_scene_clip

    root = tmp_path_factory.mktemp("cut")
    make_scene_clip(root / "cut.mp4", [
        ShotSpec(5, (FacePlacement("astronaut", 70.0, (90.0, 80.0), drift_px=(1.5, 0.5)),), background=(60, 70, 80)),
        ShotSpec(5, (FacePlacement("astronaut", 90.0, (110.0, 90.0), drift_px=(-1.0, 1.0)),), background=(150, 120, 90)),
    ], size=(224, 192))
    return root


def test_smoothing_stops_at_the_cut(cut_clip, tmp_path):
    from videdit import records

    whole = _pipeline().run(cut_clip / "cut.mp4", tmp_path / "whole", until="smooth")
    assert whole.status == "ok", whole.error
    align = records.AlignRecord.load(whole.run_dir / "align")
    assert align.segments() == [(0, 5), (5, 10)]
    smoothed = np.load(whole.run_dir / "smooth" / "latents_recon.npy")
    encoded = np.load(whole.run_dir / "encode" / "latents.npy")
    raw = records.AlignRecord.load(whole.run_dir / "smooth")

    # Each shot smoothed alone, with the same kernel and end rule: equal, frames next to the cut included.
    from videdit.temporal import SmoothSettings, smooth_latents, smooth_transforms

    settings = SmoothSettings()
    for start, end in align.segments():
        alone = smooth_latents(encoded[start:end], settings)
        np.testing.assert_allclose(smoothed[start:end], alone, atol=1e-6)
        rotation, translation, _ = smooth_transforms(align.rotation_deg[start:end], align.translation[start:end], settings)
        np.testing.assert_allclose(raw.rotation_deg[start:end], rotation, atol=1e-4)
        np.testing.assert_allclose(raw.translation[start:end], translation, atol=1e-6)
    # and across the cut it would not have been: the test can fail
    across = smooth_latents(encoded, settings)
    assert not np.allclose(across[4], smoothed[4], atol=1e-6)


def test_without_shot_detection_the_window_crosses(cut_clip, tmp_path):
    from videdit import records

    run = _pipeline(**{"align.detect_shots": False}).run(cut_clip / "cut.mp4", tmp_path / "run", until="align")
    assert records.AlignRecord.load(run.run_dir / "align").segments() == [(0, 10)]


def test_each_shot_has_its_own_box(cut_clip, tmp_path):
    """No fixed crop box crosses the cut: each shot's box is its first face's quad, so the transform is the
    identity at each shot's first frame, and the unaligned crops of each shot are cut with its own box."""
    from PIL import Image

    from videdit import records
    from videdit.face.alignment import ffhq_quad, quad_to_crop
    from videdit.io import VideoReader

    run = _pipeline().run(cut_clip / "cut.mp4", tmp_path / "run", until="align")
    assert run.status == "ok", run.error
    align = records.AlignRecord.load(run.run_dir / "align")
    assert align.segments() == [(0, 5), (5, 10)] and align.face_found.all()
    boxes = align.frame_boxes()
    for start, end in align.segments():
        np.testing.assert_allclose(boxes[start:end], np.broadcast_to(ffhq_quad(align.landmarks[start].astype(np.float64)),
                                                                     (end - start, 4, 2)), atol=1e-3)
        assert abs(float(align.rotation_deg[start])) < 1e-3 and np.abs(align.translation[start]).max() < 1e-5
    assert np.abs(boxes[5] - boxes[4]).max() > 5  # the two framings differ: one box for both would be wrong
    np.testing.assert_allclose(align.box_quad, boxes[0])
    frame = next(f for f in VideoReader(cut_clip / "cut.mp4") if f.index == 7)
    crop = np.asarray(Image.open(run.run_dir / "align" / "unaligned" / "000007.png"), dtype=float)
    size = crop.shape[0]
    assert np.abs(crop - quad_to_crop(frame.image, boxes[7], size)).max() <= 1
    assert np.abs(crop - quad_to_crop(frame.image, boxes[0], size)).mean() > 10
