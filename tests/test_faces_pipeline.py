"""`--faces`: every chosen person's tracks aligned, tuned, edited and rendered on their own, then all pasted."""
from __future__ import annotations

import numpy as np
import pytest

from videdit.synthetic import FacePlacement, ShotSpec, make_scene_clip

SMALL = {"align.crop_size": 64, "encode.n_iters": 1, "encode.batch_size": 4, "tune.steps": 2, "tune.batch_size": 2,
         "tune.allow_l2_only": True, "tune.lpips_weight": 0.0, "tune.checkpoint_every": 0,
         "edit.direction": "age", "edit.strengths": [3.0], "render.side_by_side": False,
         "faces.min_track_frames": 4, "composite.crf": 0}


def _pipeline(**overrides):
    from videdit.pipeline import Pipeline, StandInModels

    return Pipeline.from_preset("default", overrides={**SMALL, **overrides}, quiet=True, models=StandInModels(resolution=64))


@pytest.fixture(scope="module")
def two_people(tmp_path_factory):
    """Two people side by side, as a lossless 4:4:4 clip: so "the background is the source's" can be checked
    bit for bit (a 4:2:0 round trip moves chroma next to every edge, composite or not)."""
    from videdit.io import VideoReader, VideoWriter

    root = tmp_path_factory.mktemp("two")
    clip = make_scene_clip(root / "scene.mp4", [ShotSpec(6, (
        FacePlacement("astronaut", 88.0, (80, 96), drift_px=(1.5, 0)),  # faces the HOG detector finds (its window is 80 px)
        FacePlacement("grace_hopper", 88.0, (240, 96), drift_px=(-1.0, 0.5))))], size=(320, 192), crf=4)
    reader = VideoReader(clip.path)
    with VideoWriter(root / "two.mp4", reader.info.fps, reader.info.size, pix_fmt="yuv444p", crf=0) as writer:
        for frame in reader:
            writer.write(frame.image)
    clip.path = root / "two.mp4"
    return clip


def _decode(path):
    from videdit.io import VideoReader

    return [f.image.astype(np.int16) for f in VideoReader(path)]


@pytest.mark.slow
def test_all_faces_are_edited_and_the_background_is_untouched(two_people, tmp_path):
    from videdit import records

    run = _pipeline(**{"faces.select": "all"}).run(two_people.path, tmp_path / "run")
    assert run.status == "ok", run.error
    tracks = records.TracksRecord.load(run.run_dir)
    assert [(t.person, t.start, t.end) for t in tracks.tracks] in ([("p1", 0, 6), ("p2", 0, 6)], [("p2", 0, 6), ("p1", 0, 6)])
    for t in tracks.tracks:  # each track's align record, as the run folder format says
        align = records.AlignRecord.load(run.run_dir / t.dir / "align")
        assert align.landmarks.shape == (6, 68, 2) and align.face_found.all()
    source, edited = _decode(two_people.path), _decode(run.run_dir / "two.age+3.mp4")
    assert len(source) == len(edited) == 6
    boxes = []
    for t in tracks.tracks:
        quad = records.AlignRecord.load(run.run_dir / t.dir / "align").box_quad
        boxes.append((max(int(quad[:, 0].min()) - 2, 0), max(int(quad[:, 1].min()) - 2, 0), int(quad[:, 0].max()) + 3, int(quad[:, 1].max()) + 3))
    outside = np.ones(source[0].shape[:2], bool)
    for x0, y0, x1, y1 in boxes:
        outside[max(y0, 0):y1, max(x0, 0):x1] = False
    assert outside.mean() > 0.1  # the crop boxes are large (twice the eye distance around the face)
    for a, b in zip(source, edited):
        # Outside both faces the composite copies the source's pixels (bit-identical frames: test_composite);
        # through the lossless 4:4:4 encode, RGB -> YUV -> RGB moves a rare textured pixel by one code.
        diff = np.abs(a[outside] - b[outside])
        assert diff.max() <= 1 and (diff == 0).all(axis=-1).mean() > 0.995
    for x0, y0, x1, y1 in boxes:  # and both faces changed
        change = np.mean([np.abs(a[y0:y1, x0:x1] - b[y0:y1, x0:x1]).mean() for a, b in zip(source, edited)])
        assert change > 2.0, change

    # Asking for one more person later reuses everything already done for the other.
    one = _pipeline(**{"faces.select": "p1"}).run(two_people.path, tmp_path / "run1")
    assert one.status == "ok", one.error
    import shutil

    both_dir = tmp_path / "run1"
    again = _pipeline(**{"faces.select": "all"}).run(two_people.path, both_dir)
    p1 = next(t for t in tracks.tracks if t.person == "p1")
    assert all(again.stages[f"{p1.id}/{s}"] == "cached" for s in ("align", "encode", "tune", "edit", "smooth", "render"))
    assert again.stages["composite"] == "ran"


