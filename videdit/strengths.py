"""Edit strengths: a number, or a keyframed ramp over the video, and the bound every one of them must keep.

    3                    the same strength on every frame
    0@0s,5@10s           0 at 0 s, 5 at 10 s: linear between keyframes, constant before the first and after
                         the last; times in seconds from the video's first frame (`2.5s`), frames (`120f`,
                         the source's frame index) or `end` (the video's last frame)

A ramp is evaluated on the frames' own times (the align record's timestamps), so variable frame rates get
the strength of the instant each frame shows. Every value (constant or keyframe) must be finite and within
+-max_strength (`[edit] max_strength`, DEFAULT_MAX_STRENGTH): far outside the published ranges a latent
leaves the generator's domain and renders noise, so a typo like `1e30` is one line before any work.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

from videdit.errors import VideditError

if TYPE_CHECKING:
    import numpy as np

# 20 times the largest published range end (5, videdit.edits.DEFAULT_RANGES): room for raw S-channel units
# and strong text alphas, while 1e30-style typos are refused.
DEFAULT_MAX_STRENGTH = 100.0

_KEYFRAME = re.compile(r"^\s*(?P<value>[^@]+?)\s*@\s*(?:(?P<end>end)|(?P<at>[^a-z\s]+?)\s*(?P<unit>s|f))\s*$")


@dataclass(frozen=True)
class Keyframe:
    """value at a time: unit "s" (at = seconds from the video's first frame), "f" (at = source frame index)
    or "end" (the video's last frame; at unused)."""

    value: float
    at: float
    unit: str

    def text(self) -> str:
        where = "end" if self.unit == "end" else f"{self.at:g}{self.unit}"
        return f"{self.value:g}@{where}"


@dataclass(frozen=True)
class Ramp:
    """A strength that changes over the video: keyframes, linear between them, constant outside."""

    keyframes: tuple[Keyframe, ...]

    def text(self) -> str:
        """The ramp as written on the command line (and in settings.toml)."""
        return ",".join(k.text() for k in self.keyframes)

    def name(self) -> str:
        """The output name's part: the values in order, `0to5`, `0to5to0`."""
        return "to".join(f"{k.value:g}" for k in self.keyframes)

    def values(self, times: "FrameTimes") -> "np.ndarray":
        """The strength of every frame of `times`, float64 [N]."""
        import numpy as np

        at = [times.keyframe_time(k) for k in self.keyframes]
        if any(b <= a for a, b in zip(at, at[1:])):
            raise VideditError(f"strength ramp {self.text()!r}: its keyframes fall at {', '.join(f'{t:g}s' for t in at)} "
                               "in this video; they must be in increasing time order")
        return np.interp(times.seconds, at, [k.value for k in self.keyframes])


Strength = Union[float, Ramp]


@dataclass(frozen=True)
class FrameTimes:
    """When each frame of a run (a whole video, or a face track of one) is shown.

    seconds: each frame's time from the video's first frame [N]; first_frame: the source frame index of
    seconds[0] (a track's start); last_frame: the video's last frame index; fps: the nominal rate, used only
    for frame keyframes outside these frames.
    """

    seconds: "np.ndarray"
    first_frame: int = 0
    last_frame: int | None = None
    fps: float = 25.0

    def frame_time(self, index: float) -> float:
        i = int(index) - self.first_frame
        n = len(self.seconds)
        if 0 <= i < n:
            return float(self.seconds[i])
        if i < 0:
            return float(self.seconds[0]) + i / self.fps
        return float(self.seconds[-1]) + (i - n + 1) / self.fps

    def keyframe_time(self, key: Keyframe) -> float:
        if key.unit == "s":
            return key.at
        if key.unit == "f":
            return self.frame_time(key.at)
        last = self.last_frame if self.last_frame is not None else self.first_frame + len(self.seconds) - 1
        return self.frame_time(last)

    @classmethod
    def of_frames(cls, n: int, fps: float = 25.0) -> "FrameTimes":
        """n frames at a constant rate (for the API without a video)."""
        import numpy as np

        return cls(np.arange(n, dtype=np.float64) / fps, 0, n - 1, fps)


def per_frame(strength: Strength, times: FrameTimes | None, n: int) -> "float | np.ndarray":
    """A constant as it is; a ramp as its value on each of the n frames (times needed)."""
    if not isinstance(strength, Ramp):
        return float(strength)
    if times is None:
        raise VideditError(f"strength ramp {strength.text()!r}: the frames' times are needed (the align record)")
    if len(times.seconds) != n:
        raise VideditError(f"strength ramp {strength.text()!r}: {len(times.seconds)} frame times for {n} frames")
    return strength.values(times)


def strength_name(strength: Strength) -> str:
    """`5`, `-2.5`, or a ramp's `0to5`."""
    return strength.name() if isinstance(strength, Ramp) else f"{strength:g}"


def strength_json(strength: "Strength | None") -> "float | str | None":
    """A strength as a JSON value (cache keys, records): a ramp as its text."""
    return strength.text() if isinstance(strength, Ramp) else strength


def check_bound(max_strength: float) -> float:
    try:
        bound = float(max_strength)
    except (TypeError, ValueError):
        raise VideditError(f"edit.max_strength must be a number, got {max_strength!r}") from None
    if not math.isfinite(bound) or bound <= 0:
        raise VideditError(f"edit.max_strength must be a finite number > 0, got {max_strength!r}")
    return bound


def _number(text, what: str, max_strength: float) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise VideditError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise VideditError(f"{what} must be finite, got {text!r}")
    if abs(value) > max_strength:
        raise VideditError(f"{what} {text!r} is outside +-{max_strength:g} (edit.max_strength; the published ranges "
                           "end at 5)")
    return value


def parse_strength(value: "float | str | Ramp", what: str = "--strength", max_strength: float = DEFAULT_MAX_STRENGTH) -> Strength:
    """A number, or a ramp `V@Ts,V@Nf,V@end` -> float or Ramp; one VideditError line when it is neither or out of
    bounds. Keyframes given in the same unit must be in increasing order (mixed units: when the times are known)."""
    bound = check_bound(max_strength)
    if isinstance(value, Ramp):
        value = value.text()
    if isinstance(value, bool):
        raise VideditError(f"{what} must be numbers, got {value!r}")
    if not isinstance(value, str) or "@" not in value:
        return _number(value, what, bound)
    keys = []
    for part in value.split(","):
        m = _KEYFRAME.match(part.lower())
        if not m:
            raise VideditError(f"{what} keyframe {part.strip()!r} must be VALUE@SECONDSs, VALUE@FRAMEf or VALUE@end, "
                               "e.g. '0@0s,5@10s'")
        v = _number(m["value"], what, bound)
        if m["end"]:
            keys.append(Keyframe(v, 0.0, "end"))
            continue
        try:
            at = float(m["at"])
        except ValueError:
            raise VideditError(f"{what} keyframe {part.strip()!r}: {m['at']!r} is not a time") from None
        if not math.isfinite(at) or at < 0 or (m["unit"] == "f" and at != int(at)):
            raise VideditError(f"{what} keyframe {part.strip()!r}: times are seconds >= 0 or whole frame numbers")
        keys.append(Keyframe(v, at, m["unit"]))
    for unit in ("s", "f"):
        ats = [k.at for k in keys if k.unit == unit]
        if any(b <= a for a, b in zip(ats, ats[1:])):
            raise VideditError(f"{what} {value!r}: keyframes must be in increasing time order")
    if [k.unit for k in keys].count("end") > 1 or any(k.unit == "end" for k in keys[:-1]):
        raise VideditError(f"{what} {value!r}: 'end' can only be the last keyframe")
    return Ramp(tuple(keys))


def strength_options(text: str | None) -> "list[float | str] | None":
    """A --strength / --alpha option: numbers `-4,5` (one output each), a ramp `0@0s,5@10s` (one output), or
    several of either separated by `;` (`0@0s,5@10s;2`). Ramps stay text (settings.toml records them as written)."""
    if text is None:
        return None
    out: list[float | str] = []
    for group in str(text).split(";"):
        if "@" in group:
            out.append(group.strip())
            continue
        for item in group.split(","):
            try:
                out.append(float(item))
            except ValueError:
                raise VideditError(f"expected comma-separated numbers or keyframes like 0@0s,5@10s, got {text!r}") from None
    return out


def parse_strengths(values: Sequence | None, default: float, what: str,
                    max_strength: float = DEFAULT_MAX_STRENGTH) -> tuple[Strength, ...]:
    """Several strengths (each one output) checked; none given: the default."""
    if not values:
        return (parse_strength(default, what, max_strength),)
    return tuple(parse_strength(v, what, max_strength) for v in values)
