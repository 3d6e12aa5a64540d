"""Typed settings: every preset section checked against its settings dataclass before any work.

A value is checked against the field's annotation (int, float, bool, str, tuple/list of those, optional)
and against the bounds and choices below; the first problem is one line naming the key, the value and
what is allowed. `resolve_section` returns the settings object with every field filled (defaults
included), so the run folder's settings.toml records the whole configuration, not just the preset.

`resolve_settings` does that for a whole preset, once: the stage sections (their classes live with the
stages and are found through SECTIONS, so reading the names loads no stage), the sections the pipeline
itself reads ([edit], [faces]), the keys it reads from stage sections (the tuner, whether stitching runs,
which networks) and the run-wide keys. Everything after reads the `ResolvedSettings`, never the raw dict.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from videdit.edits import edit_strings, parse_edits
from videdit.strengths import DEFAULT_MAX_STRENGTH, parse_strengths
from videdit.errors import VideditError
# The bounds, choices and checks of every setting (docs/settings.md); PRECISIONS is part of this API.
from videdit.setting_rules import ELEMENT_RULES, PRECISIONS, RULES  # noqa: F401
from videdit.tuning import DEFAULT_TUNER  # the registry's names only: no torch at import


class SettingsError(VideditError):
    """A setting of the wrong type, out of bounds or unknown."""




def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _describe(a) for a in typing.get_args(tp))
    if origin in (tuple, list) or tp in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"a list of {_describe(args[0])}s" if args else "a list"
    return {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}.get(tp, _type_name(tp))


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, value converted to the annotation's type)."""
    if tp is Any:
        return True, value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (value == "" and type(None) in args and str not in args):
            return (type(None) in args), None
        for arg in args:
            if arg is type(None):
                continue
            ok, converted = _coerce(value, arg)
            if ok:
                return True, converted
        return False, value
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False, value
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        out = []
        for item in value:
            ok, converted = _coerce(item, args[0]) if args else (True, item)
            if not ok:
                return False, value
            out.append(converted)
        return True, (tuple(out) if (origin or tp) is tuple else out)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, (list, tuple)) and any(_non_finite(v) for v in value)


def _check_rule(where: str, value: Any, rule: Any) -> None:
    if value is None or rule is None or isinstance(value, bool):
        return
    problem = rule.problem(value)
    if problem:
        raise SettingsError(f"setting {where} = {value!r}: {problem}")


def check_value(section: str, key: str, value: Any, annotation: Any) -> Any:
    """The value converted to its field's type, or one SettingsError line. section "": a run-wide key."""
    where = f"{section}.{key}" if section else key
    ok, converted = _coerce(value, annotation)
    if not ok:
        raise SettingsError(f"setting {where} = {value!r}: expected {_describe(annotation)}")
    if _non_finite(converted):  # NaN passes every comparison, and no setting means anything at infinity
        raise SettingsError(f"setting {where} = {value!r}: must be a finite number")
    _check_rule(where, converted, RULES.get(where))
    if where in ELEMENT_RULES and isinstance(converted, (list, tuple)):
        for item in converted:
            _check_rule(where, item, ELEMENT_RULES[where])
    return converted


def resolve_section(cls: type, values: dict[str, Any], section: str, *, extra_keys: dict[str, Any] | None = None,
                    runtime: dict[str, Any] | None = None):
    """A `cls` instance from a preset section: unknown keys, wrong types and values out of bounds are errors.

    extra_keys: keys the section may hold that are not fields of `cls` (consumed elsewhere), name -> annotation;
    they are checked too. runtime: fields set by the program (device, progress), not from the preset.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    extra_keys = extra_keys or {}
    unknown = sorted(set(values) - names - set(extra_keys))
    if unknown:
        known = ", ".join(sorted(names | set(extra_keys)))
        raise SettingsError(f"unknown setting(s) {', '.join(f'{section}.{k}' for k in unknown)}; known in [{section}]: {known}")
    for key, annotation in extra_keys.items():
        if key in values:
            check_value(section, key, values[key], annotation)
    kwargs = {k: check_value(section, k, v, hints[k]) for k, v in values.items() if k in names}
    for k, v in (runtime or {}).items():
        if k in names:
            kwargs[k] = v
    try:
        return cls(**kwargs)
    except VideditError as err:  # a settings class's own cross-field check
        raise SettingsError(f"[{section}]: {err}") from None


def as_dict(obj: Any) -> dict[str, Any]:
    """A settings object as plain TOML-able values (tuples as lists)."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


