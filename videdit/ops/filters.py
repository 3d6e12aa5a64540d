"""FIR filter helpers: NVIDIA-style `setup_filter` and StyleGAN3's low-pass filter design."""
from __future__ import annotations

import numpy as np
import torch


def setup_filter(f, device=None, normalize=True, flip_filter=False, gain=1, separable=None):
    """Turn taps into a float32 filter tensor for upfirdn2d.

    A 1-D filter with fewer than 8 taps becomes its 2-D outer product unless separable=True;
    normalize divides by the sum; the result is scaled by gain^(ndim/2) so the full 2-D gain is `gain`.
    """
    f = torch.as_tensor(1.0 if f is None else f, dtype=torch.float32)
    if f.ndim == 0:
        f = f.reshape(1)
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"filter must be 0-D, 1-D or 2-D and non-empty, got shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f if device is None else f.to(device)


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False):
    """StyleGAN3's anti-aliasing filter, or None for a single tap.

    Separable: a Kaiser-windowed FIR (scipy.signal.firwin) with the given transition width.
    Radial: a jinc (the 2-D ideal low-pass) times a separable Kaiser window, normalised to sum 1.
    """
    import scipy.signal
    import scipy.special

    if numtaps < 1:
        raise ValueError(f"numtaps must be >= 1, got {numtaps}")
    if numtaps == 1:
        return None
    if not radial:
        taps = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        return torch.as_tensor(taps, dtype=torch.float32)
    coords = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    radius = np.hypot(*np.meshgrid(coords, coords))
    with np.errstate(invalid="ignore", divide="ignore"):
        jinc = scipy.special.j1(2 * np.pi * cutoff * radius) / (np.pi * radius)
    jinc[radius == 0] = cutoff  # the limit at the centre (odd tap counts only)
    atten = scipy.signal.kaiser_atten(numtaps, width / (fs / 2))
    window = np.kaiser(numtaps, scipy.signal.kaiser_beta(atten))
    taps = jinc * np.outer(window, window)
    taps /= taps.sum()
    return torch.as_tensor(taps, dtype=torch.float32)
