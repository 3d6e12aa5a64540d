"""bias_act: add a bias along one dimension, apply an activation, scale and clamp."""
from __future__ import annotations

import torch.nn.functional as F

from videdit.ops import backend, reference
from videdit.ops._params import check_impl
from videdit.ops.reference import ACTIVATIONS, resolve_activation

__all__ = ["bias_act", "bias_act_torch", "ACTIVATIONS"]


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None, impl="fast"):
    """x + b (b broadcast along `dim`), then act (alpha = lrelu slope), times gain, clamped to +-clamp.

    act: one of ACTIVATIONS (linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus, swish); alpha
    and gain default per activation (lrelu: 0.2 and sqrt(2)); clamp None or < 0 means no clamp.
    """
    if check_impl(impl) == "ref":
        return reference.bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    # CUDA kernel for CUDA tensors, per the --ops mode; it falls back to bias_act_torch where it failed its self-check.
    run = backend.lookup("bias_act", x, torch_path=bias_act_torch) or bias_act_torch
    return run(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


def bias_act_torch(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """The PyTorch path of bias_act (impl="fast"), whatever the ops mode."""
    spec, alpha, gain = resolve_activation(act, alpha, gain)
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape).to(x.dtype)
    # Without autograd the intermediates can be overwritten in place.
    inplace = not x.requires_grad and b is not None
    if act == "lrelu":
        x = F.leaky_relu_(x, alpha) if inplace else F.leaky_relu(x, alpha)
    elif act == "relu":
        x = F.relu_(x) if inplace else F.relu(x)
    else:
        x = spec.func(x, alpha)
    if gain != 1:
        x = x.mul_(gain) if inplace else x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp_(-clamp, clamp) if inplace else x.clamp(-clamp, clamp)
    return x
