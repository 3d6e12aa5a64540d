"""What `videdit demo` says was real comes from the run's own records: the landmark backend align used
(align/align.json) and whether composite copied the source's audio (composite/composite.json)."""
from __future__ import annotations

import pytest
from PIL import Image

from videdit import records


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """The same 3 frames with and without audio."""
    from videdit.synthetic import make_clip

    root = tmp_path_factory.mktemp("demo_report")
    return {audio: make_clip(root / f"clip_{audio}.mp4", n_frames=3, size=(224, 192), audio=audio).path
            for audio in (True, False)}


def _renamed_dlib():
    """dlib's backend under a name no default spells, so the report can only have it from the run."""
    from videdit.face.landmarks import make_backend

    backend = make_backend("dlib")
    backend.name = "dlib, renamed by the test"
    return backend


def test_demo_reports_the_backend_and_the_audio_of_the_run(clips, tmp_path):
    from videdit.demo import what_ran
    from videdit.stages.align import AlignSettings, run_align
    from videdit.stages.composite import run_composite

    run_dir = tmp_path / "run"
    folder = records.RunFolder(run_dir)
    align = run_align(clips[False], folder.align, AlignSettings(crop_size=64, aligned_size=64, preview=False),
                      backend=_renamed_dlib())
    # Renders: the input crops themselves (what composite pastes back does not matter here).
    for i in range(align.n_frames):
        with Image.open(folder.unaligned_frames / records.frame_name(i)) as crop:
            (folder.render / "recon").mkdir(parents=True, exist_ok=True)
            crop.save(folder.render / "recon" / records.frame_name(i))
    records.RenderInfo(resolution=64, keys=["recon"], num_frames=align.n_frames).save(folder.render)

    landmarks, outputs = what_ran(run_dir)
    assert landmarks == "landmarks: dlib, renamed by the test"
    assert "audio not recorded" in outputs  # no composite yet: nothing claimed
    for audio, said in ((False, "no audio (the source has none)"), (True, "the source audio copied")):
        run_composite(clips[audio], folder.align, folder.render, ["recon"], folder.stage("composite"))
        assert records.CompositeInfo.load(folder.stage("composite")).audio_copied is audio
        assert what_ran(run_dir)[1].endswith(f"output video with {said}")
    assert set(records.CompositeInfo.load(folder.stage("composite")).seam_factor) == {"recon"}  # the demo prints these
