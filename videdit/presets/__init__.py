"""Named pipeline presets: small TOML files shipped in this package (`videdit/presets/*.toml`), merged
section by section. Users add their own in a folder named by $VIDEDIT_PRESETS (looked up first).

A preset may name another with `inherit = "NAME"`; its sections are merged on top of that one's. The loaded
settings name the preset itself (`preset`) and what it inherits from, nearest first (`inherits`).
Command-line flags are applied last (`apply_overrides`). The resolved settings are written to the
run folder, so a run can always be repeated from its own `settings.toml`.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from videdit.errors import VideditError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - 3.10
    import tomli as tomllib  # type: ignore[no-redef]

STAGE_SECTIONS = ("faces", "align", "encode", "tune", "edit", "smooth", "stitch", "render", "composite",
                  "hyperstyle", "local_tweak")  # the last two: settings of the alternative tuners


def presets_dirs() -> list[Path]:
    """Where named presets are looked up: $VIDEDIT_PRESETS (os.pathsep-separated folders), then the package's own."""
    dirs = [Path(d) for d in os.environ.get("VIDEDIT_PRESETS", "").split(os.pathsep) if d]
    dirs.append(Path(__file__).resolve().parent)
    return dirs


def available_presets() -> list[str]:
    names = set()
    for d in presets_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml"))
    return sorted(names)


def _find(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or os.sep in name_or_path:
        if not p.is_file():
            raise VideditError(f"preset file not found: {p}")
        return p
    for d in presets_dirs():
        cand = d / f"{name_or_path}.toml"
        if cand.is_file():
            return cand
    raise VideditError(f"unknown preset {name_or_path!r}; available: {', '.join(available_presets()) or 'none'}")


def _merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_preset(name_or_path: str = "default", _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    path = _find(name_or_path)
    if str(path) in _seen:
        raise VideditError(f"preset inheritance loops through {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise VideditError(f"preset {path}: invalid TOML: {exc}") from None
    name = data.pop("preset", path.stem)  # what settings.toml records: this preset, and what it inherits from
    parent = data.pop("inherit", None)
    chain: list[str] = []
    if parent:
        base = load_preset(parent, _seen + (str(path),))
        chain = [base.pop("preset")] + base.pop("inherits", [])
        data = _merge(base, data)
    unknown = [k for k, v in data.items() if isinstance(v, dict) and k not in STAGE_SECTIONS]
    if unknown:
        raise VideditError(f"preset {path}: unknown section(s) {', '.join(unknown)}; known: {', '.join(STAGE_SECTIONS)}")
    data["preset"] = name
    if chain:
        data["inherits"] = chain  # nearest first: demo -> ["default"]
    return data


def apply_overrides(settings: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` maps 'section.key' to a value; None values are ignored (flag not given)."""
    out = copy.deepcopy(settings)
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if section not in STAGE_SECTIONS or not key:
            raise VideditError(f"bad setting {dotted!r}: expected SECTION.KEY with SECTION in {', '.join(STAGE_SECTIONS)}")
        out.setdefault(section, {})[key] = value
    return out


def parse_set_option(text: str) -> tuple[str, Any]:
    """`--set tune.steps=100` -> ('tune.steps', 100); the value is parsed as a TOML value when it can be."""
    if "=" not in text:
        raise VideditError(f"--set expects SECTION.KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def to_toml(settings: dict[str, Any]) -> str:
    """Write resolved settings back as TOML (flat values and one level of sections are all we use)."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        if v is None:
            return '""'
        s = str(v).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{s}"'

    lines = [f"{k} = {fmt(v)}" for k, v in settings.items() if not isinstance(v, dict)]
    for section, values in settings.items():
        if isinstance(values, dict):
            lines.append(f"\n[{section}]")
            lines.extend(f"{k} = {fmt(v)}" for k, v in values.items())
    return "\n".join(lines) + "\n"
