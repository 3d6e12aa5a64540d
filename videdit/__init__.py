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
# OpenMP's threads spin while they wait for each other by default. When other jobs share the cores, a thread
# that spins holds a core its partner needs, and every parallel region waits for the partner's next time slice:
# at load average 6-8 on 2 cores a 64 px synthesis took 0.3-2.7 s per call spinning and 0.03-0.05 s sleeping,
# and the demo 3m15s against 41 s run right after it (docs/benchmarks.md). On an idle machine a sleeping waiter costs a wake-up
# per parallel region (not measured: the development machine is never idle). Set before torch loads its OpenMP
# runtime, so here; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Lazily exported names -> module that defines them.
_LAZY = {
    "load_generator": "videdit.checkpoints",
    "save_generator": "videdit.checkpoints",
    "Pipeline": "videdit.pipeline",
    "styleclip_direction": "videdit.styleclip",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = ["__version__", *_LAZY]
