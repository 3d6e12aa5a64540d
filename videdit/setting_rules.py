"""What each setting may hold beyond its type: bounds for every number, choices for every enumeration, and a
check for every string that names a file, a device, a codec option or a frame rate.

`RULES` maps "SECTION.KEY" (or a run-wide key) to a rule; `ELEMENT_RULES` applies to each item of a list.
Every numeric setting has a lower and an upper bound here (tests/test_checks.py enumerates the schema and
fails for one without), so a typo such as `--set tune.steps=10000000000` is refused before any work; the
bounds are generous (far beyond any useful value), they catch mistakes, not taste. docs/settings.md is this
table (`bounds_table()`), checked by the same test. No heavy import at module level: the CLI reads it.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

from videdit.errors import VideditError
from videdit.tuning import TUNERS  # the registry's names only: no torch at import

# How the generator runs (videdit.models applies it): float32, float32 with TF32, NVIDIA's mixed precision.
PRECISIONS = ("fp32", "tf32", "fp16")
LANDMARKS = ("auto", "dlib", "face-alignment", "fan")
CODECS = ("auto", "h264", "hevc", "ffv1")
SEED_MAX = 2**32 - 1  # numpy's and torch's seeds
STEPS_MAX = 1_000_000  # optimisation steps of any tuner: about a week per frame batch on a fast GPU
BATCH_MAX = 4096
WEIGHT_MAX = 1e6  # loss weights
LR_MAX = 1.0
STRENGTH_MAX = 1e6  # edit.max_strength


@dataclass(frozen=True)
class Range:
    """low <= value <= high (low < value when low_open)."""

    low: float
    high: float
    low_open: bool = False
    words: tuple[str, ...] = ()  # strings allowed besides numbers (composite.crf = "auto")

    def problem(self, value: Any) -> str | None:
        if isinstance(value, str):
            return None if value in self.words else f"expected {' or '.join(self.words) or 'a number'} or a number"
        if self.low_open and not value > self.low:
            return f"must be > {self.low}"
        if not self.low_open and value < self.low:
            return f"must be >= {self.low}"
        if value > self.high:
            return f"must be <= {self.high}"
        return None

    def describe(self) -> str:
        words = "".join(f"{w} or " for w in self.words)
        return f"{words}{'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}]"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of values (strings, or whole numbers)."""

    values: tuple

    def problem(self, value: Any) -> str | None:
        return None if value in self.values else f"allowed values are {', '.join(map(str, self.values))}"

    def describe(self) -> str:
        return ", ".join(map(str, self.values))


@dataclass(frozen=True)
class Check:
    """A string checked by a function (None when fine, else what is wrong); `what` says what it must be."""

    function: Callable[[str], str | None]
    what: str

    def problem(self, value: Any) -> str | None:
        return self.function(value)

    def describe(self) -> str:
        return self.what


def _device(value: str) -> str | None:
    ok = value in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", value)
    return None if ok else "expected auto, cpu, cuda or cuda:N"


def _file(value: str) -> str | None:
    if value == "":
        return None  # unset: the default file (the weights registry's, or none)
    if os.path.isdir(value):
        return f"{value} is a folder, not a file"
    return None if os.path.isfile(value) else "no such file"


def _folder(value: str) -> str | None:
    return None if value == "" or os.path.isdir(value) else "no such folder"


def _frame_rate(value: str) -> str | None:
    try:
        rate = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return "expected a frame rate such as 25 or 30000/1001"
    return None if 0 < rate <= 1000 else "must be a frame rate in (0, 1000]"


def _people(value: str) -> str | None:
    ok = re.fullmatch(r"(|main|all|p\d+(\s*,\s*p\d+)*)", value.strip().lower())
    return None if ok else "expected main, all or person labels such as p1,p3 (see `videdit faces`)"


def _encoder_preset(value: str) -> str | None:
    from videdit.io.encoding import ENCODER_PRESETS

    return None if value == "auto" or value in ENCODER_PRESETS else f"expected auto or one of {', '.join(ENCODER_PRESETS)}"


