"""The native kernels, called with the public ops' signatures: the two extensions and their autograd wrappers.

* the CPU extension: a fused filtered_lrelu (OpenMP) plus test entry points that run the CUDA kernels'
  per-sample code on the CPU;
* the CUDA extension: upfirdn2d, bias_act and filtered_lrelu kernels, forward and backward.

Both are built by `videdit.ops.extensions` at first use. Every public callable here takes exactly the
signature of the matching public op in `videdit.ops` and runs the literal reference op
(`videdit.ops.reference`) for the calls its kernel does not take (other dtypes or devices,
impl='ref', or an extension that cannot be built). Which implementation serves a call is decided by
`videdit.ops.backend`; CUDA kernels serve only the shape families that passed their self-check
(`videdit.ops.selfcheck`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from videdit.ops import reference
from videdit.ops._params import Resample2d, filter_taps, parse_resample
from videdit.ops.extensions import ExtensionSpec, load_if_built, load_or_none

CPU_EXTENSION = ExtensionSpec("videdit_native_cpu", ("filtered_lrelu_cpu.cpp",), cuda=False)
CUDA_EXTENSION = ExtensionSpec("videdit_native_cuda",
                               ("cuda_ops.cpp", "upfirdn2d.cu", "bias_act.cu", "filtered_lrelu.cu"), cuda=True)

# bias_act activation names -> the ids of `enum Activation` in csrc/resample.h.
ACTIVATION_IDS = {"linear": 0, "relu": 1, "lrelu": 2, "tanh": 3, "sigmoid": 4, "elu": 5, "selu": 6,
                  "softplus": 7, "swish": 8}


def cpu_module():
    """The CPU extension, or None (after one warning) when it cannot be built or loaded."""
    return load_or_none(CPU_EXTENSION)


def cpu_module_if_built():
    """The CPU extension if it is already built; when missing, its build starts in the background and
    this returns None (the PyTorch path runs meanwhile)."""
    return load_if_built(CPU_EXTENSION)


def cuda_module():
    """The CUDA extension, or None (after one warning); None without nvcc / a CUDA build of torch."""
    if torch.version.cuda is None:
        return None
    return load_or_none(CUDA_EXTENSION)


def cpu_supports(x) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.ndim == 4


def cuda_supports(x) -> bool:
    return x.is_cuda and x.dtype in (torch.float16, torch.float32, torch.float64)


# ----------------------------------------------------------------------------------------------
# Arguments as the kernels take them


def correlation_taps(f, flip_filter: bool, gain: float, dtype, device):
    """The taps the kernels correlate with: f flipped unless flip_filter, with the gain applied
    (sqrt(gain) per axis for a 1-D separable filter). None becomes a single tap."""
    if f is None:
        f = torch.ones([1], dtype=torch.float32)
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    f = f.to(device=device, dtype=dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.contiguous()


def flipped(f):
    """The taps of the transposed op."""
    return f.flip(list(range(f.ndim))).contiguous()


def _accumulator_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def upfirdn2d_out_size(x, taps, rs: Resample2d) -> tuple[int, int]:
    """(out_w, out_h) of upfirdn2d on x with correlation `taps`; a ValueError when nothing is left."""
    out_w, out_h = rs.out_size(x.shape[3], x.shape[2], *filter_taps(taps))
    if out_w < 1 or out_h < 1:
        raise ValueError("upfirdn2d: the padding and filter leave no output samples")
    return out_w, out_h


@dataclass(frozen=True)
class FusedPlan:
    """Sizes and factors of one filtered_lrelu call, in the kernels' terms."""

    up: int
    down: int
    padx0: int
    pady0: int
    mid_h: int
    mid_w: int
    out_h: int
    out_w: int
    gain: float
    slope: float
    clamp: float  # < 0: no clamp


