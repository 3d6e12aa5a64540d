"""Engines: where the videos of a batch run.

- `local`: one video after another in this process .
- `ray`: one Ray task per video on a Ray cluster (`videdit.engines.ray_engine`, needs `pip install videdit[ray]`).

Both take the same pipeline, videos and run options and return `VideoResult`s in input order, so the
CLI prints the same summary table whichever engine ran. Run folders follow the same naming rule:
`OUT/<video name>.videdit/` when an output folder is given, else beside each input.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from videdit.errors import InputError, VideditError
from videdit.records import VideoResult

if TYPE_CHECKING:
    from videdit.pipeline import Pipeline

ENGINES = ("local", "ray")
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".gif"}


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
        dirs = [_absolute(out) / (v.name + ".videdit") for v in videos]
    else:
        dirs = [pipeline.default_run_dir(v) for v in videos]
    if len(set(dirs)) != len(dirs):
        raise VideditError("two videos would share a run folder (same file name in different folders?): use separate --out folders")
    return [VideoJob(v, d) for v, d in zip(videos, dirs)]


def run_videos(pipeline: "Pipeline", videos: Sequence[Path], out: Path | None = None, *, engine: str = "local",
               **options: Any) -> list["VideoResult"]:
    """Run `videos` with the named engine; `options` are that engine's keyword arguments."""
    if engine == "local":
        from videdit.engines.local import run_videos_local

        return run_videos_local(pipeline, videos, out, **options)
    if engine == "ray":
        from videdit.engines.ray_engine import run_videos_ray

        return run_videos_ray(pipeline, videos, out, **options)
    raise VideditError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")


def format_duration(seconds: float | None) -> str:
    """'?' for unknown, else 45s / 3m05s / 2h10m."""
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def list_videos(folder: Path, recursive: bool = False) -> list[Path]:
    """The videos of a folder, sorted; never videdit's own outputs (anything inside a *.videdit run folder)."""
    pattern = "**/*" if recursive else "*"
    folder = Path(folder)
    return sorted(p for p in folder.glob(pattern)
                  if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                  and not any(part.endswith(".videdit") for part in p.relative_to(folder).parts[:-1]))


def run_many(pipeline: "Pipeline", input_path: Path, out: Path | None = None, *, recursive: bool = False,
             engine: str = "local", engine_options: dict[str, Any] | None = None, **kwargs: Any) -> list[VideoResult]:
    """A video, or every video in a folder, with the local or the Ray engine.

    Failures are reported in the results and the other videos go on. A single video's run folder is
    `out` itself; in folder mode `out` holds one `NAME.videdit/` per video.
    """
    if engine not in ENGINES:
        raise VideditError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine == "ray":
        from videdit.engines.ray_engine import require_ray

        require_ray()
    input_path = Path(input_path)
    options = dict(engine_options or {}, **kwargs)
    if input_path.is_dir():
        videos = list_videos(input_path, recursive)
        if not videos:
            raise InputError(f"no videos found in {input_path} (looked for {', '.join(sorted(VIDEO_SUFFIXES))})")
        pipeline.check_weights(kwargs.get("until"))  # every missing file listed at once, before touching any video
        return run_videos(pipeline, videos, out, engine=engine, **options)
    if not input_path.exists():
        raise InputError(f"no such file or folder: {input_path}")
    pipeline.check_weights(kwargs.get("until"))
    run_dir = Path(out) if out else pipeline.default_run_dir(input_path)
    return run_videos(pipeline, [input_path], engine=engine, run_dirs=[run_dir], **options)


def format_summary(results: list[VideoResult]) -> str:
    """The batch table: one row per video, then `N done, M failed`."""
    rows = [("video", "status", "frames", "time", "output")]
    for r in results:
        out = str(r.outputs[0]) if r.outputs else (r.error or "")
        rows.append((r.input.name, r.status, "" if r.frames is None else str(r.frames), f"{r.seconds:.1f}s", out))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(row[i].ljust(widths[i]) for i in range(4)) + "  " + row[4] for row in rows]
    failed = sum(r.status != "ok" for r in results)
    lines.append(f"{len(results) - failed} done, {failed} failed")
    return "\n".join(lines)
