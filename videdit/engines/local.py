"""The local engine: the videos one after another in this process, with the same progress lines as Ray's."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from videdit.engines.jobs import format_duration, make_jobs

if TYPE_CHECKING:
    from videdit.pipeline import Pipeline
    from videdit.runner import VideoResult


def run_videos_local(pipeline: "Pipeline", videos: Sequence[Path], out: Path | None = None, *,
                     until: str | None = None, from_stage: str | None = None, force: bool = False,
                     run_dirs: Sequence[Path] | None = None,
                     echo: Callable[[str], None] | None = None,
                     shard_frames: int | str | None = None) -> list["VideoResult"]:
    """Run each video through `pipeline.run`; failures are reported and the rest go on.

    shard_frames: align's crops, encode, render and composite in parts of this many frames, one after another here (the
    same outputs; a run cut off keeps its finished parts); "auto": one part."""
    from videdit.shards import ShardOptions, parse_shard_frames

    shards = None if shard_frames is None else ShardOptions(frames=parse_shard_frames(shard_frames))
    jobs = make_jobs(pipeline, videos, out, run_dirs)
    # Batch lines only for batches: a single video's outcome is the caller's one line.
    say = echo or (None if pipeline.quiet or len(jobs) == 1 else pipeline.echo)
    results: list[VideoResult] = []
    t0 = time.perf_counter()
    for job in jobs:
        result = pipeline.run(job.video, job.run_dir, until=until, from_stage=from_stage, force=force, shards=shards)
        results.append(result)
        if say:
            if result.status != "ok":
                say(f"  failed: {result.error}")
            failed = sum(r.status != "ok" for r in results)
            left = len(jobs) - len(results)
            eta = (time.perf_counter() - t0) / len(results) * left
            say(f"[local] {len(results) - failed}/{len(jobs)} done, {failed} failed, ETA {format_duration(eta)}")
    return results