def test_an_unknown_person_is_one_line_naming_the_people(two_people, tmp_path):
    run = _pipeline(**{"faces.select": "p9"}).run(two_people.path, tmp_path / "run")
    assert run.status == "failed" and "\n" not in run.error
    assert "p9" in run.error and "p1" in run.error and "p2" in run.error


@pytest.mark.slow
def test_each_person_gets_their_own_edit(two_people, tmp_path):
    """`p1=age:3`, `p2=smile:-2`: one output; in each person's track the edit stage moved the latents by that
    person's edit only (before smoothing), and both faces changed. A person who is not there, or not chosen,
    is one line before any track is aligned."""
    from videdit import records
    from videdit.pipeline import StandInModels

    run = _pipeline(**{"faces.select": "all", "edit.direction": "", "edit.strengths": [],
                       "edit.edits": ["p1=age:3", "p2=smile:-2"]}).run(two_people.path, tmp_path / "run")
    assert run.status == "ok", run.error
    key = "p1-age3+p2-smile-2"
    assert [p.name for p in run.outputs] == [f"two.{key}.mp4", "two.recon.mp4"]
    models = StandInModels(resolution=64)
    own = {"p1": 3 * models.edit_direction("age")[0].astype(np.float64),
           "p2": -2 * models.edit_direction("smile")[0].astype(np.float64)}
    tracks = records.TracksRecord.load(run.run_dir).tracks
    assert sorted(t.person for t in tracks) == ["p1", "p2"]
    for t in tracks:
        edit = run.run_dir / t.dir / "edit"
        recon = np.load(edit / "latents_recon.npy").astype(np.float64)
        # |s d| <= 3 and |w| < 8 round once each in float32: under 1e-6 per entry; 1e-5 leaves room
        np.testing.assert_allclose(np.load(edit / f"latents_{key}.npy") - recon,
                                   np.broadcast_to(own[t.person], recon.shape), rtol=0, atol=1e-5)
    source, edited = _decode(two_people.path), _decode(run.outputs[0])
    for t in tracks:
        quad = records.AlignRecord.load(run.run_dir / t.dir / "align").box_quad
        x0, y0 = max(int(quad[:, 0].min()), 0), max(int(quad[:, 1].min()), 0)  # the box may reach past the frame
        x1, y1 = int(quad[:, 0].max()), int(quad[:, 1].max())
        assert np.mean([np.abs(a[y0:y1, x0:x1] - b[y0:y1, x0:x1]).mean() for a, b in zip(source, edited)]) > 1.0

    for select, edits, words in [("all", ["p3=age"], "no such person"), ("p1", ["p1=age", "p2=smile"], "not chosen")]:
        bad = _pipeline(**{"faces.select": select, "edit.direction": "", "edit.edits": edits, "edit.strengths": []})
        result = bad.run(two_people.path, tmp_path / f"bad-{select}")
        assert result.status == "failed" and words in result.error and "\n" not in result.error, result.error
        assert not list((tmp_path / f"bad-{select}").glob("tracks/*/align"))