def plan_filtered_lrelu(x, fu, fd, up, down, padding, gain, slope, clamp) -> FusedPlan:
    """fu, fd: correlation taps (see correlation_taps)."""
    rs = parse_resample(up, down, padding)
    if (rs.upx, rs.downx) != (rs.upy, rs.downy):
        raise ValueError("filtered_lrelu takes one up and one down factor for both axes")
    fu_w, fu_h = filter_taps(fu)
    fd_w, fd_h = filter_taps(fd)
    mid_w = x.shape[3] * rs.upx + rs.padx0 + rs.padx1 - fu_w + 1
    mid_h = x.shape[2] * rs.upy + rs.pady0 + rs.pady1 - fu_h + 1
    out_w = (mid_w - fd_w) // rs.downx + 1
    out_h = (mid_h - fd_h) // rs.downy + 1
    if min(mid_w, mid_h, out_w, out_h) < 1:
        raise ValueError("filtered_lrelu: the padding and filters leave no output samples")
    clamp = -1.0 if clamp is None or clamp < 0 else float(clamp)
    return FusedPlan(rs.upx, rs.downx, rs.padx0, rs.pady0, mid_h, mid_w, out_h, out_w, float(gain), float(slope),
                     clamp)


def prepare_fused(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter, acc_dtype):
    """(x, b, fu, fd, plan) as the kernels take them: contiguous, correlation taps in acc_dtype."""
    rs = parse_resample(up, down, padding)
    fu_taps = correlation_taps(fu, flip_filter, rs.upx ** 2, acc_dtype, x.device)
    fd_taps = correlation_taps(fd, flip_filter, 1, acc_dtype, x.device)
    plan = plan_filtered_lrelu(x, fu_taps, fd_taps, up, down, padding, gain, slope, clamp)
    if b is None:
        b = torch.zeros([x.shape[1]], dtype=acc_dtype, device=x.device)
    if b.shape != (x.shape[1],):
        raise ValueError(f"b must have shape [{x.shape[1]}], got {tuple(b.shape)}")
    return x.contiguous(), b.to(acc_dtype).contiguous(), fu_taps, fd_taps, plan


# ----------------------------------------------------------------------------------------------
# filtered_lrelu: one fused wrapper for both extensions (they export the same entry points' arguments)


class _FusedFilteredLrelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, fu, fd, plan: FusedPlan, forward_kernel, backward_kernel):
        ctx.save_for_backward(x, b, fu, fd)
        ctx.plan = plan
        ctx.backward_kernel = backward_kernel
        return forward_kernel(x, b, fu, fd, plan.up, plan.down, plan.padx0, plan.pady0, plan.mid_h, plan.mid_w,
                              plan.out_h, plan.out_w, plan.gain, plan.slope, plan.clamp)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, b, fu, fd = ctx.saved_tensors
        plan = ctx.plan
        dx = ctx.backward_kernel(dy.contiguous(), x, b, fu, fd, flipped(fu), flipped(fd), plan.up, plan.down,
                                 plan.padx0, plan.pady0, plan.mid_h, plan.mid_w, plan.gain, plan.slope, plan.clamp)
        db = dx.to(b.dtype).sum(dim=[0, 2, 3]) if ctx.needs_input_grad[1] else None
        return dx, db, None, None, None, None, None


def filtered_lrelu_cpu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2,
                       clamp=None, flip_filter=False, impl="fast"):
    """filtered_lrelu by the fused C++ CPU kernel (same signature and result as videdit.ops.filtered_lrelu)."""
    module = cpu_module() if impl == "fast" and cpu_supports(x) else None
    if module is None:
        return reference.filtered_lrelu(x, fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain,
                                        slope=slope, clamp=clamp, flip_filter=flip_filter)
    prepared = prepare_fused(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter, x.dtype)
    return _FusedFilteredLrelu.apply(*prepared, module.filtered_lrelu_forward, module.filtered_lrelu_backward)


