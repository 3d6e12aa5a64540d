"""Latent edits (stage `edit`): the run's EditSpecs (videdit.edits) applied to the encoded latents.

W+ edits (InterFaceGAN directions): edit/latents_<key>.npy = w + s(t) * d on every W+ entry of every frame;
strength 0 gives the unedited latents bit for bit. StyleSpace edits (one channel `s:KEY:CHANNEL`, or a
StyleCLIP text direction) cannot be expressed in W+: edit/styles_<key>.safetensors holds their offsets per
frame ([N, C] per style key) so the smooth stage filters them like any per-frame quantity; render adds them
to the styles of the key's W+ latents (the reconstruction's when the edit has no W+ part). A keyframed
strength s(t) is evaluated at each frame's time before smoothing; a combined edit adds its W+ parts in W+
and its S parts in S. edit/latents_recon.npy is the reconstruction. Edits are applied before smoothing, as
in the published video code.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from videdit import records
from videdit.edits import EditSpec
from videdit.errors import InputError
from videdit.records import RECONSTRUCTION_KEY
from videdit.strengths import FrameTimes, per_frame

__all__ = ["EditResult", "apply_direction", "run_edit"]


@dataclass
class EditResult:
    """latents_paths: key -> its file (latents_<key>.npy, or styles_<key>.safetensors for an S edit); always
    holds "recon" (the unedited latents) first."""

    latents_paths: dict[str, Path] = field(default_factory=dict)
    num_frames: int = 0


def apply_direction(latents: np.ndarray, direction: np.ndarray, strength: float) -> np.ndarray:
    """w + strength * d on every W+ entry (d [w_dim], or [num_ws, w_dim]: a row per entry); strength 0 returns an
    exact copy."""
    latents = np.asarray(latents, dtype=np.float32)
    if strength == 0:
        return latents.copy()
    return (latents + np.float32(strength) * direction.reshape(1, -1, latents.shape[-1])).astype(np.float32)


def run_edit(
    latents_path: str | PathLike,
    out_dir: str | PathLike,
    specs: Sequence[EditSpec],
    *,
    direction: Callable[[str], np.ndarray] | None = None,
    synthesis=None,
    text_files: Mapping[str, str | PathLike] | None = None,
    weights_dir: str | PathLike | None = None,
    times: FrameTimes | None = None,
    person: str | None = None,
) -> EditResult:
    """out_dir/latents_recon.npy, latents_<key>.npy per W+ edit output and styles_<key>.safetensors per S one
    (a combined edit with both kinds of parts writes both: render draws its W+ latents with its S offsets).

    direction: an InterFaceGAN target (name or .npy path) -> float32 [w_dim] (the models' directions); W+
    edits need it. synthesis: the generator's synthesis network (its StyleSpace layout and, for text edits,
    the StyleCLIP arithmetic); S edits need it. text_files: StyleCLIP files given by path ("clip",
    "delta_i_c", "s_stats"); the others come from weights_dir. times: when each frame is shown (keyframed
    strengths need it). person: the person these latents are of (a face track's); edits for another person
    are left out (their output is this person's other edits, or the reconstruction).
    """
    latents = records.load_latents(latents_path)
    n, num_ws, w_dim = latents.shape
    needs_s = any(spec.in_stylespace for spec in specs)
    widths = synthesis.style_widths() if synthesis is not None and needs_s else {}
    vectors: dict[str, np.ndarray] = {}
    s_units: dict[tuple[str, str], dict[str, np.ndarray]] = {}  # (kind, target) -> the offset of strength 1

    def w_vector(leaf: EditSpec) -> np.ndarray:
        if leaf.target not in vectors:
            if direction is None:
                raise InputError(f"edit {leaf.label}: W+ edits need the direction source")
            d = np.asarray(direction(leaf.target), dtype=np.float32)
            d = d.reshape(-1) if d.ndim == 2 and d.shape[0] == 1 else d
            if d.shape not in ((w_dim,), (num_ws, w_dim)) or not np.all(np.isfinite(d)):
                raise InputError(f"edit {leaf.label}: direction must be {w_dim} finite values (or {num_ws} x {w_dim}), "
                                 f"got shape {list(d.shape)}")
            vectors[leaf.target] = d
        return vectors[leaf.target]

    def s_unit(leaf: EditSpec) -> dict[str, np.ndarray]:
        if synthesis is None:
            raise InputError(f"edit {leaf.label}: StyleSpace edits need the generator's synthesis network")
        if (leaf.kind, leaf.target) not in s_units:
            s_units[leaf.kind, leaf.target] = (_channel_unit(leaf, widths) if leaf.kind == "channel" else
                                               _text_unit(leaf, synthesis, text_files or {}, weights_dir))
        return s_units[leaf.kind, leaf.target]

    outputs = []  # (key, W+ latents or None, per-frame S offsets or None)
    for spec in specs:
        for key, strength in spec.keys():
            leaves = spec.leaves() if spec.kind == "combined" else (replace(spec, strengths=(strength,)),)
            mine = [leaf for leaf in leaves if not leaf.person or person is None or leaf.person == person]
            w_parts = [(per_frame(leaf.strengths[0], times, n), w_vector(leaf)) for leaf in mine if leaf.kind == "w"]
            s_parts = [(per_frame(leaf.strengths[0], times, n), s_unit(leaf)) for leaf in mine if leaf.kind != "w"]
            edited = _apply_w(latents, w_parts) if spec.in_wplus else None
            offsets = _sum_s(s_parts, widths, n) if spec.in_stylespace else None
            outputs.append((key, edited, offsets))
    return _write_edits(latents, out_dir, outputs)


def _apply_w(latents: np.ndarray, parts: Sequence[tuple[float | np.ndarray, np.ndarray]]) -> np.ndarray:
    """latents + the sum of strength x direction (strength a number, or one per frame); nothing to add: a copy.
    One constant part is apply_direction (bit for bit what a single edit always gave)."""
    if len(parts) == 1 and np.isscalar(parts[0][0]):
        return apply_direction(latents, parts[0][1], float(parts[0][0]))
    if not parts:
        return np.array(latents, dtype=np.float32, copy=True)
    offset = np.zeros((latents.shape[0], 1, latents.shape[2]), np.float64)
    for strength, d in parts:  # summed in float64, rounded once; d [w_dim] or one row per W+ entry
        offset = offset + np.reshape(np.asarray(strength, np.float64), (-1, 1, 1)) * d.astype(np.float64).reshape(1, -1, latents.shape[2])
    return (latents + offset.astype(np.float32)).astype(np.float32)


def _sum_s(parts: Sequence[tuple[float | np.ndarray, dict]], widths: dict[str, int], n: int) -> dict[str, np.ndarray]:
    """Per-frame S offsets [N, C] per key: the sum of strength x unit offset (zero without parts)."""
    if len(parts) == 1:  # one part: its product in float32, as a single edit always wrote it
        strength, unit = parts[0]
        scale = np.reshape(np.asarray(strength, np.float32), (-1, 1))
        return {k: np.broadcast_to(scale * v.reshape(1, -1), (n, v.size)).astype(np.float32) for k, v in unit.items()}
    out = {k: np.zeros((n, w), np.float64) for k, w in widths.items()}
    for strength, unit in parts:
        scale = np.reshape(np.asarray(strength, np.float64), (-1, 1))
        for k, v in unit.items():
            out[k] += scale * v.reshape(1, -1).astype(np.float64)
    return {k: v.astype(np.float32) for k, v in out.items()}


def _channel_unit(spec: EditSpec, widths: dict[str, int]) -> dict[str, np.ndarray]:
    """A channel edit of strength 1: zero everywhere but the one channel."""
    from videdit.stylespace import parse_channel

    ref = parse_channel(spec.target, widths)
    offset = {name: np.zeros(width, np.float32) for name, width in widths.items()}
    offset[ref.key][ref.channel] = 1.0
    return offset


def _text_unit(spec: EditSpec, synthesis, text_files: Mapping[str, str | PathLike],
               weights_dir: str | PathLike | None) -> dict[str, np.ndarray]:
    """The prompt's StyleCLIP global direction (alpha 1)."""
    from videdit.styleclip import text_edit_direction

    files = {key: Path(path) for key, path in text_files.items()}
    direction = text_edit_direction(spec.target, beta=spec.beta, synthesis=synthesis, weights_dir=weights_dir,
                                    clip_path=files.get("clip"), delta_i_c_path=files.get("delta_i_c"),
                                    s_stats_path=files.get("s_stats"))
    return {name: np.asarray(v, dtype=np.float32).reshape(-1) for name, v in direction.items()}


def _write_edits(latents: np.ndarray, out_dir: str | PathLike,
                 outputs: Sequence[tuple[str, np.ndarray | None, dict | None]]) -> EditResult:
    """outputs: (key, edited W+ latents or None, per-frame S offsets {S key: [N, C]} or None)."""
    import torch

    from videdit.stylespace import save_styles

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = EditResult(num_frames=latents.shape[0])
    recon = records.save_latents(out_dir / records.latents_name(RECONSTRUCTION_KEY), latents)
    result.latents_paths[RECONSTRUCTION_KEY] = recon
    for key, edited, offsets in outputs:
        if edited is not None:
            result.latents_paths[key] = records.save_latents(out_dir / records.latents_name(key), edited)
        if offsets is not None:
            styles = {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in offsets.items()}
            path = save_styles(out_dir / records.styles_name(key), styles)
            result.latents_paths.setdefault(key, path)
    return result
