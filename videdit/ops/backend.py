"""Which implementation runs an op: the native kernels (videdit.ops.native) or the PyTorch path.

    with use_ops("torch"):          # "auto" (default) | "cuda" | "cpp" | "torch"
        img = G.synthesis(ws)

The public ops ask `lookup(op_name, x)`; it returns a callable with the op's public signature, or
None for the PyTorch path:

* "torch": always None.
* "cuda":  the CUDA kernels for CUDA tensors (float16/32/64); None for other tensors.
* "cpp":   the fused C++ kernel for filtered_lrelu on CPU tensors (float32/64); None otherwise.
* "auto":  CUDA kernels on CUDA tensors; on CPU tensors the fused C++ filtered_lrelu, but only for
  the shape families where it measured faster than the PyTorch path on this machine (see
  `native.CpuAutoSelect`). The first such call starts the CPU build in the background and uses
  the PyTorch path until the build is done, so "auto" never waits for a compiler on CPU.

Whenever a kernel cannot be built or loaded, one warning is logged and the PyTorch path is used.
The mode is a context variable (per thread / task); its default comes from the VIDEDIT_OPS
environment variable, else "auto".
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Optional

MODES = ("auto", "cuda", "cpp", "torch")
OPS = ("upfirdn2d", "bias_act", "filtered_lrelu")
ENV_VAR = "VIDEDIT_OPS"

_mode: ContextVar[Optional[str]] = ContextVar("videdit_ops_mode", default=None)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"ops mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def current_mode() -> str:
    """The mode in effect: the innermost use_ops(), else $VIDEDIT_OPS, else 'auto'."""
    mode = _mode.get()
    if mode is None:
        mode = os.environ.get(ENV_VAR) or "auto"
        if mode not in MODES:  # a bad environment value must not break every op
            mode = "auto"
    return mode


@contextmanager
def use_ops(mode: str):
    """Select the op implementations for the code inside the block."""
    token = _mode.set(check_mode(mode))
    try:
        yield
    finally:
        _mode.reset(token)


def lookup(op_name: str, x) -> Optional[Callable]:
    """The native implementation of `op_name` for tensor x under the current mode, or None."""
    if op_name not in OPS:
        raise ValueError(f"unknown op {op_name!r}; known: {', '.join(OPS)}")
    mode = current_mode()
    if mode == "torch":
        return None
    device = getattr(getattr(x, "device", None), "type", None)
    if device == "cuda" and mode in ("auto", "cuda"):
        from videdit.ops import native

        if not native.cuda_supports(x) or native.cuda_module() is None:
            return None
        return native.CUDA_OPS[op_name]
    if device == "cpu" and op_name == "filtered_lrelu" and mode in ("auto", "cpp"):
        from videdit.ops import native

        if not native.cpu_supports(x):
            return None
        if mode == "cpp":
            return native.filtered_lrelu_cpu if native.cpu_module() is not None else None
        if native.cpu_module_if_built() is None:
            return None
        return native.cpu_auto_selector().filtered_lrelu
    return None
