"""Stage `stitch` (optional, between smooth and render): STIT stitching tuning of the tuned generator.

For every key (edit), a copy of tune/generator.safetensors is tuned so that its renders of the smoothed
latents agree with the source crop just outside the face and keep the edit inside it
(`videdit.tuning.stitch`). Writes stitch/generator_<key>.safetensors (the generator render uses for that
key) and stitch/stitch.json. It renders nothing: render reads these generators, composite only composites.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from videdit.device import resolve_device
from videdit.errors import InputError
from videdit.records import (GENERATOR, UNALIGNED, AlignRecord, StitchInfo, TransformsRecord, latents_keys, latents_name,
                             load_latents)
from videdit.tuning.data import CropFrames, inverse_transforms, private_generator
from videdit.tuning.stitch import StitchSettings, landmarks_in_crop, stitch_tune, stitched_generator_name

__all__ = ["StitchSettings", "StitchStageResult", "run_stitch", "stitch_cache_params", "stitched_generator_name"]


@dataclass
class StitchStageResult:
    generators: dict[str, Path] = field(default_factory=dict)  # key -> stitch/generator_<key>.safetensors
    losses: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # key -> per-step losses
    seconds: float = 0.0


def stitch_cache_params(settings: StitchSettings) -> dict:
    """The settings that determine the stitched generators (the stage's cache key)."""
    return {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("device", "progress")}


def run_stitch(
    align_dir: str | PathLike,
    smooth_dir: str | PathLike,
    tune_dir: str | PathLike | None,
    out_dir: str | PathLike,
    settings: StitchSettings | None = None,
    keys: Sequence[str] | None = None,
    *,
    generator=None,
    loss: Callable | None = None,
) -> StitchStageResult:
    """Stitching-tune the tuned generator for each key; write out_dir/generator_<key>.safetensors.

    align_dir: unaligned crops (the targets), landmarks, the box and face_found. smooth_dir:
    latents_<key>.npy and the smoothed transforms render will use. tune_dir: its generator.safetensors
    is the one tuned (`generator`, a module or checkpoint path, overrides it). keys: None = every
    latents file of smooth_dir. Frames without a face are not tuned on; with none, the generator is
    written unchanged.
    """
    from videdit.checkpoints import save_generator

    t_start = time.perf_counter()
    settings = settings or StitchSettings()
    align_dir, smooth_dir, out_dir = Path(align_dir), Path(smooth_dir), Path(out_dir)
    if generator is None:
        if tune_dir is None:
            raise InputError(f"stitch: needs the tune folder (its {GENERATOR}) or a generator")
        generator = Path(tune_dir) / GENERATOR
        if not generator.is_file():
            raise InputError(f"stitch: {generator} is missing (run the tune stage first)")
    device = resolve_device(settings.device)
    align = AlignRecord.load(align_dir).require("landmarks")
    inv = inverse_transforms(TransformsRecord.load(smooth_dir).matrix)
    n = align.n_frames
    if len(inv) != n:
        raise InputError(f"stitch: {n} aligned frames but {len(inv)} smoothed transforms")
    keys = list(keys) if keys is not None else latents_keys(smooth_dir)
    if not keys:
        raise InputError(f"stitch: no latents_<key>.npy in {smooth_dir}")
    G = private_generator(generator, device)
    resolution = int(G.img_resolution)
    crops = CropFrames(align_dir / UNALIGNED, n, resolution)
    landmarks_crop = landmarks_in_crop(align.landmarks, align.frame_boxes(), resolution)
    frames = np.flatnonzero(align.face_found)
    out_dir.mkdir(parents=True, exist_ok=True)

    result = StitchStageResult()
    for key in keys:
        ws = load_latents(smooth_dir / latents_name(key), mmap=True, num_frames=n)
        tuned = G
        if len(frames) > 0:
            tuning = stitch_tune(G, ws, inv, lambda idx: crops.batch(idx, device), landmarks_crop, settings,
                                 loss=loss, frames=frames, device=device)
            tuned, result.losses[key] = tuning.generator, tuning.losses
        result.generators[key] = save_generator(tuned, out_dir / stitched_generator_name(key))
        del tuned
    StitchInfo(keys=keys, settings=stitch_cache_params(settings), frames_tuned_on=int(len(frames)),
               generators={k: p.name for k, p in result.generators.items()}, losses=result.losses).save(out_dir)
    result.seconds = time.perf_counter() - t_start
    return result
