"""Laplacian-pyramid reconstruction loss (the local tweak's reconstruction term).

Each image is split into band-pass levels L_k = G_k - up(G_{k+1}) of a Gaussian pyramid G (5-tap
binomial blur, factor-2 steps) plus the final low-pass G_K. The loss is the sum over levels of the
mean absolute difference, so every frequency band weighs the same whatever its pixel count (the
"Lap1" distance with per-level means).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_BINOMIAL5 = (1.0, 4.0, 6.0, 4.0, 1.0)


def _blur(x: torch.Tensor) -> torch.Tensor:
    taps = torch.tensor(_BINOMIAL5, dtype=x.dtype, device=x.device) / 16.0
    kernel = (taps[:, None] * taps[None, :]).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, [2, 2, 2, 2], mode="reflect"), kernel, groups=x.shape[1])


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[band_0 (full size), ..., band_{levels-1}, low-pass]: levels + 1 tensors; sum of upsampled bands = x."""
    bands = []
    current = x
    for _ in range(levels):
        if min(current.shape[-2:]) < 6:  # too small to blur and halve again
            break
        low = _blur(current)[..., ::2, ::2]
        up = F.interpolate(low, size=current.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(current - up)
        current = low
    bands.append(current)
    return bands


def laplacian_loss(pred: torch.Tensor, target: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """Sum over the pyramid levels of mean |L_k(pred) - L_k(target)| (images NCHW, same size)."""
    if pred.shape != target.shape:
        raise ValueError(f"laplacian_loss: shapes differ, {tuple(pred.shape)} vs {tuple(target.shape)}")
    total = pred.new_zeros(())
    for a, b in zip(laplacian_pyramid(pred, levels), laplacian_pyramid(target, levels)):
        total = total + (a - b).abs().mean()
    return total
