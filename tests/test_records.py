"""The run folder's small JSON records (videdit.records): round trips, files of older versions, one-line errors."""
from __future__ import annotations

import json

import pytest

from videdit import layout, records
from videdit.errors import InputError


def _composite(**changes) -> records.CompositeInfo:
    values = dict(n_frames=3, n_composited=2, size=[64, 48], resolution=32, expand=[0, 0, 0, 0], keys=["recon"],
                  tracks=1, seam_factor={"recon": 1.02}, seam_frames={"recon": 1}, settings={"mask": "box"},
                  audio_copied=False)
    return records.CompositeInfo(**dict(values, **changes))


def test_records_round_trip_and_keep_their_file_names(tmp_path):
    saved = {
        layout.ALIGN_INFO: records.AlignInfo("dlib", 3, 2, 1, 0),
        layout.COMPOSITE_INFO: _composite(),
        layout.RENDER_INFO: records.RenderInfo(num_frames=3, fps="25", resolution=32, expand=[4, 0, 0, 2],
                                                keys=["recon", "age"]),
        layout.SMOOTH_INFO: records.SmoothInfo(3, [1 / 12, 3 / 12, 4 / 12, 3 / 12, 1 / 12], "reflect", 9, ["recon"]),
        layout.STITCH_INFO: records.StitchInfo(["recon"], {"steps": 2}, 2, {"recon": "generator_recon.safetensors"}),
    }
    for name, record in saved.items():
        assert record.save(tmp_path) == tmp_path / name
        assert type(record).load(tmp_path) == record  # exact: JSON keeps these ints, strings and float64s
    assert records.AlignInfo.load(tmp_path / "nothing here") is None  # absent: the stage has not run
    records.TuneNotes({"steps_done": 4, "losses": [0.5, 0.25]}, layout.TUNE_INFO).save(tmp_path)
    notes = records.TuneNotes.load(tmp_path)
    assert (notes.file, notes.values) == (layout.TUNE_INFO, {"steps_done": 4, "losses": [0.5, 0.25]})


def test_records_of_older_versions_and_damaged_ones(tmp_path):
    old = _composite().to_json()
    del old["audio_copied"]  # composite.json as videdit wrote it before it recorded the audio
    (tmp_path / layout.COMPOSITE_INFO).write_text(json.dumps(old))
    assert records.CompositeInfo.load(tmp_path).audio_copied is None
    (tmp_path / layout.ALIGN_INFO).write_text(json.dumps({"backend": "dlib"}))
    (tmp_path / layout.RENDER_INFO).write_text(json.dumps({"resolution": "big", "expand": [0, 0]}))
    (tmp_path / layout.SMOOTH_INFO).write_text("[1, 2")
    for cls, words in ((records.AlignInfo, "lacks n_frames"), (records.RenderInfo, "not a render description"),
                       (records.SmoothInfo, "not readable JSON")):
        with pytest.raises(InputError, match=words) as err:
            cls.load(tmp_path)
        assert "\n" not in str(err.value)
