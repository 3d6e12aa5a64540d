"""upfirdn2d: upsample (zero insertion), pad, FIR filter, downsample: fast PyTorch version.

The fast path never builds the zero-stuffed tensor and never computes samples a stride would drop:

* upsampling by `up` along an axis is done as `up` polyphase sub-filters run on the original samples
  (one convolution with `up` output channels), whose outputs are interleaved;
* downsampling is a strided convolution;
* a 1-D filter runs as two 1-D passes (x, then y), a 2-D filter as one 2-D pass.

Every channel is filtered the same way, so channels are folded into the batch dimension and each
convolution has a single input channel.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from videdit.ops import reference
from videdit.ops._params import check_impl, parse_resample


@dataclass(frozen=True)
class AxisPlan:
    """How one axis is resampled: out[j] = sum_t g[t] * xp[j*down + t], xp = padded zero-stuffed x.

    The polyphase form runs `phases` sub-filters of `taps` taps with `stride` on x[offset:], giving
    `count` samples per phase; the interleaved result is cut to `full_len` and strided by
    `post_stride` (only when up and down are both > 1 on this axis).
    """

    phases: int
    taps: int
    offset: int
    count: int
    stride: int
    post_stride: int
    full_len: int
    out_len: int
    placement: tuple  # per phase: tuple of (window index, filter tap index)

    def input_span(self) -> int:
        return (self.count - 1) * self.stride + self.taps


def plan_axis(length: int, taps: int, up: int, down: int, pad0: int, pad1: int) -> AxisPlan:
    out_len = (length * up + pad0 + pad1 - taps) // down + 1
    if out_len < 1:
        raise ValueError("upfirdn2d: the padding and filter leave no output samples")
    if up == 1:
        return AxisPlan(phases=1, taps=taps, offset=-pad0, count=out_len, stride=down, post_stride=1,
                        full_len=out_len, out_len=out_len,
                        placement=(tuple((t, t) for t in range(taps)),))
    full_len = (out_len - 1) * down + 1
    first_tap = [(pad0 - r) % up for r in range(up)]
    starts = [(r + t0 - pad0) // up for r, t0 in enumerate(first_tap)]
    counts = [len(range(t0, taps, up)) for t0 in first_tap]
    live = [r for r in range(up) if counts[r] > 0]
    lo = min(starts[r] for r in live)
    hi = max(starts[r] + counts[r] for r in live)
    placement = []
    for r in range(up):
        placement.append(tuple((starts[r] - lo + s, first_tap[r] + up * s) for s in range(counts[r])))
    return AxisPlan(phases=up, taps=hi - lo, offset=lo, count=-(-full_len // up), stride=1,
                    post_stride=down, full_len=full_len, out_len=out_len, placement=tuple(placement))


def phase_filters(g, plan: AxisPlan):
    """[phases, taps] matrix of sub-filters built from the correlation taps g."""
    rows = []
    zero = g.new_zeros([])
    for placed in plan.placement:
        row = [zero] * plan.taps
        for window_idx, tap_idx in placed:
            row[window_idx] = g[tap_idx]
        rows.append(torch.stack(row) if row else g.new_zeros([0]))
    return torch.stack(rows)


def _crop_pad(x, dim: int, start: int, length: int):
    """x[..., start:start+length, ...] along dim, with zeros wherever that range leaves x."""
    size = x.shape[dim]
    before = max(-start, 0)
    after = max(start + length - size, 0)
    x = x.narrow(dim, max(start, 0), min(start + length, size) - max(start, 0))
    if before or after:
        pad = [0, 0, 0, 0]
        pad_idx = 0 if dim == 3 else 2
        pad[pad_idx], pad[pad_idx + 1] = before, after
        x = F.pad(x, pad)
    return x


def _interleave(y, nc: int, phases_y: int, phases_x: int):
    """[NC, py*px, Ay, Ax] -> [NC, 1, Ay*py, Ax*px] with output (a*py + ry, b*px + rx)."""
    _, _, ay, ax = y.shape
    if phases_y == 1 and phases_x == 1:
        return y
    y = y.reshape(nc, phases_y, phases_x, ay, ax).permute(0, 3, 1, 4, 2)
    return y.reshape(nc, 1, ay * phases_y, ax * phases_x)


def _run(x, kernel, plan_y: AxisPlan, plan_x: AxisPlan):
    """One polyphase / strided convolution of x [NC,1,H,W] with kernel [py*px, 1, Ty, Tx]."""
    x = _crop_pad(x, 2, plan_y.offset, plan_y.input_span())
    x = _crop_pad(x, 3, plan_x.offset, plan_x.input_span())
    y = F.conv2d(x, kernel.to(x.dtype), stride=(plan_y.stride, plan_x.stride))
    y = _interleave(y, x.shape[0], plan_y.phases, plan_x.phases)
    y = y[:, :, :plan_y.full_len:plan_y.post_stride, :plan_x.full_len:plan_x.post_stride]
    return y


def _identity_plan(length: int) -> AxisPlan:
    return AxisPlan(phases=1, taps=1, offset=0, count=length, stride=1, post_stride=1, full_len=length,
                    out_len=length, placement=(((0, 0),),))


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl="fast"):
    """Upsample by `up` (zero insertion), pad/crop by `padding`, convolve with f, keep every `down`-th.

    x: [N, C, H, W]. f: 1-D (separable, applied along x and y, each pass scaled by sqrt(gain)) or 2-D
    [taps_y, taps_x], or None (a single tap). up/down: int or [x, y]; padding: int, [x, y] or
    [x0, x1, y0, y1], negative values crop. flip_filter=True correlates instead of convolving.
    """
    if check_impl(impl) == "ref":
        return reference.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x of shape [N, C, H, W], got {tuple(x.shape)}")
    rs = parse_resample(up, down, padding)
    n, c, h, w = x.shape
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    # Correlation taps: a true convolution flips the filter.
    g = f.to(torch.float32) if flip_filter else f.to(torch.float32).flip(list(range(f.ndim)))
    x = x.reshape(n * c, 1, h, w)
    if f.ndim == 1:
        g = g * (gain ** 0.5)
        plan_x = plan_axis(w, g.shape[0], rs.upx, rs.downx, rs.padx0, rs.padx1)
        x = _run(x, phase_filters(g, plan_x)[:, None, None, :], _identity_plan(h), plan_x)
        plan_y = plan_axis(h, g.shape[0], rs.upy, rs.downy, rs.pady0, rs.pady1)
        x = _run(x, phase_filters(g, plan_y)[:, None, :, None], plan_y, _identity_plan(x.shape[3]))
    else:
        g = g * gain
        plan_x = plan_axis(w, g.shape[1], rs.upx, rs.downx, rs.padx0, rs.padx1)
        plan_y = plan_axis(h, g.shape[0], rs.upy, rs.downy, rs.pady0, rs.pady1)
        # 2-D sub-filters: rows pick taps along y, columns along x, one kernel per (ry, rx) phase.
        pick_y = torch.stack([phase_filters(e, plan_y) for e in torch.eye(g.shape[0])])  # [Ky, Py, Ty]
        pick_x = torch.stack([phase_filters(e, plan_x) for e in torch.eye(g.shape[1])])  # [Kx, Px, Tx]
        kernel = torch.einsum("kpt,lqu,kl->pqtu", pick_y.to(g), pick_x.to(g), g)
        kernel = kernel.reshape(plan_y.phases * plan_x.phases, 1, plan_y.taps, plan_x.taps)
        x = _run(x, kernel, plan_y, plan_x)
    return x.reshape(n, c, x.shape[2], x.shape[3])
