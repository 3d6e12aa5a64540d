"""The up-front estimate: the passes each stage makes, times one pass of each kind as the probe timed it."""
from __future__ import annotations

import pytest

from videdit.estimate import Estimate, Probe, stage_seconds
from videdit.settings import resolve_settings
from videdit import presets


def _settings(**overrides):
    return resolve_settings(presets.apply_overrides(presets.load_preset("default"), overrides))


# Powers of two: every sum and product below is exact in binary floating point.
PROBE = Probe(synthesis=0.5, synthesis_encode=0.25, encoder_1=0.125, encoder=0.0625, train_step=2.0, micro_batch=1,
              align_start=4.0, align_frame=0.5)


def test_each_stage_counts_the_passes_its_code_makes():
    settings = _settings(**{"encode.n_iters": 3, "encode.batch_size": 4, "tune.steps": 10, "tune.batch_size": 4})
    seconds = stage_seconds(settings, PROBE, 8, ["align", "encode", "tune", "edit", "render"], 2)
    assert seconds["align"] == 4.0 + 8 * 0.5  # the backend's start, then each frame
    # the average image, fit_batch's one-frame probe (3 encoder passes, 2 syntheses), then per frame the same at the batch
    assert seconds["encode"] == 0.5 + (3 * 0.125 + 2 * 0.5) + 8 * (3 * 0.0625 + 2 * 0.25)
    assert seconds["tune"] == (10 * 4 + 1) * 2.0  # a micro-batch of 1: four forward + backward per step, one probe
    assert seconds["edit"] == 0.0
    assert seconds["render"] == (8 * 2 + 1) * 0.5  # one synthesis per frame and output, one probe


def test_a_gpu_micro_batch_takes_the_whole_step_and_no_tuner_costs_nothing():
    settings = _settings(**{"tune.steps": 10, "tune.batch_size": 4})
    gpu = Probe(train_step=2.0, micro_batch=4)
    assert stage_seconds(settings, gpu, 8, ["tune"], 2)["tune"] == (10 + 1) * 2.0
    assert stage_seconds(_settings(**{"tune.tuner": "none"}), gpu, 8, ["tune"], 2)["tune"] == 0.0


def test_a_face_track_is_estimated_for_its_own_frames():
    settings = _settings()
    estimate = Estimate(seconds=stage_seconds(settings, PROBE, 100, ["render"], 2), probe=PROBE, settings=settings,
                        n_outputs=2)
    assert estimate.for_frames("render", 100) == estimate.seconds["render"]
    assert estimate.for_frames("render", 10) == (10 * 2 + 1) * 0.5


@pytest.mark.slow
def test_the_probe_times_every_pass_a_pending_stage_needs(tmp_path):
    """A real probe on the stand-in networks: every pass kind a pending stage needs is timed (> 0), no other."""
    from videdit.pipeline import Pipeline, StandInModels
    from videdit.synthetic import make_clip

    clip = make_clip(tmp_path / "face.mp4", n_frames=2, size=(160, 128))
    pipe = Pipeline.from_preset("demo", overrides={"align.crop_size": 32}, quiet=True, device="cpu",
                                models=StandInModels(resolution=32))
    estimate = pipe.estimate(2, ["align", "encode", "tune", "render"], clip.path)
    probe = estimate.probe
    assert min(probe.align_frame, probe.synthesis, probe.encoder, probe.train_step) > 0
    assert all(estimate.seconds[s] > 0 for s in ("align", "encode", "tune", "render"))
    only_render = pipe.estimate(2, ["render"], clip.path).probe
    assert only_render.align_frame == only_render.encoder == only_render.train_step == 0.0
