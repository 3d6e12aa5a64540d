"""Engines: where the videos of a batch run.

- `local`: one video after another in this process .
- `ray`: one Ray task per video on a Ray cluster (`videdit.engines.ray_engine`, needs `pip install videdit[ray]`).

Both take the same pipeline, videos and run options and return `VideoResult`s in input order, so the
CLI prints the same summary table whichever engine ran. Run folders follow the same naming rule:
`OUT/<video name>.videdit/` when an output folder is given, else beside each input.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from videdit.engines.jobs import VideoJob, format_duration, make_jobs  # noqa: F401  (the engines' shared parts)
from videdit.errors import InputError, VideditError
from videdit.io.images import list_images
from videdit.io.probe import VIDEO_SUFFIXES, is_video_name
from videdit.layout import is_run_folder
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


def list_videos(folder: Path, recursive: bool = False, skipped: list[Path] | None = None) -> list[Path]:
    """The videos of a folder, sorted; never videdit's own outputs: a run folder (layout.is_run_folder: by its
    name or by what is in it) is not searched, and is added to `skipped` when given."""
    folder = Path(folder)
    found = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        found += [root_path / name for name in files if is_video_name(root_path / name)
                  and (root_path / name).is_file()]
        if not recursive:
            break
        runs = [name for name in dirs if is_run_folder(root_path / name)]
        if skipped is not None:
            skipped += [root_path / name for name in runs]
        dirs[:] = sorted(name for name in dirs if name not in runs)
    return sorted(found)


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
    skipped: list[Path] = []
    videos = list_videos(input_path, recursive, skipped) if input_path.is_dir() else []
    if input_path.is_dir() and (videos or not list_images(input_path)):
        if skipped:
            pipeline.say(f"skipping {len(skipped)} run folder(s) (an earlier run's files, not inputs): "
                         + ", ".join(str(p.relative_to(input_path)) for p in skipped))
        if not videos:
            raise InputError(f"no videos found in {input_path} (looked for {', '.join(sorted(VIDEO_SUFFIXES))}, "
                             "or image frames directly in the folder)")
        pipeline.check_weights(kwargs.get("until"))  # every missing file listed at once, before touching any video
        return run_videos(pipeline, videos, out, engine=engine, **options)
    # A file, or a folder of image frames and no videos: one video (frames in natural order at
    # align.image_folder_fps, as `videdit faces` reads it).
    if not input_path.exists():
        if input_path.is_symlink():
            raise InputError(f"{input_path} is a symbolic link to {os.readlink(input_path)}, which "
                             f"{'is a symbolic link loop' if _is_link_loop(input_path) else 'does not exist'}")
        raise InputError(f"no such file or folder: {input_path}")
    pipeline.check_weights(kwargs.get("until"))
    run_dir = Path(out) if out else pipeline.default_run_dir(input_path)
    return run_videos(pipeline, [input_path], engine=engine, run_dirs=[run_dir], **options)


def _is_link_loop(path: Path) -> bool:
    try:
        path.resolve(strict=True)
    except RuntimeError:  # pathlib's "Symlink loop" (Python < 3.13)
        return True
    except OSError as err:
        return err.errno == errno.ELOOP
    return False


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
