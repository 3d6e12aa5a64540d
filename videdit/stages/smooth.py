"""Temporal smoothing of latents and transforms (stage `smooth`).

Latents are filtered over time with the published 5-tap kernel [1, 3, 4, 3, 1] / 12 and the fine
layers (9..num_ws-1 by default) are replaced by their mean over the whole video, which removes the
texture flicker those layers carry. Transforms are smoothed as parameters (rotation angle, unwrapped
so that 179 deg -> -179 deg is a 2 deg step, and translation), then turned back into matrices.

Unlike the published code no frame is dropped. The ends are handled by a padding rule, chosen with
`SmoothSettings.padding`:

- ``"reflect"`` (default): the sequence is mirrored about its first and last frame, without repeating
  them: frames ``x2 x1 | x0 x1 x2 ...``. Every output frame gets the full kernel; a constant stays
  constant.
- ``"edge"``: the first and last frames are repeated: ``x0 x0 | x0 x1 x2 ...``.
- ``"renormalize"``: frames outside the video are left out and the remaining taps are rescaled to sum
  to one (no invented frames).

Output length always equals input length.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from videdit.errors import InputError

PUBLISHED_KERNEL = (1.0, 3.0, 4.0, 3.0, 1.0)  # = (0.25, 0.75, 1, 0.75, 0.25) / 3 after normalising
PADDING_MODES = ("reflect", "edge", "renormalize")
RECONSTRUCTION_KEY = "recon"  # key of the unedited latents (the pipeline's name)
STYLESPACE_SUFFIX = ".stylespace.json"  # sidecar of an edited latents file (see stages/edit.py)


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


@dataclass
class SmoothResult:
    latents_paths: dict[str, Path] = field(default_factory=dict)
    transforms_path: Path | None = None
    num_frames: int = 0


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


def temporal_filter(x: np.ndarray, taps: np.ndarray, padding: str = "reflect") -> np.ndarray:
    """Filter `x` [N, ...] along axis 0 with the symmetric `taps`; same length, float64."""
    if padding not in PADDING_MODES:
        raise InputError(f"unknown padding {padding!r}; expected one of {', '.join(PADDING_MODES)}")
    x = np.asarray(x, dtype=np.float64)
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


def smooth_latents(latents: np.ndarray, settings: SmoothSettings) -> np.ndarray:
    """Smooth W+ latents [N, num_ws, w_dim] over time; float32 result of the same shape."""
    latents = np.asarray(latents)
    if latents.ndim != 3 or latents.shape[0] == 0:
        raise InputError(f"latents must have shape [N, num_ws, w_dim] with N > 0, got {list(latents.shape)}")
    out = temporal_filter(latents, smoothing_kernel(settings), settings.padding)
    fine = settings.fine_layers_from
    if fine is not None and fine < latents.shape[1]:
        # The mean of the unfiltered latents: the fine layers carry texture, not motion.
        out[:, fine:] = latents[:, fine:].astype(np.float64).mean(axis=0, keepdims=True)
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


def smooth_transforms(rotation_deg: np.ndarray, translation: np.ndarray, settings: SmoothSettings):
    """Smoothed (rotation_deg [N], translation [N,2], matrix [N,3,3]); angles unwrapped before filtering."""
    rotation_deg = np.asarray(rotation_deg, dtype=np.float64).reshape(-1)
    translation = np.asarray(translation, dtype=np.float64).reshape(-1, 2)
    if len(rotation_deg) != len(translation):
        raise InputError(f"transforms disagree: {len(rotation_deg)} angles but {len(translation)} translations")
    if settings.smooth_transforms:
        taps = smoothing_kernel(settings)
        unwrapped = np.unwrap(rotation_deg, period=360.0)
        rotation_deg = wrap_degrees(temporal_filter(unwrapped, taps, settings.padding))
        translation = temporal_filter(translation, taps, settings.padding)
    return rotation_deg, translation, transform_matrices(translation, rotation_deg)


def latents_key(path: str | PathLike) -> str:
    """Key of a latents file: `latents_age_+5.0.npy` -> `age_+5.0`; plain `latents.npy` -> recon."""
    stem = Path(path).name.removesuffix(".npy")
    if stem == "latents":
        return RECONSTRUCTION_KEY
    return stem.removeprefix("latents_")


def run_smooth(
    latents_paths: Mapping[str, str | PathLike] | Sequence[str | PathLike],
    transforms_npz: str | PathLike,
    out_dir: str | PathLike,
    settings: SmoothSettings | None = None,
) -> SmoothResult:
    """Smooth every latents file and the transforms; write out_dir/latents_<key>.npy and transforms.npz.

    `latents_paths` maps output keys to .npy files, or is a list of files named as the edit stage names
    them. A StyleSpace sidecar (`<file>.stylespace.json`) next to an input is copied next to its output.
    """
    settings = settings or SmoothSettings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not isinstance(latents_paths, Mapping):
        latents_paths = {latents_key(p): p for p in latents_paths}
    if not latents_paths:
        raise InputError("no latents given to smooth")

    with np.load(transforms_npz) as data:
        if "rotation_deg" not in data or "translation" not in data:
            raise InputError(f"{transforms_npz}: needs 'rotation_deg' and 'translation' arrays")
        rotation, translation = data["rotation_deg"], data["translation"]
        extras = {k: data[k] for k in ("face_found",) if k in data}
    num_frames = len(rotation)
    rotation, translation, matrix = smooth_transforms(rotation, translation, settings)
    transforms_path = out_dir / "transforms.npz"
    np.savez(transforms_path, rotation_deg=rotation.astype(np.float32),
             translation=translation.astype(np.float32), matrix=matrix.astype(np.float32), **extras)

    result = SmoothResult(transforms_path=transforms_path, num_frames=num_frames)
    for key, src in latents_paths.items():
        latents = np.load(src)
        if latents.shape[0] != num_frames:
            raise InputError(f"{src}: {latents.shape[0]} frames of latents but {num_frames} transforms")
        dst = out_dir / f"latents_{key}.npy"
        np.save(dst, smooth_latents(latents, settings))
        sidecar = Path(str(src) + STYLESPACE_SUFFIX)
        if sidecar.is_file():
            shutil.copyfile(sidecar, str(dst) + STYLESPACE_SUFFIX)
        result.latents_paths[key] = dst
    (out_dir / "smooth.json").write_text(json.dumps(
        {"num_frames": num_frames, "kernel": smoothing_kernel(settings).tolist(), "padding": settings.padding,
         "fine_layers_from": settings.fine_layers_from, "keys": sorted(result.latents_paths)}, indent=1))
    return result
