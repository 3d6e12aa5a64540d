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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from os import PathLike
from typing import TYPE_CHECKING, Sequence

from videdit.errors import InputError, VideditError
from videdit.strengths import DEFAULT_MAX_STRENGTH, Ramp, Strength, check_bound, parse_strength, parse_strengths, strength_name

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
_PERSON = re.compile(r"^\s*(?P<person>[pP]\d+)\s*=(?P<edit>.*)$", re.S)
_PLUS = re.compile(r"\+(?!\.?\d)")
_STRENGTH_TEXT = re.compile(r"^[-+]?(?:\d|\.\d)[^:]*$")


@dataclass(frozen=True)
class EditSpec:
    """One edit. kind: "w" (InterFaceGAN), "text" (StyleCLIP), "channel" (one S channel) or "combined" (several
    edits in one output: `parts`, each with one strength).

    target: the direction name or .npy path, the prompt, "KEY:CHANNEL", or a combined edit's text. strengths:
    one output per value (alpha for text edits), each a number or a keyframed Ramp (videdit.strengths).
    beta: StyleCLIP's channel threshold. label: the output name's stem. person: the person label (`p1`) the edit
    is for, "" for everyone chosen (a combined edit's parts carry their own). default: the strength (alpha)
    used when none is given: an output at the default is named by the label alone.
    """

    kind: str
    target: str
    strengths: tuple[Strength, ...]
    label: str
    beta: float | None = None
    person: str = ""
    parts: tuple["EditSpec", ...] = ()
    default: float | None = None

    @property
    def in_stylespace(self) -> bool:
        """Whether the edit writes StyleSpace offsets (a text or channel edit, or a combination with one)."""
        return any(p.kind in ("text", "channel") for p in self.leaves())

    @property
    def in_wplus(self) -> bool:
        """Whether the edit writes W+ latents (an InterFaceGAN edit, or a combination with one)."""
        return any(p.kind == "w" for p in self.leaves())

    def leaves(self) -> tuple["EditSpec", ...]:
        """The single edits it is made of: its parts, or itself."""
        return self.parts if self.kind == "combined" else (self,)

    def people(self) -> set[str]:
        """The person labels its edits name (empty: everyone's)."""
        return {p.person for p in self.leaves() if p.person}

    def cache_params(self) -> dict:
        """What the edit stage's cache key holds of this edit: its fields, less person and parts when empty (the
        keys of run folders made before they existed stay valid)."""
        params = asdict(self)
        return {k: v for k, v in params.items() if v or k not in ("person", "parts")}

    def has_ramp(self) -> bool:
        return any(isinstance(s, Ramp) for p in self.leaves() for s in p.strengths)

    def keys(self) -> list[tuple[str, Strength | None]]:
        """[(output key, strength)]: the label alone for the default strength alone, label+strength otherwise
        (`age-4`; `age-4`, `age+5` for several; a ramp's `age-0to5`), so a name says any strength that was asked
        for; a combined edit has one output and no strength of its own (None)."""
        if self.kind == "combined":
            return [(self.label, None)]
        if len(self.strengths) == 1 and not isinstance(self.strengths[0], Ramp) and self.strengths[0] == self.default:
            return [(self.label, self.strengths[0])]
        return [(f"{self.label}-{s.name()}" if isinstance(s, Ramp) else f"{self.label}{s:+g}", s) for s in self.strengths]


def single_edits(specs: Sequence[EditSpec]) -> list[EditSpec]:
    """Every single edit of a run (a combined edit's parts), each once: what needs a direction or StyleCLIP files."""
    out: list[EditSpec] = []
    for leaf in (leaf for spec in specs for leaf in spec.leaves()):
        if not any(o.kind == leaf.kind and o.target == leaf.target for o in out):
            out.append(leaf)
    return out


def check_people(specs: Sequence[EditSpec], chosen: Sequence[str] | None, known: Sequence[str] = ()) -> None:
    """One line when an edit names a person (`p2=age`) who is not there or not chosen; chosen None: the run follows
    one face (no `--faces`), where no edit may name a person."""
    named = sorted({p for spec in specs for p in spec.people()}, key=lambda p: (len(p), p))
    if not named:
        return
    if chosen is None:
        raise VideditError(f"the edit for {named[0]} needs --faces (e.g. --faces {','.join(named)}): without it a run "
                           "follows one face")
    unknown = [p for p in named if known and p not in known]
    if unknown:
        raise VideditError(f"edit for {unknown[0]}: no such person in this video (people: {', '.join(known) or 'none'}; "
                           "see `videdit faces`)")
    missing = [p for p in named if p not in chosen]
    if missing:
        raise VideditError(f"edit for {missing[0]}, who is not chosen (--faces chose {', '.join(chosen)}); "
                           f"add {missing[0]} to --faces")


