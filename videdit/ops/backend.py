"""Which implementation runs an op: the native kernels (videdit.ops.kernels) or the PyTorch path.

    with use_ops("torch"):          # "auto" (default) | "cuda" | "cpp" | "torch"
        img = G.synthesis(ws)

The public ops ask `lookup(op_name, x, torch_path)`; it returns a callable with the op's public
signature, or None for the PyTorch path:

* "torch": always None.
* "cuda":  the CUDA kernels for CUDA tensors (float16/32/64), each shape family self-checked
  against the PyTorch reference at its first call on each GPU (videdit.ops.selfcheck); a family
  that fails runs `torch_path`. None for other tensors.
* "cpp":   the fused C++ kernel for filtered_lrelu on CPU tensors (float32/64); None otherwise.
* "auto":  the CUDA kernels as in "cuda"; on CPU tensors the fused C++ filtered_lrelu, but only for
  the shape families where it measured faster than `torch_path` on this machine (see
  `videdit.ops.cpu_autoselect`). The first such call starts the CPU build in the background and uses
  the PyTorch path until the build is done, so "auto" never waits for a compiler on CPU.

`torch_path` is the op's own PyTorch implementation, handed in by the caller (the public ops pass
theirs), so this module never imports the ops it dispatches. Without it, a failed CUDA family runs
the literal reference and "auto" on CPU gives None.

Whenever a kernel cannot be built or loaded, one warning is logged and the PyTorch path is used.
The mode (videdit.ops.mode) is a context variable (per thread / task); its default comes from the
VIDEDIT_OPS environment variable, else "auto".
"""
from __future__ import annotations

from typing import Callable, Optional

from videdit.ops import cpu_autoselect, kernels, selfcheck
from videdit.ops.mode import ENV_VAR, MODES, check_mode, current_mode, use_ops

__all__ = ["OPS", "MODES", "ENV_VAR", "check_mode", "current_mode", "use_ops", "lookup"]

OPS = ("upfirdn2d", "bias_act", "filtered_lrelu")
# Ops whose CUDA kernels take only [N, C, H, W] tensors.
IMAGE_OPS = ("upfirdn2d", "filtered_lrelu")


def lookup(op_name: str, x, torch_path: Optional[Callable] = None) -> Optional[Callable]:
    """The native implementation of `op_name` for tensor x under the current mode, or None."""
    if op_name not in OPS:
        raise ValueError(f"unknown op {op_name!r}; known: {', '.join(OPS)}")
    mode = current_mode()
    if mode == "torch":
        return None
    if mode in ("auto", "cuda") and kernels.cuda_supports(x):
        if op_name in IMAGE_OPS and x.ndim != 4:
            return None
        if kernels.cuda_module() is None:
            return None
        fallback = torch_path if torch_path is not None else selfcheck.REFERENCES[op_name]
        return selfcheck.CheckedKernel(op_name, kernels.CUDA_OPS[op_name], fallback,
                                       selfcheck.cuda_self_check(x.device))
    if op_name == "filtered_lrelu" and mode in ("auto", "cpp") and kernels.cpu_supports(x):
        if mode == "cpp":
            return kernels.filtered_lrelu_cpu if kernels.cpu_module() is not None else None
        if kernels.cpu_module_if_built() is None or torch_path is None:
            return None
        return cpu_autoselect.cpu_auto_selector(torch_path).filtered_lrelu
    return None