def filtered_lrelu_cuda(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2,
                        clamp=None, flip_filter=False, impl="fast"):
    """filtered_lrelu by the fused CUDA kernel (same signature and result as videdit.ops.filtered_lrelu)."""
    module = cuda_module() if impl == "fast" and cuda_supports(x) and x.ndim == 4 else None
    if module is None:
        return reference.filtered_lrelu(x, fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain,
                                        slope=slope, clamp=clamp, flip_filter=flip_filter)
    prepared = prepare_fused(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter,
                             _accumulator_dtype(x.dtype))
    return _FusedFilteredLrelu.apply(*prepared, module.filtered_lrelu, module.filtered_lrelu_backward)


# ----------------------------------------------------------------------------------------------
# CUDA: upfirdn2d, bias_act


class _Upfirdn2dCUDA(torch.autograd.Function):
    """Differentiable any number of times: the gradient is an upfirdn2d with the flipped taps."""

    @staticmethod
    def forward(ctx, x, taps, rs: Resample2d):
        out_w, out_h = upfirdn2d_out_size(x, taps, rs)
        ctx.save_for_backward(taps)
        ctx.rs, ctx.in_size = rs, (x.shape[3], x.shape[2])
        return cuda_module().upfirdn2d(x.contiguous(), taps, rs.upx, rs.upy, rs.downx, rs.downy, rs.padx0,
                                       rs.pady0, out_h, out_w)

    @staticmethod
    def backward(ctx, dy):
        (taps,) = ctx.saved_tensors
        dx = _Upfirdn2dCUDA.apply(dy, flipped(taps), ctx.rs.transposed(*ctx.in_size, *filter_taps(taps)))
        return dx, None, None


def upfirdn2d_cuda(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl="fast"):
    """upfirdn2d by the CUDA kernel (same signature and result as videdit.ops.upfirdn2d)."""
    if impl != "fast" or not cuda_supports(x) or x.ndim != 4 or cuda_module() is None:
        return reference.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    taps = correlation_taps(f, flip_filter, gain, _accumulator_dtype(x.dtype), x.device)
    rs = parse_resample(up, down, padding)
    upfirdn2d_out_size(x, taps, rs)  # the error now, not inside autograd
    return _Upfirdn2dCUDA.apply(x, taps, rs)


class _BiasActCUDA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, act_id, alpha, gain, clamp, inner):
        ctx.save_for_backward(x, b)
        ctx.params = (act_id, alpha, gain, clamp, inner)
        return cuda_module().bias_act(x, b, act_id, alpha, gain, clamp, inner)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, b = ctx.saved_tensors
        act_id, alpha, gain, clamp, inner = ctx.params
        dx = cuda_module().bias_act_backward(dy.contiguous(), x, b, act_id, alpha, gain, clamp, inner)
        db = None
        if ctx.needs_input_grad[1] and b.numel() > 0:
            channels = b.shape[0]
            db = dx.reshape(-1, channels, inner).to(b.dtype).sum(dim=[0, 2])
        return dx, db, None, None, None, None, None


def bias_act_cuda(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None, impl="fast"):
    """bias_act by the CUDA kernel (same signature and result as videdit.ops.bias_act)."""
    if impl != "fast" or not cuda_supports(x) or cuda_module() is None:
        return reference.bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    _, alpha, gain = reference.resolve_activation(act, alpha, gain)
    dim = dim % x.ndim if x.ndim else 0
    inner = math.prod(x.shape[dim + 1:])
    acc = _accumulator_dtype(x.dtype)
    if b is None:
        b = torch.zeros([0], dtype=acc, device=x.device)
    elif b.shape != (x.shape[dim],):
        raise ValueError(f"b must have shape [{x.shape[dim]}], got {tuple(b.shape)}")
    clamp = -1.0 if clamp is None or clamp < 0 else float(clamp)
    return _BiasActCUDA.apply(x.contiguous(), b.to(acc).contiguous(), ACTIVATION_IDS[act], alpha, gain, clamp,
                              inner)


CUDA_OPS = {"upfirdn2d": upfirdn2d_cuda, "bias_act": bias_act_cuda, "filtered_lrelu": filtered_lrelu_cuda}
