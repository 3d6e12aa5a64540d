"""Modulated convolution of StyleGAN3, and the resampling convolution of the StyleGAN2 discriminator."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from videdit.ops import reference
from videdit.ops._params import check_impl, conv2d_resample_padding
from videdit.ops.upfirdn2d import upfirdn2d


class _Conv2dGemmGrad(torch.autograd.Function):
    """F.conv2d whose backward runs as one forward convolution (input grad) and k*k GEMMs (weight
    grad): about 1.6x faster on CPU than the default backward for the generator's convolutions.
    The backward is made of differentiable ops, so double backward works too."""

    @staticmethod
    def forward(ctx, x, w, padding: int):
        ctx.save_for_backward(x, w)
        ctx.padding = padding
        return F.conv2d(x, w, padding=padding)

    @staticmethod
    def backward(ctx, grad_y):
        x, w = ctx.saved_tensors
        pad = ctx.padding
        kh, kw = w.shape[2], w.shape[3]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            # Correlation with the flipped, transposed kernel undoes the forward's padding.
            grad_x = F.conv2d(grad_y, w.flip([2, 3]).transpose(0, 1), padding=(kh - 1 - pad, kw - 1 - pad))
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(x, grad_y, kh, kw, pad)
        return grad_x, grad_w, None


def _weight_grad(x, grad_y, kh: int, kw: int, pad: int):
    """dL/dw of a stride-1 conv2d: one GEMM per tap, each reading x in place.

    x is padded and flattened per channel to [I, N*Hp*Wp]; grad_y is laid out on the same padded grid
    (zeros outside the output), so tap (u, v) is a GEMM with the window of x starting u*Wp + v
    further on, a strided view that BLAS reads directly (no per-tap copy of x). The zeros make the
    window's wrap into the next row or sample contribute nothing.
    """
    n, in_ch, h, w = x.shape
    out_ch, out_h, out_w = grad_y.shape[1], grad_y.shape[2], grad_y.shape[3]
    hp, wp = h + 2 * pad, w + 2 * pad
    length = n * hp * wp
    xf = F.pad(x, [pad] * 4).transpose(0, 1).reshape(in_ch, length)
    xf = F.pad(xf, [0, (kh - 1) * wp + kw - 1])  # the last window runs past the end
    g = grad_y.new_zeros(out_ch, n, hp, wp)
    g[:, :, :out_h, :out_w] = grad_y.transpose(0, 1)
    g = g.reshape(out_ch, length)
    grad_w = grad_y.new_empty(out_ch, in_ch, kh, kw)
    for u in range(kh):
        for v in range(kw):
            grad_w[:, :, u, v] = g @ xf[:, u * wp + v:u * wp + v + length].t()
    return grad_w


def _conv2d(x, w, padding: int):
    """Plain conv2d; with autograd, the faster-backward version (valid for padding <= k - 1).

    One sample through a 1x1 kernel is one matrix product [O, I] @ [I, H*W]: on CPU oneDNN's 1x1
    convolution measured up to 4x slower than BLAS on StyleGAN3-R's large maps (the ToRGB layer most).
    """
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
    if needs_grad and isinstance(padding, int) and 0 <= padding <= min(w.shape[2], w.shape[3]) - 1:
        return _Conv2dGemmGrad.apply(x, w, padding)
    if not needs_grad and x.shape[0] == 1 and w.shape[2] == w.shape[3] == 1 and padding == 0 \
            and x.dtype in (torch.float32, torch.float64) and x.is_contiguous():
        _, in_ch, h, width = x.shape
        return torch.mm(w.reshape(w.shape[0], in_ch), x.reshape(in_ch, h * width)).reshape(1, w.shape[0], h, width)
    return F.conv2d(x, w, padding=padding)


def _grouped_modulated_conv(x, w, in_scale, out_scale, padding: int):
    """A batch as one grouped convolution with per-sample weights (scales folded in, in their float32 or
    float64 dtype, then cast to x's), as NVIDIA's op runs. Used for float16: the batched path's conv
    output before demodulation is about sqrt(in_channels * k * k) times the result and can overflow it."""
    n, in_ch, h, width = x.shape
    out_ch, _, kh, kw = w.shape
    wi = w.unsqueeze(0) * in_scale.reshape(n, 1, in_ch, 1, 1)
    if out_scale is not None:
        wi = wi * out_scale.reshape(n, out_ch, 1, 1, 1)
    wi = wi.reshape(n * out_ch, in_ch, kh, kw).to(x.dtype)
    y = F.conv2d(x.reshape(1, n * in_ch, h, width), wi, padding=padding, groups=n)
    return y.reshape(n, out_ch, y.shape[2], y.shape[3])


def modulated_conv2d(x, w, s, demodulate=True, padding=0, input_gain=None, impl="fast"):
    """StyleGAN3's modulated conv: per-sample weight w * s (demodulated), times input_gain.

    x [N,I,H,W], w [O,I,kh,kw], s [N,I], input_gain None or broadcastable to [N,I]. The fast path never
    builds per-sample weights for a batch: it scales the input by the styles, runs one ordinary
    convolution for the whole batch (NCHW: oneDNN's channels-last backward is ~3x slower on CPU) and scales the
    output by the demodulation coefficients, which is the same linear map. A single sample gets the
    scales folded into its weight instead.
    """
    if check_impl(impl) == "ref":
        return reference.modulated_conv2d(x, w, s, demodulate=demodulate, padding=padding, input_gain=input_gain)
    n, in_ch, h, width = x.shape
    out_ch, _, kh, kw = w.shape
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    w = w.to(dtype)
    s = s.to(dtype)
    if demodulate:
        w = w * w.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        s = s * s.square().mean().rsqrt()
    in_scale = s  # [N, I]
    out_scale = None
    if demodulate:
        # sum_{i,k} (w[o,i,k] s[n,i])^2 = sum_i s[n,i]^2 * sum_k w[o,i,k]^2
        w_sq = w.square().sum(dim=[2, 3])  # [O, I]
        out_scale = (s.square() @ w_sq.t() + 1e-8).rsqrt()  # [N, O]
    if input_gain is not None:
        in_scale = in_scale * input_gain.to(dtype).expand(n, in_ch)
    if n == 1:
        # One sample: fold both scales into the weight, one plain convolution.
        wi = w * in_scale.reshape(1, in_ch, 1, 1)
        if out_scale is not None:
            wi = wi * out_scale.reshape(out_ch, 1, 1, 1)
        return _conv2d(x.contiguous(), wi.to(x.dtype), padding)
    if x.dtype == torch.float16:
        return _grouped_modulated_conv(x, w, in_scale, out_scale, padding)
    x = x * in_scale.to(x.dtype).reshape(n, in_ch, 1, 1)
    y = _conv2d(x.contiguous(), w.to(x.dtype), padding)
    if out_scale is not None:
        y = y * out_scale.to(y.dtype).reshape(n, out_ch, 1, 1)
    return y


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False,
                    impl="fast"):
    """Convolution with optional up/downsampling by the FIR filter f (NVIDIA's conv2d_resample).

    Same result as: upfirdn2d(up, gain up^2) -> conv2d(w) -> upfirdn2d(down), with the padding of the
    conv itself given by `padding` and the filter padding added automatically. flip_weight=True is a
    cross-correlation (torch's conv2d), False a true convolution.
    """
    if check_impl(impl) == "ref":
        return reference.conv2d_resample(x, w, f=f, up=up, down=down, padding=padding, groups=groups,
                                         flip_weight=flip_weight, flip_filter=flip_filter)
    px0, px1, py0, py1 = conv2d_resample_padding(f, up, down, padding)
    kh, kw = w.shape[2], w.shape[3]
    if not flip_weight:
        w = w.flip([2, 3])
    w = w.to(x.dtype)
    if up == 1 and down > 1:
        # The filter and the conv commute: filter first (no stride), then a strided conv. A 1x1 conv
        # also commutes with the stride, so it runs on the downsampled map.
        if kh == 1 and kw == 1:
            x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
            return F.conv2d(x, w, groups=groups)
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return F.conv2d(x, w, stride=down, groups=groups)
    if up == 1 and down == 1 and px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return F.conv2d(x, w, padding=[py0, px0], groups=groups)
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up ** 2,
                  flip_filter=flip_filter)
    x = F.conv2d(x, w, groups=groups)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x