# --------------------------------------------------------------------------------------------------
# The pipeline's own settings


@dataclass
class EditOptions:
    """The [edit] section (see videdit.edits): `edits` as on the command line (age, path.npy, text:PROMPT,
    s:KEY:CHANNEL, combined `age:3+smile:1`, per person `p1=age`; docs/edits.md), `direction` one more InterFaceGAN
    edit (the short form), `strengths` for W+ and channel edits, `alpha`/`beta` for text edits (empty/unset: the
    defaults table); strengths are numbers or keyframed ramps ("0@0s,5@10s"), each within +-max_strength.
    clip, delta_i_c, s_stats: files for text edits ("" = the weights registry's)."""

    edits: list[str] = field(default_factory=list)
    direction: str = ""
    strengths: list[float | str] = field(default_factory=list)
    alpha: list[float | str] = field(default_factory=list)
    beta: float | None = None
    max_strength: float = DEFAULT_MAX_STRENGTH
    clip: str = ""
    delta_i_c: str = ""
    s_stats: str = ""

    def __post_init__(self):
        for what, values in (("edit.strengths", self.strengths), ("edit.alpha", self.alpha)):
            parse_strengths(values, 0.0, what, self.max_strength)  # refused even when no edit uses them
        self.specs = parse_edits(edit_strings(dataclasses.asdict(self)), self.strengths, self.alpha, self.beta,
                                 self.max_strength)

    def text_files(self) -> dict[str, str]:
        """The StyleCLIP files given by path: {"clip" | "delta_i_c" | "s_stats": path}."""
        return {key: getattr(self, key) for key in TEXT_EDIT_FILES if getattr(self, key)}


# The files a text edit reads: [edit] key that may name one by path -> its entry in the weights registry.
TEXT_EDIT_FILES = {"clip": "clip_vit_b32", "delta_i_c": "styleclip_delta_i_c", "s_stats": "styleclip_s_stats"}


@dataclass
class FacesOptions:
    """[faces]: whom to edit.

    select "" (default): follow one face through the video with one box, as the published code does
    (smoothing and fill-in still stop at cuts). "main" (the person present in the most frames), "all" or
    labels "p1,p3": every face is tracked within each shot and labelled by identity across shots
    (`videdit faces` lists them); each chosen (person, shot) track gets its own align, encode, tune,
    edit, smooth and render in RUN/tracks/<id>/ (tuning per track: one fixed crop box and one lighting
    per shot), and composite pastes them all. Tracks shorter than min_track_frames pass through unedited.
    """

    select: str = ""
    min_track_frames: int = 10
    landmarks: str = "auto"  # as align's (videdit.face.landmarks.DEFAULT_BACKEND): FAN when cached, else dlib
    full_search_every: int = 1


@dataclass
class RunOptions:
    """Run-wide keys, at the top of a preset (outside any section; `--set precision=fp16` or the flag).

    precision: how the generator runs (videdit.models): fp32 (default), tf32 or fp16 (NVIDIA's mixed
    precision); CUDA only, so on the CPU tf32 and fp16 run fp32 with one warning.
    compile: run the synthesis network through torch.compile (`--compile`); where compilation fails, one
    warning and the run goes on eagerly.
    """

    precision: str = "fp32"
    compile: bool = False  # run the synthesis network through torch.compile (eager, with one warning, where it fails)


RUN_KEYS = tuple(f.name for f in dataclasses.fields(RunOptions))


