"""upfirdn2d: upsample (zero insertion), pad, FIR filter, downsample: fast PyTorch version.

The fast path never builds the zero-stuffed tensor and never computes samples a stride would drop:

* upsampling is a transposed convolution with stride `up` (it reads only the real samples);
* downsampling is a strided convolution;
* a 1-D filter runs as two 1-D passes (x, then y), a 2-D filter as one 2-D pass;
* every pass is a depthwise convolution (groups = channels) on a channels-last tensor, the layout
  in which oneDNN's depthwise kernels run at memory speed on CPU.

Asymmetric padding / cropping is folded into the convolution's own (symmetric) padding plus a crop
of the few extra output samples that this computes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from videdit.ops import backend, reference
from videdit.ops._params import check_impl, parse_resample

CHANNELS_LAST = torch.channels_last


@dataclass(frozen=True)
class AxisPlan:
    """One axis: run the conv with `conv_pad` padding, keep samples [start, start+length) with `step`."""

    conv_pad: int
    start: int
    length: int
    step: int


def _plan_strided(length: int, taps: int, down: int, pad0: int, out_len: int) -> AxisPlan:
    """Strided correlation: out[j] = sum_t g[t] x[j*down + t - pad0] from a conv with symmetric padding."""
    conv_pad = pad0 if pad0 >= 0 else pad0 % down  # conv_pad = pad0 (mod down), so outputs stay aligned
    while True:
        shift = (conv_pad - pad0) // down
        conv_len = (length + 2 * conv_pad - taps) // down + 1
        if conv_len >= shift + out_len:
            return AxisPlan(conv_pad=conv_pad, start=shift, length=out_len, step=1)
        conv_pad += down


def _plan_transposed(length: int, taps: int, up: int, down: int, pad0: int, out_len: int) -> AxisPlan:
    """Transposed conv with stride up: full[m] = (zero_stuffed(x) * f)[m]; out[j] = full[j*down + taps-1-pad0]."""
    first = taps - 1 - pad0
    full_len = (length - 1) * up + taps
    last = first + (out_len - 1) * down  # last sample we need
    conv_pad = max(0, min(taps - 1, first, full_len - 1 - last))
    return AxisPlan(conv_pad=conv_pad, start=first - conv_pad, length=(out_len - 1) * down + 1, step=down)


def _take(x, dim: int, plan: AxisPlan):
    """x[start : start+length : step] along dim, with zeros where the range leaves x."""
    size = x.shape[dim]
    lo, hi = plan.start, plan.start + plan.length
    if lo == 0 and hi == size and plan.step == 1:
        return x
    x = x.narrow(dim, max(lo, 0), max(min(hi, size) - max(lo, 0), 0))
    if lo < 0 or hi > size:
        pad = [0, 0, 0, 0]
        pad_idx = 0 if dim == 3 else 2
        pad[pad_idx], pad[pad_idx + 1] = max(-lo, 0), max(hi - size, 0)
        x = F.pad(x, pad)
    if plan.step > 1:
        x = x[:, :, ::plan.step] if dim == 2 else x[:, :, :, ::plan.step]
    return x


def _filter(x, kernel, up, down, pads):
    """Depthwise resampling by one [Ky, Kx] convolution filter (true convolution, not flipped).

    up, down: (y, x) factors; pads: (y0, y1, x0, x1).
    """
    n, c, h, w = x.shape
    ky, kx = kernel.shape
    out_h = (h * up[0] + pads[0] + pads[1] - ky) // down[0] + 1
    out_w = (w * up[1] + pads[2] + pads[3] - kx) // down[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError("upfirdn2d: the padding and filter leave no output samples")
    x = x.contiguous(memory_format=CHANNELS_LAST)
    weight = kernel.to(x.dtype)[None, None].expand(c, 1, ky, kx)
    if up[0] > 1 or up[1] > 1:
        plan_y = _plan_transposed(h, ky, up[0], down[0], pads[0], out_h)
        plan_x = _plan_transposed(w, kx, up[1], down[1], pads[2], out_w)
        y = F.conv_transpose2d(x, weight, stride=tuple(up), padding=(plan_y.conv_pad, plan_x.conv_pad), groups=c)
    else:
        plan_y = _plan_strided(h, ky, down[0], pads[0], out_h)
        plan_x = _plan_strided(w, kx, down[1], pads[2], out_w)
        y = F.conv2d(x, weight.flip([2, 3]), stride=tuple(down), padding=(plan_y.conv_pad, plan_x.conv_pad),
                     groups=c)
    return _take(_take(y, 2, plan_y), 3, plan_x)


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl="fast"):
    """Upsample by `up` (zero insertion), pad/crop by `padding`, convolve with f, keep every `down`-th.

    x: [N, C, H, W]. f: 1-D (separable, applied along x and y, each pass scaled by sqrt(gain)) or 2-D
    [taps_y, taps_x], or None (a single tap). up/down: int or [x, y]; padding: int, [x, y] or
    [x0, x1, y0, y1], negative values crop. flip_filter=True correlates instead of convolving.
    The fast result is channels-last in memory.
    """
    if check_impl(impl) == "ref":
        return reference.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    # CUDA kernel for CUDA tensors, per the --ops mode; it falls back to upfirdn2d_torch where it failed its self-check.
    run = backend.lookup("upfirdn2d", x, torch_path=upfirdn2d_torch) or upfirdn2d_torch
    return run(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def upfirdn2d_torch(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """The PyTorch path of upfirdn2d (impl="fast"), whatever the ops mode."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x of shape [N, C, H, W], got {tuple(x.shape)}")
    rs = parse_resample(up, down, padding)
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    f = f.to(device=x.device, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 1:
        f = f * (gain ** 0.5)
        x = _filter(x, f[None, :], (1, rs.upx), (1, rs.downx), (0, 0, rs.padx0, rs.padx1))
        return _filter(x, f[:, None], (rs.upy, 1), (rs.downy, 1), (rs.pady0, rs.pady1, 0, 0))
    return _filter(x, f * gain, (rs.upy, rs.upx), (rs.downy, rs.downx), (rs.pady0, rs.pady1, rs.padx0, rs.padx1))
