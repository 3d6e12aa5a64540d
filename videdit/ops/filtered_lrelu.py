"""filtered_lrelu: bias, upsample, leaky ReLU (gain, clamp), downsample: StyleGAN3's nonlinearity."""
from __future__ import annotations

import math

from videdit.ops import reference
from videdit.ops._params import check_impl, parse_resample
from videdit.ops.bias_act import bias_act
from videdit.ops.upfirdn2d import upfirdn2d


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
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=rs.upx ** 2, flip_filter=flip_filter)
    x = bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    return upfirdn2d(x, fd, down=down, flip_filter=flip_filter)
