"""Temporal smoothing of latents and transforms (stage `smooth`).

Latents are filtered over time with the published 5-tap kernel [1, 3, 4, 3, 1] / 12 and the fine
layers (9..num_ws-1 by default) are replaced by their mean, which removes the texture flicker those
layers carry. Transforms are smoothed as parameters (rotation angle, unwrapped so that 179 deg ->
-179 deg is a 2 deg step, and translation), then turned back into matrices. The maths and the end
rules live in `videdit.temporal`; no frame is dropped and no window crosses a shot boundary.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from videdit import layout, records
from videdit.errors import InputError
from videdit.temporal import (  # noqa: F401  (re-exported: the smooth stage's maths)
    PADDING_MODES,
    PUBLISHED_KERNEL,
    SmoothSettings,
    smooth_latents,
    smooth_transforms,
    smoothing_kernel,
    temporal_filter,
    transform_matrices,
    wrap_degrees,
)


@dataclass
class SmoothResult:
    latents_paths: dict[str, Path] = field(default_factory=dict)
    transforms_path: Path | None = None
    num_frames: int = 0


def _key_of(path: str | PathLike) -> str:
    """The output key of a latents file named as the edit stage names them (encode's latents.npy: recon)."""
    key = layout.latents_key(Path(path).name)
    if key is None:
        raise InputError(f"{path}: not a latents file name ({records.latents_name('KEY')} or {records.LATENTS})")
    return key


def latents_dir_of(latents_paths: Mapping[str, str | PathLike]) -> Path:
    """The folder the latents come from (the edit stage's): its StyleSpace edits are smoothed too."""
    return Path(next(iter(latents_paths.values()))).parent


def smooth_styles_file(src: Path, dst: Path, num_frames: int, settings: SmoothSettings,
                       segments: Sequence[tuple[int, int]] | None = None) -> Path:
    """Per-frame StyleSpace offsets smoothed as published (`smooth_s`): the same kernel on every style
    tensor, `input` included, no fine-layer mean."""
    import torch

    from videdit.stylespace import load_styles, save_styles

    styles = load_styles(src)
    taps = smoothing_kernel(settings)
    out = {}
    for name, value in styles.items():
        if value.shape[0] != num_frames:
            raise InputError(f"{src}: {value.shape[0]} frames of styles but {num_frames} transforms")
        out[name] = torch.from_numpy(temporal_filter(value.numpy(), taps, settings.padding, segments).astype(np.float32))
    return save_styles(dst, out)


def run_smooth(
    latents_paths: Mapping[str, str | PathLike] | Sequence[str | PathLike],
    transforms_npz: str | PathLike,
    out_dir: str | PathLike,
    settings: SmoothSettings | None = None,
    segments: Sequence[tuple[int, int]] | None = None,
) -> SmoothResult:
    """Smooth every latents file and the transforms; write out_dir/latents_<key>.npy and transforms.npz.

    `latents_paths` maps output keys to .npy files, or is a list of files named as the edit stage names
    them. The StyleSpace offsets (styles_<key>.safetensors) of the folder the latents come from are
    smoothed too. `segments` (shots, half-open frame ranges tiling the video) are smoothed each on its own.
    """
    settings = settings or SmoothSettings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not isinstance(latents_paths, Mapping):
        latents_paths = {_key_of(p): p for p in latents_paths}
    if not latents_paths:
        raise InputError("no latents given to smooth")

    raw = records.TransformsRecord.load(transforms_npz).require("rotation_deg", "translation")
    num_frames = raw.n_frames
    rotation, translation, matrix = smooth_transforms(raw.rotation_deg, raw.translation, settings, segments)
    transforms_path = records.TransformsRecord(
        rotation_deg=rotation.astype(np.float32), translation=translation.astype(np.float32),
        matrix=matrix.astype(np.float32), face_found=raw.face_found).save(out_dir / records.TRANSFORMS)

    result = SmoothResult(transforms_path=transforms_path, num_frames=num_frames)
    for key, src in latents_paths.items():
        latents = records.load_latents(src, num_frames=num_frames)
        result.latents_paths[key] = records.save_latents(out_dir / records.latents_name(key),
                                                         smooth_latents(latents, settings, segments))
    edit_dir = latents_dir_of(latents_paths)
    for key in records.styles_keys(edit_dir):
        result.latents_paths[key] = smooth_styles_file(edit_dir / records.styles_name(key),
                                                       out_dir / records.styles_name(key), num_frames, settings, segments)
    records.SmoothInfo(num_frames=num_frames, kernel=smoothing_kernel(settings).tolist(), padding=settings.padding,
                       fine_layers_from=settings.fine_layers_from, keys=sorted(result.latents_paths),
                       segments=[list(s) for s in segments] if segments else None).save(out_dir)
    return result
