"""Stage `tune`: fit the generator to the video with the tuner the settings name.

A thin stage over `videdit.tuning`: the tuner comes from the registry (`get_tuner`: pti, hyperstyle,
local-tweak, none), its inputs from the align folder and encode/latents.npy (`load_tune_inputs`),
and it writes tune/generator.safetensors (HyperStyle also tune/offsets.safetensors), tune/checkpoints/
and its JSON record. The algorithms, the shared loop and their settings live in videdit/tuning/.
"""
from __future__ import annotations

from os import PathLike
from typing import Any

from videdit.tuning import DEFAULT_TUNER, get_tuner

__all__ = ["run_tune", "tune_stage_params"]


def run_tune(align_dir: str | PathLike, latents_path: str | PathLike, generator, out_dir: str | PathLike,
             settings=None, *, tuner: str = DEFAULT_TUNER, **kwargs):
    """Run tuner `tuner` (settings: its settings_class; None = defaults) -> videdit.tuning.base.TuneResult.

    kwargs go to the tuner: on_step (pti), hypernetwork (hyperstyle), discriminator (local-tweak).
    """
    return get_tuner(tuner).run(align_dir, latents_path, generator, out_dir, settings, **kwargs)


def tune_stage_params(tuner: str, settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """(cache params, extra input files digested by content) of the tune stage for this tuner and settings."""
    impl = get_tuner(tuner)
    return dict(impl.cache_params(settings), tuner=tuner), impl.input_files(settings)
