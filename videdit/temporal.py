"""Temporal filtering of per-frame quantities (latents, styles, transforms, weight offsets, landmarks).

The published video code smooths with the 5-tap kernel [1, 3, 4, 3, 1] / 12. Unlike it, no frame is
dropped: the ends are handled by a padding rule (`SmoothSettings.padding`):

- ``"reflect"`` (default): the sequence is mirrored about its first and last frame, without repeating
  them: frames ``x2 x1 | x0 x1 x2 ...``. Every output frame gets the full kernel; a constant stays constant.
- ``"edge"``: the first and last frames are repeated: ``x0 x0 | x0 x1 x2 ...``.
- ``"renormalize"``: frames outside the sequence are left out and the remaining taps are rescaled to sum
  to one (no invented frames).

A sequence may be cut into segments (shots): each is filtered on its own, as if it were a whole video,
so no window crosses a cut. Output length always equals input length. This module knows nothing of
files or stages; the smooth stage, the tuners and render use it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from videdit.errors import InputError

PUBLISHED_KERNEL = (1.0, 3.0, 4.0, 3.0, 1.0)  # = (0.25, 0.75, 1, 0.75, 0.25) / 3 after normalising
PADDING_MODES = ("reflect", "edge", "renormalize")


@dataclass
class SmoothSettings:
    """How latents and transforms are smoothed.

    window: 5 for the published kernel, 1 for no temporal filtering (ignored when `kernel` is given).
    kernel: explicit odd-length symmetric tap weights (normalised to sum 1), overriding `window`.
    fine_layers_from: first W+ entry replaced by its video mean; None keeps every layer per frame.
    padding: end rule, one of PADDING_MODES (see the module docstring).
    smooth_transforms: filter rotation and translation too (with the same kernel and padding).
    """

    window: int = 5
    fine_layers_from: int | None = 9
    padding: str = "reflect"
    smooth_transforms: bool = True
    kernel: tuple[float, ...] | None = None


def smoothing_kernel(settings: SmoothSettings) -> np.ndarray:
    """The normalised float64 taps for these settings."""
    if settings.kernel is not None:
        taps = np.asarray(settings.kernel, dtype=np.float64)
    elif settings.window == 5:
        taps = np.asarray(PUBLISHED_KERNEL, dtype=np.float64)
    elif settings.window == 1:
        taps = np.ones(1)
    else:
        raise InputError(f"smoothing window must be 1 or 5 (or give an explicit kernel), got {settings.window}")
    if taps.ndim != 1 or len(taps) % 2 != 1 or not np.allclose(taps, taps[::-1]) or taps.sum() <= 0:
        raise InputError(f"smoothing kernel must be odd-length, symmetric and sum > 0, got {taps.tolist()}")
    return taps / taps.sum()


def _padded_index(i: int, n: int, mode: str) -> int | None:
    """Source frame for (possibly out-of-range) position i, or None when the tap is dropped."""
    if 0 <= i < n:
        return i
    if mode == "edge":
        return min(max(i, 0), n - 1)
    if mode == "renormalize":
        return None
    if mode == "reflect":
        if n == 1:
            return 0
        period = 2 * (n - 1)  # mirror about both ends, repeatedly for very short videos
        i = i % period
        return i if i < n else period - i
    raise InputError(f"unknown padding {mode!r}; expected one of {', '.join(PADDING_MODES)}")


def check_segments(segments: Sequence[tuple[int, int]] | None, n: int) -> list[tuple[int, int]]:
    """Half-open [start, end) ranges that tile 0..n in order; None = one segment (the whole sequence)."""
    if segments is None:
        return [(0, n)]
    out, expected = [], 0
    for start, end in segments:
        start, end = int(start), int(end)
        if start != expected or end <= start:
            raise InputError(f"segments must tile 0..{n} in order without gaps, got {list(segments)}")
        out.append((start, end))
        expected = end
    if expected != n:
        raise InputError(f"segments cover 0..{expected} but the sequence has {n} frames")
    return out


def _filter_one(x: np.ndarray, taps: np.ndarray, padding: str) -> np.ndarray:
    n = x.shape[0]
    half = len(taps) // 2
    out = np.empty_like(x)
    for t in range(n):
        acc = np.zeros(x.shape[1:], dtype=np.float64)
        weight = 0.0
        for k, tap in enumerate(taps):
            src = _padded_index(t + k - half, n, padding)
            if src is None:
                continue
            acc += tap * x[src]
            weight += tap
        out[t] = acc / weight
    return out


def temporal_filter(x: np.ndarray, taps: np.ndarray, padding: str = "reflect",
                    segments: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
    """Filter `x` [N, ...] along axis 0 with the symmetric `taps`, each segment on its own; same length, float64."""
    if padding not in PADDING_MODES:
        raise InputError(f"unknown padding {padding!r}; expected one of {', '.join(PADDING_MODES)}")
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for start, end in check_segments(segments, x.shape[0]):
        out[start:end] = _filter_one(x[start:end], taps, padding)
    return out


def smooth_latents(latents: np.ndarray, settings: SmoothSettings,
                   segments: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
    """Smooth W+ latents [N, num_ws, w_dim] over time; float32 result of the same shape.

    The fine layers are replaced by their mean over each segment (a shot's texture, not another shot's).
    """
    latents = np.asarray(latents)
    if latents.ndim != 3 or latents.shape[0] == 0:
        raise InputError(f"latents must have shape [N, num_ws, w_dim] with N > 0, got {list(latents.shape)}")
    out = temporal_filter(latents, smoothing_kernel(settings), settings.padding, segments)
    fine = settings.fine_layers_from
    if fine is not None and fine < latents.shape[1]:
        # The mean of the unfiltered latents: the fine layers carry texture, not motion.
        for start, end in check_segments(segments, len(latents)):
            out[start:end, fine:] = latents[start:end, fine:].astype(np.float64).mean(axis=0, keepdims=True)
    return out.astype(np.float32)


def wrap_degrees(angle: np.ndarray) -> np.ndarray:
    """Angles in degrees mapped into [-180, 180)."""
    return (np.asarray(angle, dtype=np.float64) + 180.0) % 360.0 - 180.0


def transform_matrices(translation: np.ndarray, rotation_deg: np.ndarray) -> np.ndarray:
    """Batched `make_transform`: [[c, s, tx], [-s, c, ty], [0, 0, 1]] for each frame; float64 [N,3,3]."""
    rad = np.deg2rad(np.asarray(rotation_deg, dtype=np.float64))
    translation = np.asarray(translation, dtype=np.float64)
    m = np.zeros((len(rad), 3, 3), dtype=np.float64)
    m[:, 0, 0] = np.cos(rad)
    m[:, 0, 1] = np.sin(rad)
    m[:, 1, 0] = -np.sin(rad)
    m[:, 1, 1] = np.cos(rad)
    m[:, 0, 2] = translation[:, 0]
    m[:, 1, 2] = translation[:, 1]
    m[:, 2, 2] = 1.0
    return m


def smooth_transforms(rotation_deg: np.ndarray, translation: np.ndarray, settings: SmoothSettings,
                      segments: Sequence[tuple[int, int]] | None = None):
    """Smoothed (rotation_deg [N], translation [N,2], matrix [N,3,3]); angles unwrapped before filtering."""
    rotation_deg = np.asarray(rotation_deg, dtype=np.float64).reshape(-1)
    translation = np.asarray(translation, dtype=np.float64).reshape(-1, 2)
    if len(rotation_deg) != len(translation):
        raise InputError(f"transforms disagree: {len(rotation_deg)} angles but {len(translation)} translations")
    if settings.smooth_transforms:
        taps = smoothing_kernel(settings)
        unwrapped = np.unwrap(rotation_deg, period=360.0)
        rotation_deg = wrap_degrees(temporal_filter(unwrapped, taps, settings.padding, segments))
        translation = temporal_filter(translation, taps, settings.padding, segments)
    return rotation_deg, translation, transform_matrices(translation, rotation_deg)
