"""Networks: StyleGAN3 generator, its StyleGAN2 discriminator, ReStyle encoders.

Names are resolved lazily so importing the package does not import every network (or torch) up front.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "Generator": "videdit.networks.stylegan3",
    "MappingNetwork": "videdit.networks.stylegan3",
    "SynthesisNetwork": "videdit.networks.stylegan3",
    "make_transform": "videdit.networks.stylegan3",
    "Discriminator": "videdit.networks.discriminator",
    "ReStyleEncoder": "videdit.networks.encoders",
    "restyle_invert": "videdit.networks.encoders",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'videdit.networks' has no attribute {name!r}")


__all__ = list(_LAZY)