@dataclass
class EncodeChoice:
    """[encode] keys the pipeline reads: which ReStyle encoder (its checkpoint holds the generator) and an
    optional generator file (.pkl/.pt/.safetensors; "" = the encoder checkpoint's)."""

    encoder: str = "e4e"
    generator: str = ""


@dataclass
class TuneChoice:
    """[tune] tuner: which tuner runs (videdit.tuning.TUNERS); its settings are its own section's."""

    tuner: str = DEFAULT_TUNER


@dataclass
class StitchChoice:
    """[stitch] enabled: whether the optional stitch stage runs between smooth and render."""

    enabled: bool = False


# Preset section -> (module, settings class, the class of the keys the pipeline reads from it, or None).
# Stage classes are named, not imported: reading a preset loads no stage (nor torch).
SECTIONS: dict[str, tuple[str, str, type | None]] = {
    "faces": (__name__, "FacesOptions", None),
    "align": ("videdit.stages.align", "AlignSettings", None),
    "encode": ("videdit.stages.encode", "EncodeSettings", EncodeChoice),
    "tune": ("videdit.tuning.pti", "TuneSettings", TuneChoice),
    "edit": (__name__, "EditOptions", None),
    "smooth": ("videdit.temporal", "SmoothSettings", None),
    "stitch": ("videdit.tuning.stitch", "StitchSettings", StitchChoice),
    "render": ("videdit.stages.render", "RenderSettings", None),
    "composite": ("videdit.stages.composite", "CompositeSettings", None),
    "hyperstyle": ("videdit.tuning.hyperstyle", "HyperStyleSettings", None),
    "local_tweak": ("videdit.tuning.local_tweak", "LocalTweakSettings", None),
}


@dataclass(frozen=True)
class ResolvedSettings:
    """A preset checked and typed, once: what the pipeline reads.

    sections: section -> its settings object (every section of SECTIONS, defaults filled in); choices:
    section -> the pipeline's own keys of that section (EncodeChoice, TuneChoice, StitchChoice); run: the
    run-wide keys; notes: the preset's top-level values as given (its name, description), recorded only.
    """

    sections: dict[str, Any]
    choices: dict[str, Any]
    run: RunOptions
    notes: dict[str, Any]

    @property
    def tuner(self) -> str:
        return self.choices["tune"].tuner

    @property
    def stitch(self) -> bool:
        return self.choices["stitch"].enabled

    @property
    def networks(self) -> EncodeChoice:
        return self.choices["encode"]

    def as_dict(self, models: str) -> dict[str, Any]:
        """Every option of every section, defaults included, and the models' name: what RUN/settings.toml records."""
        out = dict(self.notes, **as_dict(self.run), models=models)
        for section, obj in self.sections.items():
            out[section] = dict(as_dict(obj), **(as_dict(self.choices[section]) if section in self.choices else {}))
        return out


def resolve_settings(settings: dict[str, Any]) -> ResolvedSettings:
    """Every section of a preset dict (presets.load_preset, overrides applied) checked and typed; one
    SettingsError line for the first bad value, whatever stage it belongs to."""
    run = resolve_section(RunOptions, {k: v for k, v in settings.items() if k in RUN_KEYS}, "")
    sections, choices = {}, {}
    for section, (module, name, choice_class) in SECTIONS.items():
        values = settings.get(section, {})
        extra = typing.get_type_hints(choice_class) if choice_class else None  # checked here, kept in `choices`
        sections[section] = resolve_section(getattr(importlib.import_module(module), name), values, section,
                                            extra_keys=extra)
        if choice_class:
            choices[section] = resolve_section(choice_class, {k: v for k, v in values.items() if k in extra}, section)
    if "aligned_size" not in settings.get("align", {}):  # unset: the encoder's input (the aligned crops feed it)
        sections["align"] = dataclasses.replace(sections["align"], aligned_size=sections["encode"].input_size)
    notes = {k: v for k, v in settings.items() if not isinstance(v, dict)}
    return ResolvedSettings(sections, choices, run, notes)
