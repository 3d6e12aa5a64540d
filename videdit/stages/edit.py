"""Latent edits (stage `edit`): the run's EditSpecs (videdit.edits) applied to the encoded latents.

W+ edits (InterFaceGAN directions): edit/latents_<key>.npy = w + s * d on every W+ entry of every frame;
strength 0 gives the unedited latents bit for bit. StyleSpace edits (one channel `s:KEY:CHANNEL`, or a
StyleCLIP text direction) cannot be expressed in W+: edit/styles_<key>.safetensors holds their offsets per
frame ([N, C] per style key, the same every frame here) so the smooth stage filters them like any
per-frame quantity; render adds them to the reconstruction's styles. edit/latents_recon.npy is the
reconstruction. Edits are applied before smoothing, as in the published video code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from videdit import records
from videdit.edits import EditSpec
from videdit.errors import InputError
from videdit.records import RECONSTRUCTION_KEY

__all__ = ["EditResult", "apply_direction", "run_edit"]


@dataclass
class EditResult:
    """latents_paths: key -> its file (latents_<key>.npy, or styles_<key>.safetensors for an S edit); always
    holds "recon" (the unedited latents) first."""

    latents_paths: dict[str, Path] = field(default_factory=dict)
    num_frames: int = 0


def apply_direction(latents: np.ndarray, direction: np.ndarray, strength: float) -> np.ndarray:
    """w + strength * d on every W+ entry; strength 0 returns an exact copy."""
    latents = np.asarray(latents, dtype=np.float32)
    if strength == 0:
        return latents.copy()
    return (latents + np.float32(strength) * direction.reshape(1, 1, -1)).astype(np.float32)


def run_edit(
    latents_path: str | PathLike,
    out_dir: str | PathLike,
    specs: Sequence[EditSpec],
    *,
    direction: Callable[[str], np.ndarray] | None = None,
    synthesis=None,
    text_files: Mapping[str, str | PathLike] | None = None,
    weights_dir: str | PathLike | None = None,
) -> EditResult:
    """out_dir/latents_recon.npy, latents_<key>.npy per W+ edit output and styles_<key>.safetensors per S one.

    direction: an InterFaceGAN target (name or .npy path) -> float32 [w_dim] (the models' directions); W+
    edits need it. synthesis: the generator's synthesis network (its StyleSpace layout and, for text edits,
    the StyleCLIP arithmetic); S edits need it. text_files: StyleCLIP files given by path ("clip",
    "delta_i_c", "s_stats"); the others come from weights_dir.
    """
    w_edits, s_edits = [], []
    widths = synthesis.style_widths() if synthesis is not None and any(spec.in_stylespace for spec in specs) else {}
    for spec in specs:
        if spec.kind == "w":
            if direction is None:
                raise InputError(f"edit {spec.label}: W+ edits need the direction source")
            vector = direction(spec.target)
            w_edits += [(key, strength, vector) for key, strength in spec.keys()]
        elif synthesis is None:
            raise InputError(f"edit {spec.label}: StyleSpace edits need the generator's synthesis network")
        elif spec.kind == "channel":
            s_edits += _channel_offsets(spec, widths)
        else:
            s_edits += _text_offsets(spec, synthesis, text_files or {}, weights_dir)
    return _write_edits(latents_path, out_dir, w_edits, s_edits)


def _channel_offsets(spec: EditSpec, widths: dict[str, int]) -> list[tuple[str, dict]]:
    """(key, offset) per strength: zero everywhere but the one channel, which moves by the strength."""
    from videdit.stylespace import parse_channel

    ref = parse_channel(spec.target, widths)
    out = []
    for key, strength in spec.keys():
        offset = {name: np.zeros(width, np.float32) for name, width in widths.items()}
        offset[ref.key][ref.channel] = strength
        out.append((key, offset))
    return out


def _text_offsets(spec: EditSpec, synthesis, text_files: Mapping[str, str | PathLike],
                  weights_dir: str | PathLike | None) -> list[tuple[str, dict]]:
    """(key, alpha * the prompt's StyleCLIP global direction) per alpha."""
    from videdit.styleclip import text_edit_direction

    files = {key: Path(path) for key, path in text_files.items()}
    direction = text_edit_direction(spec.target, beta=spec.beta, synthesis=synthesis, weights_dir=weights_dir,
                                    clip_path=files.get("clip"), delta_i_c_path=files.get("delta_i_c"),
                                    s_stats_path=files.get("s_stats"))
    return [(key, {name: alpha * v.reshape(-1) for name, v in direction.items()}) for key, alpha in spec.keys()]


def _write_edits(latents_path: str | PathLike, out_dir: str | PathLike,
                 w_edits: Sequence[tuple[str, float, np.ndarray]], s_edits: Sequence[tuple[str, dict]]) -> EditResult:
    """w_edits: (key, strength, direction [w_dim]); s_edits: (key, offset), offset = {S key: [C]} already
    scaled, written per frame ([N, C])."""
    import torch

    from videdit.stylespace import save_styles

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    latents = records.load_latents(latents_path)
    result = EditResult(num_frames=latents.shape[0])
    recon = records.save_latents(out_dir / records.latents_name(RECONSTRUCTION_KEY), latents)
    result.latents_paths[RECONSTRUCTION_KEY] = recon
    for key, strength, direction in w_edits:
        direction = np.asarray(direction, dtype=np.float32).reshape(-1)
        if direction.shape[0] != latents.shape[2] or not np.all(np.isfinite(direction)):
            raise InputError(f"edit {key}: direction must be {latents.shape[2]} finite values, got shape {list(direction.shape)}")
        path = records.save_latents(out_dir / records.latents_name(key), apply_direction(latents, direction, float(strength)))
        result.latents_paths[key] = path
    n = latents.shape[0]
    for key, offset in s_edits:
        per_frame = {name: torch.as_tensor(value, dtype=torch.float32).reshape(1, -1).expand(n, -1).contiguous()
                     for name, value in offset.items()}
        result.latents_paths[key] = save_styles(out_dir / records.styles_name(key), per_frame)
    return result
