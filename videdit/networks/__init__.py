"""Networks: StyleGAN3 generator, its StyleGAN2 discriminator, ReStyle encoders.

Names are resolved lazily so importing the package does not import every network (or torch) up front.
"""
from __future__ import annotations

from videdit.lazy import lazy_attributes

_LAZY = {
    "Generator": "videdit.networks.stylegan3",
    "MappingNetwork": "videdit.networks.stylegan3",
    "SynthesisNetwork": "videdit.networks.stylegan3",
    "make_transform": "videdit.networks.stylegan3",
    "Discriminator": "videdit.networks.discriminator",
    "ReStyleEncoder": "videdit.networks.encoders",
    "restyle_invert": "videdit.networks.encoders",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = list(_LAZY)