def _pix_fmt(value: str) -> str | None:
    """A pixel format some encoder videdit writes accepts; which encoder runs is checked once the source is
    probed (videdit.io.encoding.resolve_encoder, before the first stage)."""
    from videdit.io.encoding import writable_pix_fmts

    if value == "auto":
        return None
    formats = writable_pix_fmts()
    return None if value in formats else "not a pixel format h264, hevc or ffv1 writes (e.g. yuv420p, yuv420p10le, yuv444p)"


def _edit(value: str) -> str | None:
    from videdit.edits import parse_edit

    if value.strip() == "":
        return None
    try:
        parse_edit(value)
    except VideditError as err:
        return str(err)
    return None


def _strength(value: Any) -> str | None:
    """A number or keyframes, finite; the bound is edit.max_strength's, applied by the edit language's parser."""
    from videdit.strengths import parse_strength

    try:
        parse_strength(value, "value", sys.float_info.max)
    except VideditError as err:
        return str(err)
    return None


DEVICE = Check(_device, "auto, cpu, cuda or cuda:N (set by --device)")
FILE = Check(_file, "an existing file, or empty")
FOLDER = Check(_folder, "an existing folder, or empty")
FRAME_RATE = Check(_frame_rate, "a frame rate in (0, 1000], e.g. 25 or 30000/1001")
PEOPLE = Check(_people, "empty, main, all or labels p1,p3")
ENCODER_PRESET = Check(_encoder_preset, "auto or an x264/x265 preset (ultrafast .. placebo)")
PIX_FMT = Check(_pix_fmt, "auto or a pixel format the chosen encoder accepts")
EDIT = Check(_edit, "an edit: age, smile, pose, gender, a .npy file, text:PROMPT or s:KEY:CHANNEL")
STRENGTH = Check(_strength, "a number or keyframes (0@0s,5@10s), within +-edit.max_strength")