def edit_strings(edit: dict) -> list[str]:
    """The edits of an [edit] section: `direction` (if set) first, then `edits`."""
    direction = edit.get("direction") or ""
    return ([direction] if direction else []) + [e for e in (edit.get("edits") or []) if e]


def load_direction(path: str | PathLike, w_dim: int | None = None) -> "np.ndarray":
    """A direction file as float32 [w_dim] (the published (1, 512) and plain (512,) shapes), or [num_ws, w_dim]: one
    row per W+ entry (`videdit directions fit --space wplus`)."""
    import numpy as np  # here, not at the top: settings (read by `videdit --help`) parse edits with this module

    try:
        d = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read edit direction {path}: {err}") from None
    if d.ndim == 2 and d.shape[0] == 1:
        d = d[0]
    if d.ndim not in (1, 2) or (w_dim is not None and d.shape[-1] != w_dim):
        want = f"(1, {w_dim}), ({w_dim},) or (num_ws, {w_dim})" if w_dim else "(1, w_dim), (w_dim,) or (num_ws, w_dim)"
        raise InputError(f"edit direction {path} has shape {list(np.shape(d))}; expected {want}")
    if not np.issubdtype(d.dtype, np.floating) or not np.all(np.isfinite(d)):
        raise InputError(f"edit direction {path} must hold finite floating-point values")
    return d.astype(np.float32)


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt: 'a smiling face' -> 'a-smiling-face'. Other scripts keep their
    letters (no transliteration) and get a short hash of the prompt, so names stay distinct and readable:
    'улыбка' -> 'улыбка-<6 hex>' (file systems may normalise such names; the hash keeps them apart)."""
    import hashlib
    import unicodedata

    out = re.sub(r"[\W_]+", "-", unicodedata.normalize("NFKC", text).lower()).strip("-")[:limit].rstrip("-")
    if out and out.isascii():
        return out
    return f"{out or 'edit'}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def _default_strength(kind: str, target: str) -> tuple[float, float | None]:
    """(default strength or alpha, default beta) of one edit."""
    if kind == "text":
        return TEXT_DEFAULTS.get(target.lower(), TEXT_FALLBACK)
    if kind == "channel":
        return DEFAULT_RANGES["s channel"][0][1], None
    if target in INTERFACEGAN_NAMES:
        return DEFAULT_RANGES[target][0][1], None
    return DEFAULT_RANGES["custom .npy direction"][0][1], None


def _inline_strength(text: str) -> tuple[str, str | None]:
    """`age:3` -> ("age", "3"); `s:KEY:CH:0@0s,5@1s` -> ("s:KEY:CH", "0@0s,5@1s"); no trailing strength: (text, None).
    A channel edit's own CHANNEL is not a strength; a prompt that ends in `:NUMBER` is read as alpha."""
    head, sep, tail = text.rpartition(":")
    if not sep or not head or not _STRENGTH_TEXT.match(tail.strip()):
        return text, None
    if head.startswith("s:") and head.count(":") < 2:  # s:KEY:CHANNEL with nothing after the channel
        return text, None
    if head in ("s", "text"):
        return text, None
    return head, tail.strip()


def _target(text: str) -> tuple[str, str, str]:
    """An edit without strength -> (kind, target, label)."""
    if text.startswith("text:"):
        prompt = text[len("text:"):].strip()
        if not prompt:
            raise VideditError("text edit needs a prompt: --edit 'text:a smiling face'")
        return "text", prompt, f"text-{slug(prompt)}"
    if text.startswith("s:"):
        key, sep, channel = text[len("s:"):].strip().rpartition(":")
        if not sep or not key or not channel.strip().lstrip("-").isdigit():
            raise VideditError(f"channel edit {text!r} must be s:KEY:CHANNEL, e.g. s:L6_148_512:501")
        return "channel", f"{key}:{int(channel)}", f"s-{key}-{int(channel)}"
    if text in INTERFACEGAN_NAMES:
        return "w", text, text
    if text.endswith(".npy") or "/" in text or "\\" in text:
        return "w", text, slug(Path(text).name.removesuffix(".npy").removesuffix("_boundary"))
    raise VideditError(f"unknown edit {text!r}: use {', '.join(INTERFACEGAN_NAMES)}, a .npy file, "
                       "text:PROMPT or s:KEY:CHANNEL (several: 'age:3+smile:1'; per person: 'p1=age')")


