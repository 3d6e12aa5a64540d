"""videdit: edit faces in real videos with StyleGAN3.

Heavy modules (torch, av, ...) are imported lazily so that `videdit --help` stays fast.
"""
from __future__ import annotations

import os

from videdit.lazy import lazy_attributes

__version__ = "0.1.0"

# MKL picks how it splits a matrix product among threads at run time unless told not to: small products
# (LPIPS at batch 1 in PTI) then differ in the last bits from one run to the next, and Adam magnifies
# that into different tuned weights. Its conditional numerical reproducibility mode keeps the split fixed.
# It must be set before torch loads MKL, so here; a value the user set wins.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

# Lazily exported names -> module that defines them.
_LAZY = {
    "load_generator": "videdit.checkpoints",
    "save_generator": "videdit.checkpoints",
    "Pipeline": "videdit.pipeline",
    "styleclip_direction": "videdit.styleclip",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = ["__version__", *_LAZY]
