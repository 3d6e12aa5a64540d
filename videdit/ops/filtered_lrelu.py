"""filtered_lrelu: bias, upsample, leaky ReLU (gain, clamp), downsample: StyleGAN3's nonlinearity.

Fast path:
* the activation gain is folded into the upsampling filter (lrelu(g*x) = g*lrelu(x) for g > 0);
* the up and down passes are videdit.ops.upfirdn2d's transposed / strided depthwise convolutions;
* the op runs in strips of output rows (and channel groups), so the 4x-sized upsampled
  intermediate only ever exists one strip at a time: without autograd always, with autograd when
  that intermediate would be large (the strips are then recomputed in the backward pass, like
  gradient checkpointing, and only the op's input is kept for backward);
* with autograd, a clamp that does not bite is skipped (same values, no masks to keep).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from videdit.ops import backend, reference
from videdit.ops._params import check_impl, filter_taps, parse_resample
from videdit.ops.upfirdn2d import upfirdn2d

# Upsampled intermediate of one strip (bytes). Below glibc's largest mmap threshold (32 MiB), so
# strip buffers are recycled from the heap instead of being mapped and page-faulted anew each time.
STRIP_BYTES = 16 << 20
# With autograd, intermediates above this size (bytes) switch to recomputed strips: measured about
# as fast as plain autograd on T-256 layers (strips stay in cache), with a fraction of the memory.
CHECKPOINT_BYTES = 64 << 20


@dataclass(frozen=True)
class _Settings:
    fu: object
    fd: object
    up: int
    down: int
    padx0: int
    padx1: int
    pady0: int
    pady1: int
    up_gain: float  # up^2, times the activation gain when that is folded into fu
    post_gain: float  # activation gain applied after the lrelu (1 when folded)
    slope: float
    clamp: object
    flip_filter: bool


def _memory_order(x):
    """x with its dimensions permuted into memory order (a view): reductions over a channels-last
    tensor read it in NCHW order otherwise, ~15x slower on CPU."""
    return x.permute(*sorted(range(x.ndim), key=lambda d: -x.stride(d)))


def _activate(x, s: _Settings, inplace: bool):
    """lrelu(slope) * post_gain, clamped, on a tensor we own (fully in place when autograd is off)."""
    clamp = s.clamp if (s.clamp is not None and s.clamp >= 0) else None
    if inplace:
        F.leaky_relu_(x, s.slope)
        if s.post_gain != 1:
            x.mul_(s.post_gain)
        return x.clamp_(-clamp, clamp) if clamp is not None else x
    # With autograd, the in-place lrelu is still allowed (and saves a full-size temporary): the
    # convolution that produced x does not need its output for backward. Slope must be > 0.
    x = F.leaky_relu_(x, s.slope) if s.slope > 0 else F.leaky_relu(x, s.slope)
    if s.post_gain != 1:
        x = x * s.post_gain
    if clamp is not None:
        lo, hi = torch.aminmax(_memory_order(x.detach()))
        if lo.item() < -clamp or hi.item() > clamp:  # skipping a no-op clamp saves its masks
            x = x.clamp(-clamp, clamp)
    return x


def _forward(x, b, s: _Settings, pady0: int, pady1: int):
    """bias -> up -> activation -> down on x (a whole map or a strip with its own y padding)."""
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    t = upfirdn2d(x, s.fu, up=s.up, padding=[s.padx0, s.padx1, pady0, pady1], gain=s.up_gain,
                  flip_filter=s.flip_filter)
    grad = torch.is_grad_enabled() and t.requires_grad
    return upfirdn2d(_activate(t, s, inplace=not grad), s.fd, down=s.down, flip_filter=s.flip_filter)


def _sizes(x, s: _Settings):
    n, c, h, w = x.shape
    ku_x, ku = filter_taps(s.fu)
    kd_x, kd = filter_taps(s.fd)
    tmp_h = h * s.up + s.pady0 + s.pady1 - ku + 1
    tmp_w = w * s.up + s.padx0 + s.padx1 - ku_x + 1
    out_h = (tmp_h - kd) // s.down + 1
    out_w = (tmp_w - kd_x) // s.down + 1
    if out_h < 1 or out_w < 1:
        raise ValueError("filtered_lrelu: the padding and filters leave no output samples")
    return tmp_h, tmp_w, out_h, out_w, ku, kd


def _strips(x, s: _Settings):
    """Yield (n0, n1, c0, c1, r0, r1, i_lo, i_hi, pad0, pad1): samples n0:n1, output channels c0:c1, rows
    r0:r1 come from input channels c0:c1, rows i_lo:i_hi with y padding pad0, pad1.

    The filters are per channel, so wide maps are also split into channel groups: that keeps each
    strip tall enough for the recomputed filter halo (kd rows per strip) to stay small. Samples are
    grouped only while a whole group fits in one strip; larger maps go one sample at a time, so a batch
    of B costs B single samples (grouping them would make strips B times shorter and the halo B times
    larger: batch 4 measured slower per image than batch 1).
    """
    n, c, h, _ = x.shape
    tmp_h, tmp_w, out_h, _, ku, kd = _sizes(x, s)
    row_bytes = tmp_w * x.element_size()  # one upsampled row of one channel of one sample
    samples = max(1, min(n, STRIP_BYTES // max(1, row_bytes * tmp_h * c)))
    row_bytes *= samples
    want_rows = min(tmp_h, 8 * kd + s.down)
    group = max(1, min(c, STRIP_BYTES // max(1, row_bytes * want_rows)))
    tmp_rows = max(1, STRIP_BYTES // max(1, row_bytes * group))
    rows = max(1, (tmp_rows - kd) // s.down + 1)
    for n0 in range(0, n, samples):
        n1 = min(n, n0 + samples)
        for c0 in range(0, c, group):
            c1 = min(c, c0 + group)
            for r0 in range(0, out_h, rows):
                r1 = min(out_h, r0 + rows)
                j0, j1 = r0 * s.down, (r1 - 1) * s.down + kd  # upsampled rows this strip needs
                # Upsampled row j reads padded rows j..j+ku-1, i.e. input rows (q - pady0) / up.
                i_lo = min(max(0, (j0 - s.pady0) // s.up), h - 1)
                i_hi = max(min(h, (j1 + ku - 2 - s.pady0) // s.up + 1), i_lo + 1)
                pad0 = s.pady0 - j0 + i_lo * s.up
                pad1 = (j1 - j0) - 1 + ku - (i_hi - i_lo) * s.up - pad0
                yield n0, n1, c0, c1, r0, r1, i_lo, i_hi, pad0, pad1


def _forward_strips(x, b, s: _Settings):
    """The whole op, strip by strip, without autograd."""
    n, c, _, _ = x.shape
    _, _, out_h, out_w, _, _ = _sizes(x, s)
    out = None
    for n0, n1, c0, c1, r0, r1, i_lo, i_hi, pad0, pad1 in _strips(x, s):
        y = _forward(x[n0:n1, c0:c1, i_lo:i_hi], None if b is None else b[c0:c1], s, pad0, pad1)
        if n1 - n0 == n and c1 - c0 == c and r1 - r0 == out_h:
            return y
        if out is None:
            # NCHW: the next modulated conv wants it, and transposing strip by strip (in cache) is far
            # cheaper than converting the whole channels-last map afterwards.
            out = torch.empty([n, c, out_h, out_w], dtype=y.dtype, device=y.device)
        out[n0:n1, c0:c1, r0:r1] = y
    return out


class _CheckpointedStrips(torch.autograd.Function):
    """Forward in strips without keeping intermediates; backward recomputes each strip with autograd."""

    @staticmethod
    def forward(ctx, x, b, s: _Settings):
        ctx.settings = s
        ctx.save_for_backward(x, b)
        with torch.no_grad():
            return _forward_strips(x, b, s)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, b = ctx.saved_tensors
        s = ctx.settings
        need_x, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.zeros_like(x, memory_format=torch.channels_last) if need_x else None
        grad_b = torch.zeros_like(b) if need_b else None
        for n0, n1, c0, c1, r0, r1, i_lo, i_hi, pad0, pad1 in _strips(x, s):
            xs = x[n0:n1, c0:c1, i_lo:i_hi].detach().requires_grad_(need_x)
            bs = None if b is None else b[c0:c1].detach().requires_grad_(need_b)
            with torch.enable_grad():
                ys = _forward(xs, bs, s, pad0, pad1)
                inputs = [t for t, need in ((xs, need_x), (bs, need_b)) if need]
                grads = list(torch.autograd.grad(ys, inputs, grad_out[n0:n1, c0:c1, r0:r1]))
            if need_x:
                grad_x[n0:n1, c0:c1, i_lo:i_hi] += grads.pop(0)
            if need_b:
                grad_b[c0:c1] += grads.pop(0)
        return grad_x, grad_b, None


def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2,
                   clamp=None, flip_filter=False, impl="fast"):
    """Add b [C], upsample by `up` with fu (gain up^2) using `padding`, lrelu(slope) * gain, clamp to
    +-clamp, then filter with fd and keep every `down`-th sample.

    fu, fd: 1-D (separable) or 2-D filters, or None. padding: int, [x, y] or [x0, x1, y0, y1].
    Differentiable w.r.t. x and b (and, on the unstripped path, the filters).
    """
    if check_impl(impl) == "ref":
        return reference.filtered_lrelu(x, fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain,
                                        slope=slope, clamp=clamp, flip_filter=flip_filter)
    # Fused C++ (CPU) or CUDA kernel, per the --ops mode. filtered_lrelu_torch is what "auto" times the
    # CPU kernel against, and what a CUDA kernel that failed its self-check falls back to.
    run = backend.lookup("filtered_lrelu", x, torch_path=filtered_lrelu_torch) or filtered_lrelu_torch
    return run(x, fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp,
               flip_filter=flip_filter)


def filtered_lrelu_torch(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2,
                         clamp=None, flip_filter=False):
    """The PyTorch path of filtered_lrelu (impl="fast"), whatever the ops mode."""
    rs = parse_resample(up, down, padding)
    if (rs.upx, rs.downx) != (rs.upy, rs.downy):
        raise ValueError("filtered_lrelu takes one up and one down factor for both axes")
    gain = float(gain)
    fold = gain > 0
    s = _Settings(fu=fu, fd=fd, up=rs.upx, down=rs.downx, padx0=rs.padx0, padx1=rs.padx1, pady0=rs.pady0,
                  pady1=rs.pady1, up_gain=rs.upx ** 2 * (gain if fold else 1.0),
                  post_gain=1.0 if fold else gain, slope=float(slope), clamp=clamp, flip_filter=flip_filter)
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, b, fu, fd))
    if not grad:
        return _forward_strips(x, b, s)
    filters_need_grad = any(t is not None and t.requires_grad for t in (fu, fd))
    tmp_h, tmp_w, _, _, _, _ = _sizes(x, s)
    tmp_bytes = x.shape[0] * x.shape[1] * tmp_h * tmp_w * x.element_size()
    if tmp_bytes > CHECKPOINT_BYTES and not filters_need_grad:
        return _CheckpointedStrips.apply(x, b, s)
    return _forward(x, b, s, s.pady0, s.pady1)