def _single(text: str, strengths, alpha, beta, bound: float) -> EditSpec:
    """One edit (no `+`): the kind, target and label from the text, strengths from an inline `:STRENGTH` (its
    value goes into the label: `age3`), else from the option's list, else the default."""
    text, inline = _inline_strength(text.strip())
    kind, target, label = _target(text)
    default, default_beta = _default_strength(kind, target)
    what = "--alpha" if kind == "text" else "--strength"
    b = None
    if kind == "text":
        b = float(default_beta if beta is None else beta)
        if not 0 <= b < 1:
            raise VideditError(f"--beta must be in [0, 1), got {beta}")
    if inline is not None:
        value = parse_strength(inline, f"{label}'s strength", bound)
        return EditSpec(kind, target, (value,), named(label, value), b, default=value)
    values = alpha if kind == "text" else strengths
    return EditSpec(kind, target, parse_strengths(values, default, f"{what} values", bound), label, b,
                    default=float(default))


def named(label: str, strength: Strength) -> str:
    """An edit's label with its strength, as a combined output names its parts: `age3`, `age0to5`,
    `s-L6_148_512-501_2` (an underscore where the label's digits would run into the strength's)."""
    value = strength_name(strength)
    return f"{label}_{value}" if label[-1:].isdigit() and value[:1].isdigit() else f"{label}{value}"


def _split_parts(text: str) -> list[str]:
    """`age:3+smile:1` -> ["age:3", "smile:1"]: a `+` before a digit (or `.digit`) is a number's sign."""
    return _PLUS.split(text)


def parse_edit(text: str, strengths: Sequence | None = None, alpha: Sequence | None = None,
               beta: float | None = None, max_strength: float = DEFAULT_MAX_STRENGTH) -> EditSpec:
    """One edit string -> EditSpec (see the module docstring); one-line VideditError when it is not one.

    strengths / alpha: numbers or ramp texts (videdit.strengths), one output each; each must be finite and within
    +-max_strength."""
    bound = check_bound(max_strength)
    text = str(text).strip()
    person = ""
    m = _PERSON.match(text)
    if m:
        person, text = m["person"].lower(), m["edit"].strip()
    if not text:
        raise VideditError("empty edit: use age, smile, pose, gender, a .npy file, text:PROMPT or s:KEY:CHANNEL")
    pieces = _split_parts(text)
    if len(pieces) == 1:
        return replace(_single(text, strengths, alpha, beta, bound), person=person)
    if any(not p.strip() for p in pieces):
        raise VideditError(f"combined edit {text!r}: an empty part; write e.g. 'age:3+smile:1'")
    for values, what in ((strengths, "--strength"), (alpha, "--alpha")):
        if values and len(values) > 1:
            raise VideditError(f"combined edit {text!r} makes one output: give each part its own strength "
                               f"('age:3+smile:1') instead of several {what} values")
    parts = tuple(replace(_single(p, strengths, alpha, beta, bound), person=person) for p in pieces)
    return _combine(parts, text)


def _base_label(part: EditSpec) -> str:
    """A single edit's label without an inline strength."""
    return _target({"text": "text:", "channel": "s:"}.get(part.kind, "") + part.target)[2]


def _combine(parts: Sequence[EditSpec], text: str) -> EditSpec:
    """Several single-strength edits as one output: W+ parts added in W+, S parts in S."""
    leaves = tuple(replace(p, label=_base_label(p)) for p in parts)
    label = "+".join(f"{p.person}-" * bool(p.person) + named(p.label, p.strengths[0]) for p in leaves)
    return EditSpec("combined", text, (), label, parts=leaves)


def parse_edits(edits: Sequence[str], strengths: Sequence | None = None, alpha: Sequence | None = None,
                beta: float | None = None, max_strength: float = DEFAULT_MAX_STRENGTH) -> list[EditSpec]:
    """Every edit of a run; output keys must be unique. With any per-person edit (`p1=age`), the run's edits
    make one output together: each person gets the edits named for them plus those without a person."""
    specs = [parse_edit(e, strengths, alpha, beta, max_strength) for e in edits if str(e).strip()]
    if any(spec.people() for spec in specs):
        several = [spec for spec in specs if len(spec.keys()) > 1]
        if several:
            raise VideditError(f"per-person edits make one output together: give {several[0].label} one strength "
                               "(e.g. 'p1=age:3')")
        parts = [leaf for spec in specs for leaf in spec.leaves()]
        specs = [_combine(parts, " ".join(str(e) for e in edits))]
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
