"""Tuning: fitting a generator to one video, one algorithm per module behind one interface.

    base.py         Tuner (the interface), TuneInputs (+ load_tune_inputs), TuneResult
    loop.py         the one optimise / checkpoint / resume / progress / early-stop loop
    data.py         target crops, batch order, tuned-parameter choice, fingerprints, checkpoint files
    pti.py          "pti"          pivotal tuning
    hyperstyle.py   "hyperstyle"   hypernetwork weight offsets per frame
    local_tweak.py  "local-tweak"  Laplacian loss + adversarial local/global terms
    passthrough.py  "none"         the generator unchanged
    stitch.py       stitching tuning (STIT) of the tuned generator to the edited latents
    train_hyperstyle.py  training the hypernetwork HyperStyle uses

The registry below is the one place a tuner name is resolved (the tune stage, the pipeline and the
CLI read it). It names each tuner's module instead of importing it, so reading the names (the CLI's
--tuner choices) does not load torch. Nothing in this package imports a stage.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from videdit.errors import VideditError

if TYPE_CHECKING:
    from videdit.tuning.base import Tuner

PTI = "pti"  # the published method (and the only tuner that reads LPIPS weights files)

# name -> (module, the Tuner instance in it)
TUNERS: dict[str, tuple[str, str]] = {
    PTI: ("videdit.tuning.pti", "PTI_TUNER"),
    "hyperstyle": ("videdit.tuning.hyperstyle", "HYPERSTYLE_TUNER"),
    "local-tweak": ("videdit.tuning.local_tweak", "LOCAL_TWEAK_TUNER"),
    "none": ("videdit.tuning.passthrough", "NO_TUNING"),
}
DEFAULT_TUNER = PTI


class UnknownTunerError(VideditError):
    """A tuner name the registry does not hold."""


def get_tuner(name: str) -> "Tuner":
    """The tuner registered as `name`; one line listing the names for an unknown one."""
    if not isinstance(name, str) or name not in TUNERS:
        raise UnknownTunerError(f"unknown tuner {name!r}: use one of {', '.join(TUNERS)}")
    module, attr = TUNERS[name]
    return getattr(importlib.import_module(module), attr)


__all__ = ["DEFAULT_TUNER", "PTI", "TUNERS", "UnknownTunerError", "get_tuner"]
