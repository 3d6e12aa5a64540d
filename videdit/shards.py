"""Frame-sharded stages: a stage's frames cut into ranges, each range ("part") computed on its own.

A part runs in `RUN/<stage>.partial/parts/<start>-<end>.partial/` and is renamed to `.../<start>-<end>/`
when its function returns, so a part is complete or absent, like a stage; finished parts survive a
killed driver or worker, and the next attempt computes only the missing ones. When every part is there,
the stage's `merge` turns them into the stage's normal outputs (the same files, byte for byte, as the
unsharded stage writes), and the runner completes the stage as usual (videdit.runner).

Where the parts run is an executor: `run_parts_here` (this process, one after another; what the local
engine does with --shard-frames) or the Ray engine's (one Ray task per part). Both call `run_part`.
"""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from videdit.errors import VideditError
from videdit.layout import PARTIAL_SUFFIX, PARTS, part_name, part_range

FrameRange = tuple[int, int]  # [start, end)


@dataclass(frozen=True)
class ShardOptions:
    """How a run cuts its frame-wise stages: `frames` per part, or (None) about one part per worker."""

    frames: int | None = None
    workers: int = 1

    def __post_init__(self):
        if self.frames is not None and int(self.frames) < 1:
            raise VideditError(f"--shard-frames must be 1 or more, got {self.frames}")

    def ranges(self, n_frames: int, multiple: int = 1) -> list[FrameRange]:
        size = self.frames if self.frames is not None else math.ceil(n_frames / max(1, self.workers))
        return shard_ranges(n_frames, size, multiple)


def parse_shard_frames(value: int | str) -> int | None:
    """--shard-frames: a number of frames, or "auto" (None: about one part per worker)."""
    if value == "auto":
        return None
    try:
        frames = int(value)
    except (TypeError, ValueError):
        frames = 0
    if frames < 1 or str(frames) != str(value).strip():
        raise VideditError(f"--shard-frames must be a whole number of frames (1 or more) or 'auto', got {value!r}")
    return frames


def shard_ranges(n_frames: int, size: int, multiple: int = 1) -> list[FrameRange]:
    """[start, end) ranges covering n_frames, `size` frames each rounded up to a multiple of `multiple`
    (a stage's batch size: every part then holds whole batches of the unsharded run, so no batch changes)."""
    multiple = max(1, int(multiple))
    size = max(multiple, math.ceil(max(1, int(size)) / multiple) * multiple)
    return [(start, min(start + size, n_frames)) for start in range(0, n_frames, size)]


@dataclass
class Sharding:
    """A stage that can run in parts: `plan()` (called when the stage runs, after its inputs exist) gives
    the ranges; `part(start, end, folder)` computes one into `folder`; `merge(folders, work)` writes the
    stage's outputs into its work folder from the part folders, in frame order."""

    plan: Callable[[], list[FrameRange]]
    part: Callable[[int, int, Path], Any]
    merge: Callable[[list[Path], Path], Any]


class ShardFailed(VideditError):
    """A part that failed for good: one line naming the stage and the frame range."""

    def __init__(self, stage: str, frames: FrameRange, cause: str):
        self.stage, self.frames = stage, frames
        super().__init__(f"{stage}: frames {frames[0]}-{frames[1] - 1} failed: {cause} "
                         "(finished parts are kept; rerun to resume)")


def one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1]}" if lines else type(exc).__name__


def parts_folder(work: Path) -> Path:
    return Path(work) / PARTS


def part_folder(work: Path, frames: FrameRange) -> Path:
    return parts_folder(work) / part_name(*frames)


def finished_parts(work: Path) -> dict[FrameRange, Path]:
    """The complete parts in a stage's work folder, by frame range."""
    folder = parts_folder(work)
    if not folder.is_dir():
        return {}
    found = {}
    for p in folder.iterdir():
        frames = part_range(p.name)
        if frames is not None and p.is_dir():
            found[frames] = p
    return found


def prune_parts(work: Path, plan: Sequence[FrameRange]) -> None:
    """Remove what the plan will not use: parts of another cut (a changed --shard-frames) and cut-off ones."""
    folder = parts_folder(work)
    if not folder.is_dir():
        return
    wanted = {part_name(*r) for r in plan}
    for p in folder.iterdir():
        if p.name not in wanted:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def run_part(part: Callable[[int, int, Path], Any], frames: FrameRange, folder: Path) -> None:
    """Compute one part into `folder` atomically (complete or absent); a complete one is left as it is."""
    folder = Path(folder)
    if folder.is_dir():
        return
    work = folder.with_name(folder.name + PARTIAL_SUFFIX)
    shutil.rmtree(work, ignore_errors=True)  # a cut-off attempt: parts are short, start it again
    work.mkdir(parents=True)
    part(frames[0], frames[1], work)
    os.replace(work, folder)


class PartExecutor(Protocol):
    def __call__(self, stage: str, todo: list[tuple[FrameRange, Path]], part: Callable[[int, int, Path], Any],
                 count: Callable[[int], None]) -> None:
        """Run every (frames, folder) of `todo` with `run_part`; `count(n)` as frames finish; ShardFailed
        naming the range of a part that failed for good."""


def run_parts_here(stage: str, todo: list[tuple[FrameRange, Path]], part: Callable[[int, int, Path], Any],
                   count: Callable[[int], None]) -> None:
    """The parts one after another in this process, their frames counted on the stage's one bar."""
    from videdit import progress

    with progress.reporting(progress.CountingReporter(stage, count)):
        for frames, folder in todo:
            try:
                run_part(part, frames, folder)
            except Exception as exc:
                raise ShardFailed(stage, frames, one_line(exc)) from exc
