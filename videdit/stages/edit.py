"""Latent edits (stage `edit`): InterFaceGAN directions in W and StyleSpace channel offsets.

An InterFaceGAN direction d (a (1, 512) or (512,) float array, unit norm as published) moves every
W+ entry: w + s * d. One output per strength; strength 0 gives the unedited latents bit for bit.
Edits are applied before smoothing, as in the published video code.

StyleSpace edits add per-channel offsets to the style vectors (the outputs of each synthesis layer's
`affine`). They cannot be expressed in W+, so the edit stage records them in a JSON sidecar next to
the latents file (`<latents file>.stylespace.json`); smoothing copies the sidecar and rendering applies
the offsets with hooks on the generator (see `stages/render.py`).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np

from videdit.errors import InputError, MissingWeightsError
from videdit import records
from videdit.edits import load_direction
from videdit.records import RECONSTRUCTION_KEY

# Published default strengths per direction (stylegan3-editing's video defaults render the two ends).
DEFAULT_STRENGTHS = {"age": (-4.0, 5.0), "smile": (-2.0, 2.0), "pose": (-4.0, 5.0), "gender": (-2.0, 4.0)}
FALLBACK_STRENGTHS = (-5.0, 5.0)  # the published image-editing range, for user-supplied directions


@dataclass(frozen=True)
class StyleChannel:
    """One StyleSpace offset: `offset` added to channel `channel` of the style vector of `layer`.

    layer: index of the synthesis layer (0 = the first layer after the Fourier input, last = ToRGB) or
    its name (e.g. "L6_148_512"). The offset is in the units of the layer's raw affine output and is
    multiplied by the edit strength.
    """

    layer: int | str
    channel: int
    offset: float = 1.0


@dataclass
class EditSettings:
    """direction: a name (age, smile, pose, gender), a path to a .npy direction, or None/"" for none.
    strengths: one output per value; None or empty = the published endpoints of the direction.
    stylespace: StyleSpace offsets (a list of StyleChannel, or a JSON file with a list of
    {"layer", "channel", "offset"} objects), scaled by each strength; may be combined with a direction.
    """

    direction: str | PathLike | None = None
    strengths: Sequence[float] | None = None
    stylespace: Sequence[StyleChannel] | str | PathLike | None = None


@dataclass
class EditResult:
    """latents_paths: key -> .npy file; always holds "recon" (the unedited latents) first."""

    latents_paths: dict[str, Path] = field(default_factory=dict)
    direction_path: Path | None = None
    num_frames: int = 0


def _looks_like_path(value: str | PathLike) -> bool:
    text = str(value)
    return isinstance(value, PathLike) or text.endswith(".npy") or "/" in text or "\\" in text


def direction_name(direction: str | PathLike) -> str:
    """Short name used in output keys: the name itself, or the file stem without `_boundary`."""
    if not _looks_like_path(direction):
        return str(direction)
    return Path(direction).name.removesuffix(".npy").removesuffix("_boundary")


def locate_direction(direction: str | PathLike, weights_dir: str | PathLike | None) -> Path:
    """The .npy file of a direction given by name (looked up in the weights folder) or by path."""
    if _looks_like_path(direction):
        path = Path(direction).expanduser()
        if not path.is_file():
            raise InputError(f"edit direction file not found: {path}")
        return path
    from videdit import weights

    name = str(direction)
    if name not in weights.EDIT_DIRECTIONS:
        raise InputError(f"unknown edit {name!r}; use one of {', '.join(weights.EDIT_DIRECTIONS)} or a path to a .npy file")
    entry = weights.get(weights.EDIT_DIRECTIONS[name])
    wdir = weights.resolve_weights_dir(weights_dir)
    found = weights.find(entry, wdir)
    if found is None:
        raise MissingWeightsError(
            f"edit {name!r} needs {entry.filename} in {wdir}; get it with `{weights.fetch_command(entry)}`")
    return found


def apply_direction(latents: np.ndarray, direction: np.ndarray, strength: float) -> np.ndarray:
    """w + strength * d on every W+ entry; strength 0 returns an exact copy."""
    latents = np.asarray(latents, dtype=np.float32)
    if strength == 0:
        return latents.copy()
    return (latents + np.float32(strength) * direction.reshape(1, 1, -1)).astype(np.float32)


def strength_label(strength: float) -> str:
    """`+5.0`, `-4.0`, `+0.25`: one decimal when that is exact, otherwise as many as needed."""
    strength = float(strength)
    if round(strength, 1) == strength:
        return f"{strength:+.1f}"
    return f"{strength:+g}"


def load_stylespace(spec: Sequence[StyleChannel] | str | PathLike) -> list[StyleChannel]:
    """StyleSpace offsets from a list or a JSON file; validated."""
    if isinstance(spec, (str, PathLike)):
        try:
            raw = json.loads(Path(spec).read_text())
            spec = [StyleChannel(layer=item["layer"], channel=int(item["channel"]), offset=float(item.get("offset", 1.0)))
                    for item in raw]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"cannot read StyleSpace edit {spec}: {err}") from None
    channels = list(spec)
    for ch in channels:
        if not isinstance(ch.layer, (int, str)) or ch.channel < 0 or not np.isfinite(ch.offset):
            raise InputError(f"bad StyleSpace offset {ch}")
    return channels


def write_keyed_edits(
    latents_path: str | PathLike,
    out_dir: str | PathLike,
    keys: Sequence[tuple[str, float]],
    direction: np.ndarray | str | PathLike | None,
    stylespace: Sequence[StyleChannel] | str | PathLike | None = None,
) -> EditResult:
    """out_dir/latents_<key>.npy for each (key, strength): latents + strength * direction.

    The form the pipeline uses: it names the outputs and loads the direction itself. Strength 0 (or no
    direction) writes the unedited latents bit for bit. StyleSpace offsets, if given, are scaled by each
    non-zero strength and written as the latents file's sidecar.
    """
    styles = load_stylespace(stylespace) if stylespace else []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    latents = np.load(latents_path)
    if latents.ndim != 3:
        raise InputError(f"{latents_path}: latents must be [N, num_ws, w_dim], got {list(latents.shape)}")
    result = EditResult(num_frames=latents.shape[0])
    if direction is not None and not isinstance(direction, np.ndarray):
        result.direction_path = Path(direction)
        direction = load_direction(direction, latents.shape[2])
    elif direction is not None:
        direction = np.asarray(direction, dtype=np.float32).reshape(-1)
        if direction.shape[0] != latents.shape[2] or not np.all(np.isfinite(direction)):
            raise InputError(f"edit direction must be {latents.shape[2]} finite values, got shape {list(direction.shape)}")
    for key, strength in keys:
        if not np.isfinite(float(strength)):
            raise InputError(f"edit strength must be finite, got {strength}")
        path = out_dir / records.latents_name(key)
        edited = latents.copy() if direction is None else apply_direction(latents, direction, float(strength))
        np.save(path, edited)
        if styles and float(strength) != 0:
            _write_style_sidecar(path, styles, float(strength))
        result.latents_paths[key] = path
    return result


def _write_style_sidecar(latents_file: Path, styles: Sequence[StyleChannel], strength: float) -> None:
    offsets = [{"layer": ch.layer, "channel": ch.channel, "offset": ch.offset * strength} for ch in styles]
    records.stylespace_sidecar(latents_file).write_text(json.dumps({"offsets": offsets}, indent=1))


def run_edit(
    latents_path: str | PathLike,
    out_dir: str | PathLike,
    settings: EditSettings | Sequence[tuple[str, float]] | None = None,
    weights_dir: str | PathLike | np.ndarray | None = None,
) -> EditResult:
    """Write out_dir/latents_recon.npy and one latents_<name>_<strength>.npy per strength.

    Also accepts the pipeline's form `run_edit(latents, out_dir, [(key, strength), ...], direction)`
    (see `write_keyed_edits`).
    """
    if settings is not None and not isinstance(settings, EditSettings):
        return write_keyed_edits(latents_path, out_dir, list(settings), weights_dir)
    settings = settings or EditSettings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    latents = np.load(latents_path)
    if latents.ndim != 3:
        raise InputError(f"{latents_path}: latents must be [N, num_ws, w_dim], got {list(latents.shape)}")
    result = EditResult(num_frames=latents.shape[0])

    recon = out_dir / records.latents_name(RECONSTRUCTION_KEY)
    shutil.copyfile(latents_path, recon)
    result.latents_paths[RECONSTRUCTION_KEY] = recon

    has_direction = bool(settings.direction) and str(settings.direction) != ""
    styles = load_stylespace(settings.stylespace) if settings.stylespace else []
    if not has_direction and not styles:
        return result

    direction = None
    if has_direction:
        result.direction_path = locate_direction(settings.direction, weights_dir)
        direction = load_direction(result.direction_path, w_dim=latents.shape[2])
        name = direction_name(settings.direction)
    else:
        name = Path(settings.stylespace).stem if isinstance(settings.stylespace, (str, PathLike)) else "stylespace"

    strengths = list(settings.strengths or DEFAULT_STRENGTHS.get(name, FALLBACK_STRENGTHS))
    for strength in strengths:
        if not np.isfinite(float(strength)):
            raise InputError(f"edit strength must be finite, got {strength}")
        key = f"{name}_{strength_label(strength)}"
        path = out_dir / records.latents_name(key)
        edited = apply_direction(latents, direction, strength) if direction is not None else latents.copy()
        np.save(path, edited)
        if styles:
            _write_style_sidecar(path, styles, float(strength))
        result.latents_paths[key] = path
    return result


# --------------------------------------------------------------------------------------------------
# The pipeline's edit front-end: W+ directions and StyleSpace offsets in one call


def write_edits(latents_path: str | PathLike, out_dir: str | PathLike, w_edits: Sequence[tuple[str, float, np.ndarray]],
                s_edits: Sequence[tuple[str, dict]]) -> EditResult:
    """out_dir/latents_recon.npy, latents_<key>.npy per W+ edit and styles_<key>.safetensors per S edit.

    w_edits: (key, strength, direction [w_dim]); the latents + strength * direction (strength 0: bit for
    bit the reconstruction). s_edits: (key, offset), offset = {S key: tensor [C]} already scaled (alpha *
    StyleCLIP direction, or one channel's strength); written per frame ([N, C]) so the smooth stage
    filters them like any per-frame quantity. Render adds them to the reconstruction's styles.
    """
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
