"""The "auto" ops mode on CPU: the fused filtered_lrelu kernel only for the shape families where it is
measured faster than the PyTorch path on this machine (decisions kept beside the built extension)."""
from __future__ import annotations

import functools
import json
import logging
import math
import time
from pathlib import Path

import torch

from videdit.fileio import atomic_write_text
from videdit.ops import reference
from videdit.ops.extensions import build_dir
from videdit.ops.kernels import CPU_EXTENSION, cpu_supports, filtered_lrelu_cpu

logger = logging.getLogger("videdit.ops")

class CpuAutoSelect:
    """Chooses, per shape family, between the fused CPU kernel and `torch_path` (the public op's
    PyTorch path, handed in by the caller) by timing both.

    The first call of a family (dtype, factors, filter shapes, log2 of the plane size and of the
    plane count, thread count, whether autograd is recording) runs both implementations a few times
    on its own input and keeps the faster: forward only at inference, forward + backward when the
    call will be differentiated (tuning), since the two paths' backward passes differ more than
    their forwards; the decision is stored in `decisions_path` (beside the built
    extension), so each family is measured once per machine and thread count. Later calls only
    look the decision up.
    """

    REPEATS = 3

    def __init__(self, decisions_path: Path, torch_path):
        self.decisions_path = decisions_path
        self.torch_path = torch_path
        self.decisions: dict[str, dict] = {}
        try:
            self.decisions = json.loads(decisions_path.read_text())
        except (OSError, ValueError):
            pass

    @staticmethod
    def family(x, fu, fd, up, down, grad: bool = False) -> str:
        def shape(f):
            return "none" if f is None else "x".join(str(n) for n in f.shape)

        n, c, h, w = x.shape
        return (f"{str(x.dtype).replace('torch.', '')}|up{up}|down{down}|fu{shape(fu)}|fd{shape(fd)}"
                f"|hw2^{round(math.log2(h * w))}|nc2^{round(math.log2(n * c))}|threads{torch.get_num_threads()}"
                + ("|grad" if grad else ""))

    def filtered_lrelu(self, x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2,
                       clamp=None, flip_filter=False, impl="fast"):
        """videdit.ops.filtered_lrelu by whichever implementation is faster for this shape family."""
        kwargs = dict(fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp,
                      flip_filter=flip_filter)
        if impl != "fast":
            return reference.filtered_lrelu(x, **kwargs)
        if not cpu_supports(x):
            return self.torch_path(x, **kwargs)
        grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, b))
        key = self.family(x, fu, fd, up, down, grad)
        decision = self.decisions.get(key)
        if decision is None:
            decision = self.measure(key, x, kwargs, grad)
        if decision["native"]:
            return filtered_lrelu_cpu(x, **kwargs)
        return self.torch_path(x, **kwargs)

    def measure(self, key: str, x, kwargs, grad: bool = False) -> dict:
        x = x.detach()
        detached = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        if grad:  # what a training step pays: forward, then backward to x and b
            b = detached.get("b")
            kw = dict(detached, b=None if b is None else b.clone().requires_grad_(True))
            xg = x.clone().requires_grad_(True)
            with torch.no_grad():
                grad_out = torch.ones_like(filtered_lrelu_cpu(x, **detached))

            def call(fn):
                def forward_backward():
                    fn(xg, **kw).backward(grad_out)
                    xg.grad = None
                return forward_backward
        else:
            def call(fn):
                return lambda: fn(x, **detached)

        native_s, torch_s = [], []
        with torch.enable_grad() if grad else torch.no_grad():
            for _ in range(self.REPEATS):
                native_s.append(_time_call(call(filtered_lrelu_cpu)))
                torch_s.append(_time_call(call(self.torch_path)))
        decision = {"native": min(native_s) < min(torch_s), "native_s": min(native_s), "torch_s": min(torch_s)}
        self.decisions[key] = decision
        logger.info("ops auto (CPU filtered_lrelu, %s): fused %.4f s, PyTorch %.4f s -> %s", key, min(native_s),
                    min(torch_s), "fused" if decision["native"] else "PyTorch")
        self._save(key, decision)
        return decision

    def _save(self, key: str, decision: dict):
        try:
            on_disk = json.loads(self.decisions_path.read_text()) if self.decisions_path.exists() else {}
        except (OSError, ValueError):
            on_disk = {}
        on_disk[key] = decision
        try:
            atomic_write_text(self.decisions_path, json.dumps(on_disk, indent=1, sort_keys=True))
        except OSError as exc:  # a read-only cache only costs a new measurement next time
            logger.info("could not save %s: %s", self.decisions_path, exc)


def _time_call(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@functools.lru_cache(maxsize=None)
def cpu_auto_selector(torch_path) -> CpuAutoSelect:
    """The selector against `torch_path` (one per process: the public op always hands in the same one)."""
    return CpuAutoSelect(build_dir(CPU_EXTENSION) / "auto_decisions.json", torch_path)

