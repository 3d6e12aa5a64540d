"""What every engine shares: pairing videos with run folders, and how durations are shown."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from videdit.errors import VideditError
from videdit.layout import run_folder_name
from videdit.progress import format_duration  # noqa: F401  (the engines show durations the same way)

if TYPE_CHECKING:
    from videdit.pipeline import Pipeline


@dataclass(frozen=True)
class VideoJob:
    """One video and the run folder it writes to (absolute paths: a Ray worker may run elsewhere)."""

    video: Path
    run_dir: Path


def _absolute(path: Path | str) -> Path:
    return Path(os.path.abspath(path))


def make_jobs(pipeline: "Pipeline", videos: Sequence[Path], out: Path | None = None,
              run_dirs: Sequence[Path] | None = None) -> list[VideoJob]:
    """Pair videos with run folders: `run_dirs` if given, else OUT/<name>.videdit, else beside each input."""
    # Absolute, not resolved: a symlinked input keeps its own name, as with the local engine.
    videos = [_absolute(v) for v in videos]
    if run_dirs is not None:
        if len(run_dirs) != len(videos):
            raise VideditError(f"{len(videos)} videos but {len(run_dirs)} run folders")
        dirs = [_absolute(d) for d in run_dirs]
    elif out is not None:
        dirs = [_absolute(out) / run_folder_name(v.name) for v in videos]
    else:
        dirs = [pipeline.default_run_dir(v) for v in videos]
    if len(set(dirs)) != len(dirs):
        raise VideditError("two videos would share a run folder (same file name in different folders?): use separate --out folders")
    return [VideoJob(v, d) for v, d in zip(videos, dirs)]
