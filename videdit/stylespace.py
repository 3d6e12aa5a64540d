"""StyleSpace (S) helpers: the per-layer styles of a StyleGAN3 generator as a dict of tensors.

S is what `G.synthesis.w_to_s(ws)` returns (stylegan3-editing's W2S): key `input` [N, 4] is the normalised
(r_c, r_s, t_x, t_y) of the Fourier input, then one key per synthesis layer in layer order (`L0_36_512`,
..., the ToRGB layer last), [N, in_channels] each, in the units the layer's modulated conv uses (the ToRGB
entry already includes its weight gain). `G.synthesis(None, transform=T, styles=S)` renders it.

Everything here works on plain dicts so that stages can pass S between them; nothing edits in place.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from videdit.errors import CheckpointError, VideditError

__all__ = [
    "ChannelRef", "check_styles", "parse_channel", "apply_channel_edit", "apply_styleclip",
    "stack_styles", "unstack_styles", "save_styles", "load_styles",
]

# safetensors stores tensors sorted by name; the S key order (L2 before L10) lives in this metadata entry.
_ORDER_KEY = "videdit.stylespace.keys"

Styles = dict[str, torch.Tensor]


def _ranges(widths: Mapping[str, int]) -> str:
    return ", ".join(f"{key} (0-{width - 1})" for key, width in widths.items())


@dataclass(frozen=True)
class ChannelRef:
    """One StyleSpace channel: `key` (an S key) and `channel` (index within it)."""

    key: str
    channel: int

    def __str__(self) -> str:
        return f"{self.key}:{self.channel}"


def parse_channel(spec: str, widths: Mapping[str, int]) -> ChannelRef:
    """'L6_148_512:501' -> ChannelRef, checked against `widths` (`G.synthesis.style_widths()`); one-line VideditError if bad."""
    key, sep, index = str(spec).strip().rpartition(":")
    if not sep or not key:
        raise VideditError(f"channel edit {spec!r} must be KEY:CHANNEL, e.g. {next(iter(widths))}:0")
    if key not in widths:
        raise VideditError(f"unknown StyleSpace layer {key!r} in {spec!r}; valid: {_ranges(widths)}")
    try:
        channel = int(index)
    except ValueError:
        raise VideditError(f"channel {index!r} in {spec!r} is not an integer (valid for {key}: 0-{widths[key] - 1})") from None
    if not 0 <= channel < widths[key]:
        raise VideditError(f"channel {channel} out of range for {key} (valid: 0-{widths[key] - 1})")
    return ChannelRef(key, channel)


def check_styles(styles: Mapping[str, torch.Tensor], widths: Mapping[str, int], what: str = "styles") -> None:
    """One-line VideditError unless `styles` has exactly the keys of `widths` with [N, width] tensors, one N."""
    if not isinstance(styles, Mapping):
        raise VideditError(f"{what} must be a dict of tensors keyed like the generator's StyleSpace, got {type(styles).__name__}")
    if set(styles) != set(widths):
        missing = [k for k in widths if k not in styles]
        extra = [k for k in styles if k not in widths]
        raise VideditError(f"{what} do not match the generator's StyleSpace: missing {missing}, unexpected {extra}")
    batch = {tuple(styles[k].shape[:-1]) for k in widths}
    for key, width in widths.items():
        shape = tuple(styles[key].shape)
        if len(shape) != 2 or shape[1] != width:
            raise VideditError(f"{what}[{key!r}] has shape {list(shape)}; expected [N, {width}]")
    if len(batch) != 1:
        raise VideditError(f"{what} have different frame counts per key: {sorted(n for (n,) in batch)}")


def apply_channel_edit(styles: Styles, ref: ChannelRef, strength: float) -> Styles:
    """S with `strength` added to one channel (every frame). Raw S units; the rest is shared, not copied."""
    if ref.key not in styles or not 0 <= ref.channel < styles[ref.key].shape[-1]:
        raise VideditError(f"channel {ref} is not in these styles")
    edited = dict(styles)
    column = torch.zeros_like(styles[ref.key])
    column[..., ref.channel] = strength
    edited[ref.key] = styles[ref.key] + column
    return edited


def apply_styleclip(styles: Styles, direction: Mapping[str, torch.Tensor], alpha: float) -> Styles:
    """S + alpha * direction, key by key (direction entries [C] or [1, C], as `styleclip_direction` gives)."""
    if set(direction) != set(styles):
        raise VideditError(f"direction keys {list(direction)} do not match the styles' keys {list(styles)}")
    edited = {}
    for key, value in styles.items():
        step = torch.as_tensor(direction[key], dtype=value.dtype, device=value.device)
        if step.shape[-1] != value.shape[-1]:
            raise VideditError(f"direction[{key!r}] has {step.shape[-1]} channels; the styles have {value.shape[-1]}")
        edited[key] = value + alpha * step
    return edited


def stack_styles(frames: Sequence[Mapping[str, torch.Tensor]]) -> Styles:
    """A list of per-frame S ([C] or [1, C] entries) -> one batched S ([N, C] entries), key order kept."""
    if not frames:
        raise VideditError("no styles to stack")
    keys = list(frames[0])
    for index, frame in enumerate(frames):
        if list(frame) != keys:
            raise VideditError(f"styles of frame {index} have keys {list(frame)}; frame 0 has {keys}")
    return {key: torch.cat([frame[key].reshape(-1, frame[key].shape[-1]) for frame in frames]) for key in keys}


def unstack_styles(styles: Mapping[str, torch.Tensor]) -> list[Styles]:
    """Batched S -> one S per frame, each entry [1, C] (ready for `synthesis(None, styles=...)`)."""
    count = next(iter(styles.values())).shape[0]
    return [{key: value[index:index + 1] for key, value in styles.items()} for index in range(count)]


def save_styles(path: str | Path, styles: Mapping[str, torch.Tensor]) -> Path:
    """Per-frame S to a .safetensors file (flat keys, float32, key order kept in metadata); atomic write."""
    from videdit.fileio import save_safetensors

    path = Path(path)
    keys = list(styles)
    tensors = {key: styles[key].detach().to("cpu", torch.float32).contiguous() for key in keys}

    return save_safetensors(tensors, path, {_ORDER_KEY: json.dumps(keys)})


def load_styles(path: str | Path, widths: Mapping[str, int] | None = None) -> Styles:
    """S saved by `save_styles`, in its saved key order; checked against `widths` when given."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise VideditError(f"styles file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            keys = json.loads(meta[_ORDER_KEY]) if _ORDER_KEY in meta else list(handle.keys())
            if sorted(keys) != sorted(handle.keys()):
                raise CheckpointError(f"{path}: the stored key order does not list the file's tensors")
            styles = {key: handle.get_tensor(key) for key in keys}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable styles file ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    if widths is not None:
        check_styles(styles, widths, what=str(path))
    return styles
