"""Engines: where the videos of a batch run.

- `local`: one video after another in this process .
- `ray`: one Ray task per video on a Ray cluster (`videdit.engines.ray_engine`, needs `pip install videdit[ray]`).

Both take the same pipeline, videos and run options and return `VideoResult`s in input order, so the
CLI prints the same summary table whichever engine ran. Run folders follow the same naming rule:
`OUT/<video name>.videdit/` when an output folder is given, else beside each input.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from videdit.engines.jobs import VideoJob, format_duration, make_jobs  # noqa: F401  (the engines' shared parts)
from videdit.errors import InputError, VideditError
from videdit.io.probe import VIDEO_SUFFIXES, is_video_name
from videdit.layout import RUN_SUFFIX
from videdit.runner import VideoResult

if TYPE_CHECKING:
    from videdit.pipeline import Pipeline

ENGINES = ("local", "ray")


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


def list_videos(folder: Path, recursive: bool = False) -> list[Path]:
    """The videos of a folder, sorted; never videdit's own outputs (anything inside a *.videdit run folder)."""
    pattern = "**/*" if recursive else "*"
    folder = Path(folder)
    return sorted(p for p in folder.glob(pattern)
                  if p.is_file() and is_video_name(p)
                  and not any(part.endswith(RUN_SUFFIX) for part in p.relative_to(folder).parts[:-1]))


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
