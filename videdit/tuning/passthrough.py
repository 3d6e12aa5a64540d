"""Tuner "none": the generator as it is (render from the encoder's inversion alone)."""
from __future__ import annotations

import time
from pathlib import Path

from videdit.tuning.base import TuneInputs, TuneResult, Tuner, elapsed, write_generator
from videdit.tuning.pti import TuneSettings


class NoTuning(Tuner):
    """Reads the [tune] section (so a preset that switches PTI off keeps its PTI keys) and ignores it:
    no setting changes the result, so none is in the cache key."""

    name = "none"
    settings_class = TuneSettings
    section = "tune"

    def cache_params(self, settings) -> dict:
        return {}

    def tune(self, inputs: TuneInputs, out_dir: Path, settings=None) -> TuneResult:
        t_start = time.perf_counter()
        generator_path = write_generator(inputs.generator, out_dir)
        return TuneResult(generator_path=generator_path, num_frames=inputs.num_frames, seconds=elapsed(t_start))


NO_TUNING = NoTuning()
