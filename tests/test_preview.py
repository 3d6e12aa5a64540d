"""`videdit preview` on a two-shot clip with the stand-in networks: one column per shot's middle frame, the input on
top of the rendered rows, and the cache: a second preview with another strength runs no encoder (counted with a
forward hook on the encoder) and renders only."""
from __future__ import annotations

import json

import numpy as np
import pytest

from videdit import layout


@pytest.fixture(scope="module")
def two_shots(tmp_path_factory):
    """Two shots of 4 frames: the astronaut, then Grace Hopper on another background."""
    from videdit.synthetic import FacePlacement, ShotSpec, make_scene_clip

    root = tmp_path_factory.mktemp("preview")
    return make_scene_clip(root / "two.mp4", [
        ShotSpec(4, (FacePlacement("astronaut", 70.0, (90.0, 80.0), drift_px=(1.5, 0.5)),), background=(60, 70, 80)),
        ShotSpec(4, (FacePlacement("grace_hopper", 90.0, (110.0, 90.0), drift_px=(-1.0, 1.0)),),
                 background=(150, 120, 90)),
    ], size=(224, 192))


class CountingStandIns:
    """StandInModels whose encoder counts its forward calls (the encoder of every pipeline made with it)."""

    def __new__(cls):
        from videdit.models import StandInModels

        class Counting(StandInModels):
            calls = 0

            def load_encoder(self, device):
                encoder, latent_avg = super().load_encoder(device)

                def count(*_):
                    type(self).calls += 1

                encoder.register_forward_hook(count)
                return encoder, latent_avg

        return Counting()


def _pipeline(models, strengths):
    from videdit.models import stand_in_overrides
    from videdit.pipeline import Pipeline

    overrides = dict(stand_in_overrides(), **{"encode.n_iters": 1, "edit.strengths": strengths})
    return Pipeline.from_preset("demo", overrides=overrides, models=models, quiet=True)


def test_key_frames_are_the_middles_of_at_most_six_shots():
    from videdit.preview import pick_key_frames

    assert pick_key_frames([(0, 4), (4, 8)]) == [1, 5]
    assert pick_key_frames([(0, 1)]) == [0]
    many = [(10 * i, 10 * i + 10) for i in range(9)]
    picked = pick_key_frames(many)
    assert len(picked) == 6 and picked[0] == 4 and picked[-1] == 84  # first and last shot kept, spread between
    assert picked == sorted(set(picked))


def test_preview_two_shots_then_another_strength_renders_only(two_shots, tmp_path):
    from PIL import Image

    from videdit.io.reader import VideoReader
    from videdit.preview import run_preview

    models = CountingStandIns()
    first = run_preview(_pipeline(models, [3.0]), two_shots.path, tmp_path / "run", estimate=False)
    assert first.frames == [1, 5] and first.shots == [(0, 4), (4, 8)]  # the middle frame of each shot
    assert first.encoded and type(models).calls > 0
    assert [key for key, _ in first.rows] == ["recon", "age+3"]  # a strength other than the default is in the name
    with Image.open(first.sheet) as sheet:
        width, height = sheet.size
    frame_w, frame_h = two_shots.size
    # two columns of frames (under the 360 px cell, so at their own size) beside the row labels; three rows
    assert 2 * frame_w < width < 3 * frame_w and 3 * frame_h < height < 4 * frame_h
    # the input row holds the source's key frames exactly (PNG, no scaling)
    sheet_pixels = np.asarray(Image.open(first.sheet).convert("RGB"))
    for column, index in enumerate(first.frames):
        [frame] = list(VideoReader(two_shots.path).frames([index]))
        assert _contains(sheet_pixels, frame.image), f"key frame {index} is not on the sheet"

    encoder_calls = type(models).calls
    second = run_preview(_pipeline(models, [-2.0, 4.0]), two_shots.path, tmp_path / "run", estimate=False)
    assert type(models).calls == encoder_calls, "the second preview ran the encoder"
    assert not second.encoded and second.stages["align"] == second.stages["encode"] == "cached"
    assert second.stages["render"] == "ran" and [k for k, _ in second.rows] == ["recon", "age-2", "age+4"]
    with Image.open(second.sheet) as sheet:
        assert sheet.size[1] > height  # one row more
    page = second.page.read_text()
    assert f'src="{layout.PREVIEW_SHEET}"' in page and second.page.parent == second.sheet.parent


def _contains(haystack: np.ndarray, needle: np.ndarray) -> bool:
    """Whether `needle` appears in `haystack` exactly (first row matched, then the whole block)."""
    h, w = needle.shape[:2]
    for y in range(haystack.shape[0] - h + 1):
        row = haystack[y]
        for x in np.flatnonzero((row[: row.shape[0] - w + 1] == needle[0, 0]).all(axis=1)):
            if np.array_equal(haystack[y:y + h, x:x + w], needle):
                return True
    return False


def test_frames_outside_the_video_are_one_line(two_shots, tmp_path):
    from click.testing import CliRunner

    from videdit.cli import cli

    result = CliRunner().invoke(cli, ["preview", str(two_shots.path), "--stand-ins", "--frames", "3,99",
                                      "--out", str(tmp_path / "run"), "--no-estimate"])
    assert result.exit_code != 0
    assert "--frames 99" in str(result.exception) and "0..7" in str(result.exception)


@pytest.mark.slow
def test_preview_cli_json_and_page(two_shots, tmp_path):
    from click.testing import CliRunner

    from videdit.cli import cli

    result = CliRunner().invoke(cli, ["preview", str(two_shots.path), "--stand-ins", "--frames", "6", "--json",
                                      "--out", str(tmp_path / "run"), "--set", "encode.n_iters=1"])
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    assert made["frames"] == [6] and made["encoded"] and made["full_run_seconds"] > 0
    assert (tmp_path / "run" / layout.PREVIEW_DIR / layout.PREVIEW_SHEET).is_file()
    assert "stand-ins" in result.stderr


@pytest.mark.slow
def test_preview_with_faces_edits_every_face_of_the_key_frames(tmp_path):
    """--faces all on the key frames (an image folder, whose tracks are keyed by its content as a video's by its
    file): each face of each key frame is a track of its own, rendered and composited into the sheet's rows."""
    from PIL import Image

    from videdit.models import StandInModels
    from videdit.preview import run_preview
    from videdit.synthetic import FacePlacement, ShotSpec, make_scene_clip

    clip = make_scene_clip(tmp_path / "two.mp4", [
        ShotSpec(4, (FacePlacement("astronaut", 88.0, (80, 96)), FacePlacement("grace_hopper", 88.0, (240, 96)))),
        ShotSpec(4, (FacePlacement("grace_hopper", 100.0, (160, 96)),), background=(150, 120, 90))], size=(320, 192))
    pipe = _pipeline(StandInModels(), [3.0]).derive({"faces.select": "all", "faces.min_track_frames": 1}, quiet=True)
    result = run_preview(pipe, clip.path, tmp_path / "run", estimate=False)
    assert result.frames == [1, 5]
    assert {k for k in result.stages if k.endswith("/render")} == {"t1/render", "t2/render", "t3/render"}
    assert result.stages["composite"] == "ran"
    with Image.open(result.sheet) as sheet:
        assert sheet.size[1] > 3 * 192  # the input, the reconstruction and the edit
