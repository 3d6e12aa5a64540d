"""Everything that can be checked before the first stage is (issue 28): every setting of every section, enumerated
from the schema itself, refused up front with one line naming it when it has the wrong type, is NaN or infinite,
or is out of its documented bounds; and the checks that need the source or the generator's header run before
any stage folder exists."""
from __future__ import annotations

import dataclasses
import importlib
import math
import types
import typing
from pathlib import Path

import pytest

from videdit.errors import VideditError
from videdit.layout import STAGE_ORDER
from videdit.setting_rules import ELEMENT_RULES, RULES, Check, Choice, Range, bounds_table
from videdit.settings import SECTIONS, RunOptions

REPO = Path(__file__).resolve().parents[1]
SMALL = {"align.crop_size": 64, "encode.n_iters": 1, "encode.batch_size": 4}

# A value each kind of string check must refuse (the checks themselves are in videdit.setting_rules).
BAD_STRINGS = {"DEVICE": "gpu7", "FILE": "/no/such/file.pt", "FOLDER": "/no/such/folder", "FRAME_RATE": "fast",
               "PEOPLE": "everybody", "ENCODER_PRESET": "warp9", "PIX_FMT": "nosuch", "EDIT": "nosuch"}
RULE_NAMES = {id(value): name for name, value in vars(importlib.import_module("videdit.setting_rules")).items()
              if isinstance(value, Check)}


def _schema():
    """(dotted key, annotation) of every setting: each field of each section's class and of the class of the keys the
    pipeline reads from it, and the run-wide keys."""
    out = [(f.name, typing.get_type_hints(RunOptions)[f.name]) for f in dataclasses.fields(RunOptions)]
    for section, (module, name, choice_class) in SECTIONS.items():
        for cls in filter(None, (getattr(importlib.import_module(module), name), choice_class)):
            hints = typing.get_type_hints(cls)
            out += [(f"{section}.{f.name}", hints[f.name]) for f in dataclasses.fields(cls) if f.init]
    return out


def _base(annotation):
    """The annotation less None, and whether it is a list of it."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] \
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) else [annotation]
    if len(args) == 1 and (typing.get_origin(args[0]) in (list, tuple) or args[0] in (list, tuple)):
        return [a for a in typing.get_args(args[0]) if a is not Ellipsis][0], True
    return (args[0] if len(args) == 1 else tuple(args)), False


def _out_of_range(rule: Range, number_type) -> list:
    below = rule.low if rule.low_open else rule.low - 1
    above = rule.high + 1
    if number_type is int:
        below, above = math.floor(below), math.ceil(above)
    return [below, above]


def _bad_values(key: str, annotation) -> list:
    """Every value the key must refuse: a wrong type, NaN, +/-inf, and out of its rule (below min, above max; an
    unknown choice; a bad file, device, codec option...)."""
    base, is_list = _base(annotation)
    rule = ELEMENT_RULES.get(key) if is_list else RULES.get(key)
    wrong_type = {int: "abc", float: "abc", bool: "yes", str: 5}.get(base, [[1]])
    values = [wrong_type, math.nan, math.inf, -math.inf]
    numeric = base in (int, float) or (isinstance(base, tuple) and int in base)
    if numeric:
        assert isinstance(rule, (Range, Choice)), f"{key}: a number with no bounds in videdit.setting_rules"
        if isinstance(rule, Range):
            values += _out_of_range(rule, int if int in (base if isinstance(base, tuple) else (base,)) else float)
        else:
            values += [max(rule.values) + 1]
        if isinstance(rule, Range) and rule.words:
            values.append("nosuch")
    elif base is str:
        if isinstance(rule, Choice):
            values.append("nosuch")
        elif rule is not None:
            values.append(BAD_STRINGS[RULE_NAMES[id(rule)]])
        else:
            assert False, f"{key}: a string setting with no check in videdit.setting_rules"
    else:
        assert base is bool, f"{key}: a {annotation} setting the test does not know how to break"
    if is_list:
        values = [wrong_type if v is wrong_type and base is not str else [v] for v in values] + ([5] if base is str else ["abc"])
    return values


SCHEMA = _schema()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from videdit.synthetic import make_clip

    return make_clip(tmp_path_factory.mktemp("clip") / "face.mp4", n_frames=5, size=(192, 160))


def refusal(clip_path: Path, run_dir: Path, overrides: dict) -> str:
    """The one line a run with these overrides fails with; asserts it created no stage folder."""
    from videdit.pipeline import Pipeline, StandInModels

    try:
        pipe = Pipeline.from_preset("default", overrides={**SMALL, **overrides}, quiet=True, estimate_time=False,
                                    models=StandInModels(resolution=64))
    except VideditError as err:
        message = str(err)
    else:
        result = pipe.run(clip_path, run_dir)
        assert result.status == "failed", f"{overrides} was accepted"
        message = result.error
    made = [p.name for p in run_dir.iterdir()] if run_dir.exists() else []
    assert not [n for n in made if n.split(".")[0] in STAGE_ORDER], (overrides, made)
    assert "\n" not in message.strip(), message
    return message


@pytest.mark.parametrize("key, annotation", SCHEMA, ids=[k for k, _ in SCHEMA])
def test_every_setting_refuses_bad_values_before_the_first_stage(clip, tmp_path, key, annotation):
    for i, value in enumerate(_bad_values(key, annotation)):
        message = refusal(clip.path, tmp_path / f"run{i}", {key: value})
        assert key in message, (value, message)


def test_the_schema_enumeration_reaches_every_section():
    sections = {key.partition(".")[0] for key, _ in SCHEMA if "." in key}
    assert sections == set(SECTIONS)
    assert "tune.steps" in dict(SCHEMA) and "precision" in dict(SCHEMA)


def test_docs_list_every_bound():
    """docs/settings.md holds the bounds table as the code has it."""
    assert bounds_table() in (REPO / "docs" / "settings.md").read_text()


def test_good_values_at_the_bounds_are_accepted():
    from videdit.settings import resolve_settings

    resolve_settings({"tune": {"steps": 1_000_000, "lr": 1.0}, "composite": {"crf": 51, "pix_fmt": "yuv420p10le"}})