RULES: dict[str, Any] = {
    "precision": Choice(PRECISIONS),  # run-wide (the top of a preset, no section)
    "faces.select": PEOPLE,
    "faces.min_track_frames": Range(1, 1_000_000),
    "faces.landmarks": Choice(LANDMARKS),
    "faces.full_search_every": Range(1, 100_000),
    "align.crop_size": Range(16, 4096),
    "align.aligned_size": Range(16, 4096),
    "align.landmarks": Choice(LANDMARKS),
    "align.device": DEVICE,
    "align.box": Choice(("first", "cover")),
    "align.smooth_quads": Range(0, 1000),
    "align.quad_rule": Choice(("eyes", "ffhq")),
    "align.encoder_input": Choice(("direct", "published")),
    "align.preview_height": Range(16, 8192),
    "align.full_search_every": Range(1, 100_000),
    "align.detect_max_side": Range(32, 16384),
    "align.image_folder_fps": FRAME_RATE,
    "align.png_compression": Range(0, 9),
    "align.write_threads": Range(1, 64),
    "encode.n_iters": Range(1, 100),
    "encode.batch_size": Range(1, BATCH_MAX),
    "encode.device": DEVICE,
    "encode.input_size": Range(16, 1024),
    "encode.encoder": Choice(("e4e", "psp")),
    "encode.generator": FILE,
    "tune.tuner": Choice(tuple(TUNERS)),
    "tune.steps": Range(0, STEPS_MAX),
    "tune.lr": Range(0.0, LR_MAX, low_open=True),
    "tune.batch_size": Range(1, BATCH_MAX),
    "tune.micro_batch": Range(0, BATCH_MAX),
    "tune.l2_weight": Range(0.0, WEIGHT_MAX),
    "tune.lpips_weight": Range(0.0, WEIGHT_MAX),
    "tune.lpips_net": Choice(("alex", "vgg")),
    "tune.checkpoint_every": Range(0, STEPS_MAX),
    "tune.early_stop_threshold": Range(0.0, WEIGHT_MAX),
    "tune.early_stop_window": Range(1, STEPS_MAX),
    "tune.seed": Range(0, SEED_MAX),
    "tune.device": DEVICE,
    "tune.weights_dir": FOLDER,
    "tune.frame_cache_mb": Range(0, 1 << 20),  # 1 TiB
    "edit.edits": None,  # element-wise, below
    "edit.direction": EDIT,
    "edit.beta": Range(0.0, 1.0),
    "edit.max_strength": Range(0.0, STRENGTH_MAX, low_open=True),
    "edit.clip": FILE,
    "edit.delta_i_c": FILE,
    "edit.s_stats": FILE,
    "smooth.window": Choice((1, 5)),
    "smooth.padding": Choice(("reflect", "edge", "renormalize")),
    "smooth.fine_layers_from": Range(0, 32),
    "stitch.steps": Range(0, STEPS_MAX),
    "stitch.lr": Range(0.0, LR_MAX, low_open=True),
    "stitch.batch_size": Range(1, BATCH_MAX),
    "stitch.boundary_weight": Range(0.0, WEIGHT_MAX),
    "stitch.inside_weight": Range(0.0, WEIGHT_MAX),
    "stitch.band": Range(0.0, 0.5),
    "stitch.grow_forehead": Range(0.0, 10.0),
    "stitch.seed": Range(0, SEED_MAX),
    "stitch.device": DEVICE,
    "render.feather": Range(0, 4096),
    "render.batch_size": Range(1, BATCH_MAX),
    "render.crf": Range(0, 63),
    "render.png_compress_level": Range(0, 9),
    "composite.mask": Choice(("landmarks", "box")),
    "composite.feather_px": Range(0.0, 4096.0),
    "composite.grow_forehead": Range(0.0, 10.0),
    "composite.mask_smoothing": Range(1, 1000),
    "composite.crf": Range(0, 51, words=("auto",)),
    "composite.codec": Choice(CODECS),
    "composite.preset": ENCODER_PRESET,
    "composite.pix_fmt": PIX_FMT,
    "composite.seam_every": Range(0, 1_000_000),
    "hyperstyle.hypernetwork": FILE,
    "hyperstyle.n_iters": Range(1, 100),
    "hyperstyle.batch_size": Range(1, BATCH_MAX),
    "hyperstyle.smooth_window": Choice((1, 5)),
    "hyperstyle.device": DEVICE,
    "local_tweak.discriminator": FILE,
    "local_tweak.max_steps": Range(0, STEPS_MAX),
    "local_tweak.lr": Range(0.0, LR_MAX, low_open=True),
    "local_tweak.d_lr": Range(0.0, LR_MAX, low_open=True),
    "local_tweak.batch_size": Range(1, BATCH_MAX),
    "local_tweak.global_batch": Range(1, BATCH_MAX),
    "local_tweak.lambda_local": Range(0.0, WEIGHT_MAX),
    "local_tweak.global_weight": Range(0.0, WEIGHT_MAX),
    "local_tweak.pyramid_levels": Range(1, 12),
    "local_tweak.stop_window": Range(1, STEPS_MAX),
    "local_tweak.stop_threshold": Range(0.0, WEIGHT_MAX),
    "local_tweak.stop_rel_improvement": Range(0.0, 1.0),
    "local_tweak.checkpoint_every": Range(0, STEPS_MAX),
    "local_tweak.seed": Range(0, SEED_MAX),
    "local_tweak.device": DEVICE,
}
# Rules for each item of a list setting.
ELEMENT_RULES: dict[str, Any] = {
    "edit.edits": EDIT,
    # An outer guard only: the edit language's own bound on strengths and alphas (videdit.edits) is tighter.
    "edit.strengths": STRENGTH,
    "edit.alpha": STRENGTH,
    "smooth.kernel": Range(-1000.0, 1000.0),
    # Pixels at render resolution; at most the generator's resolution less the feather, checked once the
    # generator's header is read (before the first stage).
    "render.expand": Range(0, 4096),
}


def bounds_table() -> str:
    """docs/settings.md's table: every rule, one row each."""
    rows = ["| setting | allowed |", "|---|---|"]
    for key, rule in sorted({**RULES, **{k + "[]": v for k, v in ELEMENT_RULES.items()}}.items()):
        if rule is not None:
            rows.append(f"| `{key}` | {rule.describe()} |")
    return "\n".join(rows) + "\n"
