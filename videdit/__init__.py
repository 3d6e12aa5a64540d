"""videdit: edit faces in real videos with StyleGAN3.

Heavy modules (torch, av, ...) are imported lazily so that `videdit --help` stays fast.
"""
from __future__ import annotations

__version__ = "0.1.0"

# Lazily exported names -> module that defines them.
_LAZY = {
    "load_generator": "videdit.checkpoints",
    "save_generator": "videdit.checkpoints",
    "Pipeline": "videdit.pipeline",
    "styleclip_direction": "videdit.styleclip",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'videdit' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
