"""filtered_lrelu: bias, upsample, leaky ReLU (gain, clamp), downsample: StyleGAN3's nonlinearity.

Fast path:
* the activation gain is folded into the upsampling filter (lrelu(g*x) = g*lrelu(x) for g > 0);
* the up and down passes are videdit.ops.upfirdn2d's polyphase / strided depthwise convolutions;
* without autograd the op runs in horizontal strips of the output, so the 4x-sized upsampled
  intermediate only ever exists one strip at a time (peak memory ~ input + output).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from videdit.ops import reference
from videdit.ops._params import check_impl, filter_taps, parse_resample
from videdit.ops.upfirdn2d import upfirdn2d

# Size of the upsampled intermediate of one strip (bytes); small enough to stay in cache-friendly
# territory, large enough that the filter halo recomputed between strips stays a few percent.
STRIP_BYTES = 48 << 20


def _activate_(x, slope: float, clamp, gain: float = 1.0):
    """In-place leaky ReLU, gain and clamp on a tensor we own."""
    F.leaky_relu_(x, slope)
    if gain != 1:
        x.mul_(gain)
    if clamp is not None and clamp >= 0:
        x.clamp_(-clamp, clamp)
    return x


def _activate(x, slope: float, clamp, gain: float = 1.0):
    x = F.leaky_relu(x, slope)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2,
                   clamp=None, flip_filter=False, impl="fast"):
    """Add b [C], upsample by `up` with fu (gain up^2) using `padding`, lrelu(slope) * gain, clamp to
    +-clamp, then filter with fd and keep every `down`-th sample.

    fu, fd: 1-D (separable) or 2-D filters, or None. padding: int, [x, y] or [x0, x1, y0, y1].
    """
    if check_impl(impl) == "ref":
        return reference.filtered_lrelu(x, fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain,
                                        slope=slope, clamp=clamp, flip_filter=flip_filter)
    rs = parse_resample(up, down, padding)
    if (rs.upx, rs.downx) != (rs.upy, rs.downy):
        raise ValueError("filtered_lrelu takes one up and one down factor for both axes")
    up, down = rs.upx, rs.downx
    gain = float(gain)
    up_gain = up ** 2 * gain if gain > 0 else up ** 2
    post_gain = 1.0 if gain > 0 else gain
    grad_needed = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, b, fu, fd))
    if grad_needed or post_gain != 1.0:
        if b is not None:
            x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
        x = upfirdn2d(x, fu, up=up, padding=padding, gain=up_gain, flip_filter=flip_filter)
        x = _activate(x, slope, clamp, post_gain) if grad_needed else _activate_(x, slope, clamp, post_gain)
        return upfirdn2d(x, fd, down=down, flip_filter=flip_filter)
    return _filtered_lrelu_strips(x, fu, fd, b, up, down, rs, up_gain, slope, clamp, flip_filter)


def _filtered_lrelu_strips(x, fu, fd, b, up, down, rs, up_gain, slope, clamp, flip_filter):
    """The same computation, output rows in strips (no autograd)."""
    n, c, h, w = x.shape
    _, ku = filter_taps(fu)
    _, kd = filter_taps(fd)
    ku_x, _ = filter_taps(fu)
    kd_x, _ = filter_taps(fd)
    tmp_h = h * up + rs.pady0 + rs.pady1 - ku + 1
    tmp_w = w * up + rs.padx0 + rs.padx1 - ku_x + 1
    out_h = (tmp_h - kd) // down + 1
    out_w = (tmp_w - kd_x) // down + 1
    if out_h < 1 or out_w < 1:
        raise ValueError("filtered_lrelu: the padding and filters leave no output samples")
    tmp_rows = max(1, STRIP_BYTES // max(1, n * c * tmp_w * x.element_size()))
    rows = max(1, (tmp_rows - kd) // down + 1)
    if rows >= out_h:
        # One strip: the whole map.
        if b is not None:
            x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
        t = upfirdn2d(x, fu, up=up, padding=[rs.padx0, rs.padx1, rs.pady0, rs.pady1], gain=up_gain,
                      flip_filter=flip_filter)
        return upfirdn2d(_activate_(t, slope, clamp), fd, down=down, flip_filter=flip_filter)
    out = torch.empty([n, c, out_h, out_w], dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    bias = None if b is None else b.to(x.dtype).reshape(1, -1, 1, 1)
    for r0 in range(0, out_h, rows):
        r1 = min(out_h, r0 + rows)
        j0, j1 = r0 * down, (r1 - 1) * down + kd  # upsampled rows this strip needs
        # Input rows those depend on: upsampled row j reads padded row j..j+ku-1 = input (q - pad0) / up.
        i_lo = min(max(0, (j0 - rs.pady0) // up), h - 1)
        i_hi = max(min(h, (j1 + ku - 2 - rs.pady0) // up + 1), i_lo + 1)
        pad0 = rs.pady0 - j0 + i_lo * up
        pad1 = (j1 - j0) - 1 + ku - (i_hi - i_lo) * up - pad0
        xs = x[:, :, i_lo:i_hi]
        xs = xs + bias if bias is not None else xs
        t = upfirdn2d(xs, fu, up=up, padding=[rs.padx0, rs.padx1, pad0, pad1], gain=up_gain,
                      flip_filter=flip_filter)
        out[:, :, r0:r1] = upfirdn2d(_activate_(t, slope, clamp), fd, down=down, flip_filter=flip_filter)
    return out
