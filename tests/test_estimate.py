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
              loss_start=1.0, optimizer_step=0.5, align_start=4.0, decode=0.125, search=0.25, crops=0.125, paste=0.25, video_start=1.0,
              video_frame=0.5)
STAGES = ["align", "encode", "tune", "edit", "render", "composite"]


def test_each_stage_counts_the_passes_its_code_makes():
    settings = _settings(**{"encode.n_iters": 3, "encode.batch_size": 4, "tune.steps": 10, "tune.batch_size": 4})
    seconds = stage_seconds(settings, PROBE, 8, STAGES, 2)
    assert seconds["align"] == 4.0 + 8 * (0.125 + 0.25 + 0.125)  # the backend's start, then decode, search, crops
    # the average image, fit_batch's one-frame probe (3 encoder passes, 2 syntheses), then per frame the same at the batch
    assert seconds["encode"] == 0.5 + (3 * 0.125 + 2 * 0.5) + 8 * (3 * 0.0625 + 2 * 0.25)
    # the loss built once; a micro-batch of 1: four forward + loss + backward per step, and one probe; an update per step
    assert seconds["tune"] == 1.0 + (10 * 4 + 1) * 2.0 + 10 * 0.5
    assert seconds["edit"] == 0.0
    # one synthesis per frame and output, one probe; a video per output and the side-by-side one
    assert seconds["render"] == (8 * 2 + 1) * 0.5 + (2 + 1) * 1.0
    # two videos opened; per frame one decode, and per output a paste and an encoded frame
    assert seconds["composite"] == 2 * 1.0 + 8 * (0.125 + 2 * (0.25 + 0.5))


def test_a_gpu_micro_batch_takes_the_whole_step_and_no_tuner_costs_nothing():
    settings = _settings(**{"tune.steps": 10, "tune.batch_size": 4})
    gpu = Probe(train_step=2.0, micro_batch=4)
    assert stage_seconds(settings, gpu, 8, ["tune"], 2)["tune"] == (10 + 1) * 2.0
    assert stage_seconds(_settings(**{"tune.tuner": "none"}), gpu, 8, ["tune"], 2)["tune"] == 0.0


def test_the_estimate_grows_with_frames_steps_and_outputs():
    settings, more_steps = _settings(**{"tune.steps": 10}), _settings(**{"tune.steps": 20})
    short, long = stage_seconds(settings, PROBE, 8, STAGES, 2), stage_seconds(settings, PROBE, 16, STAGES, 2)
    assert all(long[s] > short[s] for s in ("align", "encode", "render", "composite"))
    assert long["tune"] == short["tune"]  # PTI's cost is steps x batch, whatever the video's length
    assert stage_seconds(more_steps, PROBE, 8, ["tune"], 2)["tune"] > short["tune"]
    three = stage_seconds(settings, PROBE, 8, STAGES, 3)
    assert three["render"] > short["render"] and three["composite"] > short["composite"]
    assert three["encode"] == short["encode"]


def test_a_face_track_is_estimated_for_its_own_frames_and_its_align_searches_no_landmarks():
    settings = _settings()
    estimate = Estimate(seconds=stage_seconds(settings, PROBE, 100, ["render"], 2), probe=PROBE, settings=settings,
                        n_outputs=2)
    assert estimate.for_frames("render", 100) == estimate.seconds["render"]
    assert estimate.for_frames("render", 10) == (10 * 2 + 1) * 0.5 + (2 + 1) * 1.0
    assert estimate.for_frames("render", 10, track=True) == estimate.for_frames("render", 10)
    # a track's align reads the tracker's landmarks: no backend start, no search; a decode and the crops per frame
    assert estimate.for_frames("align", 10, track=True) == 10 * (0.125 + 0.125)
    assert estimate.for_frames("align", 10) == 4.0 + 10 * (0.125 + 0.25 + 0.125)


def test_a_pass_is_timed_by_the_median_of_calls_after_a_warm_up():
    from videdit import estimate as E

    cheap_calls = []
    seconds = E._typical(lambda: cheap_calls.append(1), "cpu")
    assert len(cheap_calls) == 1 + E.PROBE_CALLS  # a warm-up, then every timed call a cheap pass allows
    assert 0 <= seconds < E.PROBE_BUDGET_S

    import time

    costly_calls = []
    E._typical(lambda: (costly_calls.append(1), time.sleep(E.PROBE_BUDGET_S)), "cpu")
    assert len(costly_calls) == 2  # a pass that spends the budget at once is timed once after its warm-up


@pytest.mark.slow
def test_the_probe_times_every_pass_a_pending_stage_needs(tmp_path):
    """A real probe on the stand-in networks and a clip: every pass or job a pending stage needs is timed (> 0),
    no other."""
    from videdit.pipeline import Pipeline, StandInModels
    from videdit.synthetic import make_clip

    clip = make_clip(tmp_path / "face.mp4", n_frames=2, size=(160, 128))
    pipe = Pipeline.from_preset("demo", overrides={"align.crop_size": 32}, quiet=True, device="cpu",
                                models=StandInModels(resolution=32))
    estimate = pipe.estimate(2, ["align", "encode", "tune", "render"], clip.path)
    probe = estimate.probe
    assert min(probe.decode, probe.search, probe.crops, probe.synthesis, probe.encoder, probe.train_step,
               probe.optimizer_step) > 0
    assert all(estimate.seconds[s] > 0 for s in ("align", "encode", "tune", "render"))
    only_render = pipe.estimate(2, ["render"], clip.path).probe
    assert only_render.search == only_render.crops == only_render.encoder == only_render.train_step == 0.0
    assert only_render.paste == 0.0 and min(only_render.synthesis, only_render.video_start) > 0
    only_composite = pipe.estimate(2, ["composite"], clip.path).probe
    assert min(only_composite.decode, only_composite.paste, only_composite.video_frame) > 0
    assert only_composite.search == only_composite.synthesis == 0.0
