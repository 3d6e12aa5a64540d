"""Shots: where a video cuts from one camera (or scene) to another, found once per video.

A shot boundary is a wall for everything that works along time: no fixed crop box, smoothing window,
face track or interpolation of missing frames crosses it. Shots are half-open frame ranges
[start, end) that cover the video without gaps, in order.

Hard cuts are found with PySceneDetect's ContentDetector (the mean change of hue, saturation and
brightness between consecutive frames, on a copy of the frame about `detect_width` pixels wide, which
is also PySceneDetect's own default working size). Frames come from videdit's VideoReader, so rotation
metadata and image folders behave as in every other stage, and the same frames give the same shots.

Dissolves: a cross-fade over k frames spreads one large change over k small ones, each below the
hard-cut threshold. With `dissolve_frames` = k > 1, a second ContentDetector compares every frame
with the frame k back; a change above `threshold` there, with no hard cut in between, whose
per-frame changes stayed small but never stopped (the signature of a fade, not of a camera move that
starts and stops), puts a boundary in the middle of the fade. Off by default: on footage with fast
motion it can split a shot, which costs little (tracks are relinked by identity) but is not free.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from videdit.errors import InputError, VideditError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shot:
    """Frames [start, end) of one shot."""

    start: int
    end: int

    @property
    def n_frames(self) -> int:
        return self.end - self.start

    def __contains__(self, frame: int) -> bool:
        return self.start <= frame < self.end


@dataclass
class ShotSettings:
    """How shots are found (the [shots] section a preset may carry)."""

    threshold: float = 27.0  # ContentDetector's score (0-255) at which two frames are a hard cut (its default)
    min_shot_frames: int = 1  # a cut closer than this to the previous one is dropped (1: every cut counts)
    detect_width: int = 256  # frames are reduced to about this width before comparing
    dissolve_frames: int = 0  # > 1: also find cross-fades about this long (see the module notes)
    dissolve_step_max: float = 12.0  # a fade's per-frame score stays below this ...
    dissolve_step_min: float = 1.0  # ... and above this over the whole fade


def _import_scenedetect():
    try:
        from scenedetect import FrameTimecode
        from scenedetect.detectors import ContentDetector
    except ImportError:
        raise VideditError("shot detection needs PySceneDetect: pip install scenedetect") from None
    return FrameTimecode, ContentDetector


def _last_score(detector) -> float:
    """The change score ContentDetector computed for the frame it was last given. PySceneDetect keeps it
    in `_frame_score` (no public getter without a stats manager, which also computes edge maps we do
    not use); pyproject pins the 0.7 series, and the dissolve test fails should it move."""
    return float(getattr(detector, "_frame_score", None) or 0.0)


def _reduction(width: int, detect_width: int) -> int:
    """Integer factor that brings a frame about `detect_width` wide (PIL's fast box reduction)."""
    return max(1, int(round(width / max(1, detect_width))))


class ShotDetector:
    """Finds cuts in frames fed one at a time (for a stage that already decodes the video).

    >>> detector = ShotDetector(fps, ShotSettings())
    >>> for frame in VideoReader(path): detector.add(frame.image)
    >>> shots = detector.shots()
    """

    def __init__(self, fps: Fraction | float = 25, settings: ShotSettings | None = None):
        self.settings = settings or ShotSettings()
        if self.settings.min_shot_frames < 1:
            raise InputError(f"shots.min_shot_frames must be at least 1, got {self.settings.min_shot_frames}")
        self._timecode, self._content_detector = _import_scenedetect()
        self._fps = Fraction(fps).limit_denominator(100000) if fps else Fraction(25)
        # min_scene_len=0 disables PySceneDetect's flash filter: every cut is reported at the frame
        # that starts the new shot, immediately; min_shot_frames is applied here instead.
        self._cuts_detector = self._content_detector(threshold=self.settings.threshold, min_scene_len=0)
        self._dissolve = self.settings.dissolve_frames > 1
        self._scores: list[float] = []  # frame i vs i - 1 (0 for the first)
        self._long_scores: list[float] = []  # frame i vs i - dissolve_frames
        self._history: list[np.ndarray] = []  # the last dissolve_frames small frames
        self._cuts: list[int] = []
        self._shot_start = 0  # first frame of the shot the last frame fed is in, as far as hard cuts tell
        self._count = 0

    def _small(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        factor = _reduction(image.shape[1], self.settings.detect_width)
        small = np.asarray(Image.fromarray(image).reduce(factor)) if factor > 1 else image
        return np.ascontiguousarray(small[..., ::-1])  # PySceneDetect reads OpenCV's BGR order

    def add(self, image: np.ndarray) -> None:
        """The next frame (uint8 HxWx3 RGB)."""
        small = self._small(image)
        index = self._count
        timecode = self._timecode(timecode=index, fps=self._fps)
        if self._cuts_detector.process_frame(timecode, small) and index > 0:
            self._cuts.append(index)
            if index - self._shot_start >= self.settings.min_shot_frames:
                self._shot_start = index
        self._scores.append(_last_score(self._cuts_detector))
        if self._dissolve:
            self._long_scores.append(self._long_score(small))
        self._count += 1

    def _long_score(self, small: np.ndarray) -> float:
        """ContentDetector's score between this frame and the one dissolve_frames back (0 before that)."""
        k = self.settings.dissolve_frames
        self._history.append(small)
        if len(self._history) <= k:
            return 0.0
        old = self._history.pop(0)
        pair = self._content_detector(threshold=255.0, min_scene_len=0)
        for i, picture in enumerate((old, small)):
            pair.process_frame(self._timecode(timecode=i, fps=self._fps), picture)
        return _last_score(pair)

    def _dissolve_cuts(self) -> list[int]:
        """Middles of cross-fades (see the module notes), away from hard cuts."""
        k = self.settings.dissolve_frames
        scores, long_scores = np.asarray(self._scores), np.asarray(self._long_scores)
        found: list[int] = []
        i = k
        while i < self._count:
            window = scores[i - k + 1:i + 1]  # the k steps between frame i - k and frame i
            is_fade = (long_scores[i] >= self.settings.threshold
                       and window.max() < self.settings.threshold  # no hard cut inside
                       and window.max() < self.settings.dissolve_step_max
                       and window.min() >= self.settings.dissolve_step_min)
            if is_fade:
                found.append(i - k // 2)
                i += k  # one boundary per fade
            else:
                i += 1
        return found

    def shots(self) -> list[Shot]:
        """The shots of the frames fed so far (at least one frame must have been fed)."""
        if self._count == 0:
            raise InputError("no frame to find shots in")
        cuts = sorted(set(self._cuts) | (set(self._dissolve_cuts()) if self._dissolve else set()))
        return shots_from_cuts(cuts, self._count, self.settings.min_shot_frames)

    @property
    def shot_start(self) -> int:
        """The first frame of the shot of the frame fed last, as known so far (hard cuts only: dissolves are
        found at the end, see `shots`)."""
        return self._shot_start

    @property
    def frame_scores(self) -> np.ndarray:
        """Per-frame change scores (frame i against i - 1), for plots and threshold tuning."""
        return np.asarray(self._scores)


def shots_from_cuts(cuts: Iterable[int], n_frames: int, min_shot_frames: int = 1) -> list[Shot]:
    """Shots between the given cut frames (each the first frame of a new shot); a cut less than
    min_shot_frames after the previous kept one is dropped, so no shot but the last is shorter."""
    if n_frames < 1:
        raise InputError("a video needs at least one frame to have shots")
    starts = [0]
    for cut in sorted(set(int(c) for c in cuts)):
        if 0 < cut < n_frames and cut - starts[-1] >= min_shot_frames:
            starts.append(cut)
    ends = starts[1:] + [n_frames]
    return [Shot(start, end) for start, end in zip(starts, ends)]


def detect_shots(video, settings: ShotSettings | None = None) -> list[Shot]:
    """Shots of a video file or image folder (path or VideoReader): one decoding pass."""
    from videdit.io.reader import VideoReader

    reader = video if isinstance(video, VideoReader) else VideoReader(Path(video))
    detector = ShotDetector(reader.info.fps, settings)
    for frame in reader:
        detector.add(frame.image)
    shots = detector.shots()
    log.info("%s: %d shots", reader.path, len(shots))
    return shots


def check_shots(shots: Sequence[Shot], n_frames: int | None = None) -> list[Shot]:
    """The shots, or one InputError line when they do not tile [0, n_frames) in order."""
    shots = list(shots)
    if not shots:
        raise InputError("no shots: a video has at least one")
    position = 0
    for number, shot in enumerate(shots):
        if shot.start != position or shot.end <= shot.start:
            raise InputError(f"shot {number} covers frames [{shot.start}, {shot.end}) but should start at "
                             f"{position} and hold at least one frame")
        position = shot.end
    if n_frames is not None and position != n_frames:
        raise InputError(f"the shots cover {position} frames but the video has {n_frames}")
    return shots


def shot_index(shots: Sequence[Shot], frame: int) -> int:
    """Number of the shot holding `frame`."""
    starts = [shot.start for shot in shots]
    number = int(np.searchsorted(starts, frame, side="right")) - 1
    if number < 0 or frame >= shots[-1].end:
        raise IndexError(f"frame {frame} is outside the shots [0, {shots[-1].end})")
    return number


def shot_segments(shots: Sequence[Shot]) -> list[tuple[int, int]]:
    """(start, end) pairs: what videdit.temporal's smoothing takes as `segments`."""
    return [(shot.start, shot.end) for shot in shots]
