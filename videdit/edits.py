"""One edit front-end for the CLI, the presets and the Python API.

An edit is written the same way everywhere:

    age | smile | pose | gender | path/to/direction.npy    InterFaceGAN direction in W+ (w + s * d)
    text:a smiling face                                     StyleCLIP global direction in StyleSpace (S + alpha * dS)
    s:L6_148_512:501                                        one StyleSpace channel (S + s on that channel)

`parse_edits` turns the strings (and the strengths / alphas / beta given with them) into `EditSpec`s,
each of which names its outputs (`keys`). Defaults and where each number comes from are in DEFAULTS;
without an explicit strength an edit renders the upper end of its published range, so
`videdit run talk.mp4 --edit age` gives one `talk.age.mp4`; any other strength is in the name (`--strength -4`:
`talk.age-4.mp4`; `--strength -4,5` gives both ends, `talk.age-4.mp4` and `talk.age+5.mp4`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from os import PathLike
from typing import TYPE_CHECKING, Sequence

from videdit.errors import InputError, VideditError

if TYPE_CHECKING:
    import numpy as np

INTERFACEGAN_NAMES = ("age", "smile", "pose", "gender")

# name -> (published range, where it comes from). The upper end is the default strength.
DEFAULT_RANGES: dict[str, tuple[tuple[float, float], str]] = {
    "age": ((-4.0, 5.0), "stylegan3-editing, inversion/video/inference_on_video.py (the video defaults)"),
    "smile": ((-2.0, 2.0), "stylegan3-editing, editing/interfacegan (the synthetic-image editing script)"),
    "pose": ((-4.0, 5.0), "stylegan3-editing, editing/interfacegan (the synthetic-image editing script)"),
    "gender": ((-2.0, 4.0), "stylegan3-editing, editing/interfacegan (the synthetic-image editing script)"),
    "custom .npy direction": ((-5.0, 5.0), "stylegan3-editing's image-editing range for InterFaceGAN directions"),
    "s channel": ((-5.0, 5.0), "videdit's choice (raw S units; the published code has no channel-edit default)"),
}
# StyleCLIP prompts of the published video config -> (alpha, beta); other prompts get TEXT_FALLBACK.
TEXT_DEFAULTS: dict[str, tuple[float, float]] = {
    "a happy face": (4.0, 0.13),
    "a face with hi-top fade hair": (4.0, 0.13),
    "a face with an afro": (4.0, 0.13),
    "a face with a double chin": (4.0, 0.13),
    "a face with a red lipstick": (1.5, 0.13),
    "a tanned face": (3.5, 0.13),
}
TEXT_FALLBACK = (4.0, 0.13)
TEXT_SOURCE = "stylegan3-editing, inversion/video video config (prompts with alpha, beta)"
RECONSTRUCTION_KEY = "recon"


@dataclass(frozen=True)
class EditSpec:
    """One edit. kind: "w" (InterFaceGAN), "text" (StyleCLIP) or "channel" (one S channel).

    target: the direction name or .npy path, the prompt, or "KEY:CHANNEL". strengths: one output per
    value (alpha for text edits). beta: StyleCLIP's channel threshold. label: the output name's stem.
    default: the strength (alpha) used when none is given.
    """

    kind: str
    target: str
    strengths: tuple[float, ...]
    label: str
    beta: float | None = None
    default: float | None = None

    @property
    def in_stylespace(self) -> bool:
        return self.kind in ("text", "channel")

    def keys(self) -> list[tuple[str, float]]:
        """[(output key, strength)]: the label alone for the default strength alone (`age`), label+strength
        otherwise (`age-4`; `age-4`, `age+5` for several), so a name says any strength that was asked for."""
        if len(self.strengths) == 1 and self.strengths[0] == self.default:
            return [(self.label, self.strengths[0])]
        return [(f"{self.label}{s:+g}", s) for s in self.strengths]


def edit_strings(edit: dict) -> list[str]:
    """The edits of an [edit] section: `direction` (if set) first, then `edits`."""
    direction = edit.get("direction") or ""
    return ([direction] if direction else []) + [e for e in (edit.get("edits") or []) if e]


def load_direction(path: str | PathLike, w_dim: int | None = None) -> "np.ndarray":
    """A direction file as float32 [w_dim]; accepts the published (1, 512) and plain (512,) shapes."""
    import numpy as np  # here, not at the top: settings (read by `videdit --help`) parse edits with this module

    try:
        d = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read edit direction {path}: {err}") from None
    if d.ndim == 2 and d.shape[0] == 1:
        d = d[0]
    if d.ndim != 1 or (w_dim is not None and d.shape[0] != w_dim):
        want = f"(1, {w_dim}) or ({w_dim},)" if w_dim else "(1, w_dim) or (w_dim,)"
        raise InputError(f"edit direction {path} has shape {list(np.shape(d))}; expected {want}")
    if not np.issubdtype(d.dtype, np.floating) or not np.all(np.isfinite(d)):
        raise InputError(f"edit direction {path} must hold finite floating-point values")
    return d.astype(np.float32)


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt: 'a smiling face' -> 'a-smiling-face'."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return out[:limit].rstrip("-") or "edit"


def _strengths(values: Sequence[float] | None, default: float, what: str) -> tuple[float, ...]:
    if not values:
        return (float(default),)
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise VideditError(f"{what} must be numbers, got {v!r}") from None
        if f != f or f in (float("inf"), float("-inf")):
            raise VideditError(f"{what} must be finite, got {v!r}")
        out.append(f)
    return tuple(out)


def parse_edit(text: str, strengths: Sequence[float] | None = None, alpha: Sequence[float] | None = None,
               beta: float | None = None) -> EditSpec:
    """One edit string -> EditSpec (see the module docstring); one-line VideditError when it is not one."""
    text = str(text).strip()
    if not text:
        raise VideditError("empty edit: use age, smile, pose, gender, a .npy file, text:PROMPT or s:KEY:CHANNEL")
    if text.startswith("text:"):
        prompt = text[len("text:"):].strip()
        if not prompt:
            raise VideditError("text edit needs a prompt: --edit 'text:a smiling face'")
        default_alpha, default_beta = TEXT_DEFAULTS.get(prompt.lower(), TEXT_FALLBACK)
        b = float(default_beta if beta is None else beta)
        if not 0 <= b < 1:
            raise VideditError(f"--beta must be in [0, 1), got {beta}")
        return EditSpec("text", prompt, _strengths(alpha, default_alpha, "--alpha values"), f"text-{slug(prompt)}", b,
                        float(default_alpha))
    if text.startswith("s:"):
        target = text[len("s:"):].strip()
        key, sep, channel = target.rpartition(":")
        if not sep or not key or not channel.strip().lstrip("-").isdigit():
            raise VideditError(f"channel edit {text!r} must be s:KEY:CHANNEL, e.g. s:L6_148_512:501")
        default = DEFAULT_RANGES["s channel"][0][1]
        return EditSpec("channel", f"{key}:{int(channel)}", _strengths(strengths, default, "--strength values"),
                        f"s-{key}-{int(channel)}", default=float(default))
    if text in INTERFACEGAN_NAMES:
        default = DEFAULT_RANGES[text][0][1]
        return EditSpec("w", text, _strengths(strengths, default, "--strength values"), text, default=float(default))
    if text.endswith(".npy") or "/" in text or "\\" in text:
        default = DEFAULT_RANGES["custom .npy direction"][0][1]
        label = Path(text).name.removesuffix(".npy").removesuffix("_boundary")
        return EditSpec("w", text, _strengths(strengths, default, "--strength values"), slug(label),
                        default=float(default))
    raise VideditError(f"unknown edit {text!r}: use {', '.join(INTERFACEGAN_NAMES)}, a .npy file, "
                       "text:PROMPT or s:KEY:CHANNEL")


def parse_edits(edits: Sequence[str], strengths: Sequence[float] | None = None, alpha: Sequence[float] | None = None,
                beta: float | None = None) -> list[EditSpec]:
    """Every edit of a run; output keys must be unique."""
    specs = [parse_edit(e, strengths, alpha, beta) for e in edits if str(e).strip()]
    keys = [k for spec in specs for k, _ in spec.keys()]
    duplicate = sorted({k for k in keys if keys.count(k) > 1} | ({RECONSTRUCTION_KEY} & set(keys)))
    if duplicate:
        raise VideditError(f"two edits would write the same output {duplicate[0]!r}; give them different targets")
    return specs


def defaults_table() -> str:
    """The default strengths with their sources, as a markdown table (docs and `videdit edits`)."""
    rows = ["| edit | range (default = upper end) | source |", "|---|---|---|"]
    for name, ((low, high), source) in DEFAULT_RANGES.items():
        rows.append(f"| {name} | {low:g} .. {high:g} | {source} |")
    for prompt, (a, b) in TEXT_DEFAULTS.items():
        rows.append(f"| text:{prompt} | alpha {a:g}, beta {b:g} | {TEXT_SOURCE} |")
    rows.append(f"| text:(other prompts) | alpha {TEXT_FALLBACK[0]:g}, beta {TEXT_FALLBACK[1]:g} | videdit's choice, "
                "the published prompts' common values |")
    return "\n".join(rows)
