"""Literal, obviously-correct versions of the ops, used as the ground truth by the tests.

Each function does exactly what the definition says, step by step (zero-insert, pad, full convolution,
subsample), without any attempt at speed. Semantics follow NVIDIA's StyleGAN3 ops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from videdit.ops._params import conv2d_resample_padding, parse_resample


@dataclass(frozen=True)
class Activation:
    """An activation of bias_act with its default alpha and gain."""

    func: Callable
    default_alpha: float
    default_gain: float


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, alpha: x, 0.0, 1.0),
    "relu": Activation(lambda x, alpha: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": Activation(lambda x, alpha: F.leaky_relu(x, alpha), 0.2, math.sqrt(2)),
    "tanh": Activation(lambda x, alpha: torch.tanh(x), 0.0, 1.0),
    "sigmoid": Activation(lambda x, alpha: torch.sigmoid(x), 0.0, 1.0),
    "elu": Activation(lambda x, alpha: F.elu(x), 0.0, 1.0),
    "selu": Activation(lambda x, alpha: F.selu(x), 0.0, 1.0),
    "softplus": Activation(lambda x, alpha: F.softplus(x), 0.0, 1.0),
    "swish": Activation(lambda x, alpha: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def resolve_activation(act: str, alpha, gain) -> tuple[Activation, float, float]:
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; known: {', '.join(ACTIVATIONS)}")
    spec = ACTIVATIONS[act]
    alpha = float(spec.default_alpha if alpha is None else alpha)
    gain = float(spec.default_gain if gain is None else gain)
    return spec, alpha, gain


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """x + b (broadcast along `dim`), then act(., alpha), times gain, clamped to [-clamp, clamp]."""
    spec, alpha, gain = resolve_activation(act, alpha, gain)
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape)
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def zero_insert(x, upx: int, upy: int):
    """Put upx-1 zeros after every column and upy-1 zeros after every row."""
    n, c, h, w = x.shape
    out = x.new_zeros([n, c, h * upy, w * upx])
    out[:, :, ::upy, ::upx] = x
    return out


def pad_or_crop(x, x0: int, x1: int, y0: int, y1: int):
    """Zero-pad (positive) or crop (negative) each side."""
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    h, w = x.shape[2], x.shape[3]
    return x[:, :, max(-y0, 0):h - max(-y1, 0), max(-x0, 0):w - max(-x1, 0)]


def convolve_valid(x, kernel):
    """True 2-D convolution (kernel flipped) of every channel with a [kh, kw] kernel, 'valid' region."""
    c = x.shape[1]
    kernel = kernel.flip([0, 1]).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, kernel, groups=c)


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Zero-insert by `up`, pad, convolve with f (times gain), keep every `down`-th sample.

    A 1-D f is applied along both axes, as two passes each scaled by sqrt(gain); flip_filter=True
    correlates instead of convolving.
    """
    rs = parse_resample(up, down, padding)
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    x = zero_insert(x, rs.upx, rs.upy)
    x = pad_or_crop(x, rs.padx0, rs.padx1, rs.pady0, rs.pady1)
    if f.ndim == 1:
        f = f * gain ** 0.5
        x = convolve_valid(x, f[None, :])  # along x
        x = convolve_valid(x, f[:, None])  # along y
    else:
        x = convolve_valid(x, f * gain)
    return x[:, :, ::rs.downy, ::rs.downx]


def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2,
                   clamp=None, flip_filter=False):
    """bias -> upsample (fu, gain up^2) -> lrelu*gain, clamp -> downsample (fd)."""
    rs = parse_resample(up, down, padding)
    if (rs.upx, rs.downx) != (rs.upy, rs.downy):
        raise ValueError("filtered_lrelu takes one up and one down factor for both axes")
    x = bias_act(x, b)
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=rs.upx ** 2, flip_filter=flip_filter)
    x = bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    return upfirdn2d(x, fd, down=down, flip_filter=flip_filter)


def modulated_conv2d(x, w, s, demodulate=True, padding=0, input_gain=None):
    """StyleGAN3's modulated convolution, one sample at a time with its own weight.

    x [N,I,H,W], w [O,I,k,k], s [N,I] styles, input_gain None or broadcastable to [N,I].
    """
    n, in_ch = x.shape[0], x.shape[1]
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    w = w.to(dtype)
    s = s.to(dtype)
    if demodulate:
        # Pre-normalisation (no effect on the result beyond round-off, kept for parity).
        w = w / w.square().mean(dim=[1, 2, 3], keepdim=True).sqrt()
        s = s / s.square().mean().sqrt()
    outputs = []
    for i in range(n):
        wi = w * s[i].reshape(1, -1, 1, 1)
        if demodulate:
            wi = wi / (wi.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        if input_gain is not None:
            wi = wi * input_gain.expand(n, in_ch)[i].reshape(1, -1, 1, 1)
        outputs.append(F.conv2d(x[i:i + 1], wi.to(x.dtype), padding=padding))
    return torch.cat(outputs, dim=0)


def conv2d(x, w, groups=1, flip_weight=True, stride=1, padding=0):
    """conv2d as cross-correlation (flip_weight=True) or true convolution (False)."""
    if not flip_weight:
        w = w.flip([2, 3])
    return F.conv2d(x, w.to(x.dtype), stride=stride, padding=padding, groups=groups)


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """upfirdn2d upsampling (gain up^2) -> conv2d with w -> upfirdn2d downsampling, all with f.

    The padding is the conv's own padding; the filters' extra padding is added as NVIDIA's op does.
    """
    px0, px1, py0, py1 = conv2d_resample_padding(f, up, down, padding)
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up ** 2,
                  flip_filter=flip_filter)
    x = conv2d(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x
