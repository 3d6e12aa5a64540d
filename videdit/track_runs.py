"""Several faces (`[faces] select`): the video's face tracks found once, one sub-run per chosen track, one
composite.

The tracks (RUN/tracks.json, RUN/tracks/<id>/track.npz) are reused while the video and the tracking
settings are the same (RUN/tracks.key holds their digest). Each chosen track runs the stages up to render
in its own folder RUN/tracks/<id>/ (see StageWiring with a track), and one composite stage pastes them all.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from videdit import records
from videdit.errors import InputError, VideditError
from videdit.face.tracks import FaceTracks, TrackSettings, find_face_tracks, select_people
from videdit.layout import DIGESTS, STAGE_ORDER
from videdit.runner import DigestCache, StageOutcome, StageRunner, canonical_json, digest_text, folder_digest
from videdit.settings import FacesOptions
from videdit.wiring import StageWiring, tracks_composite_stage

log = logging.getLogger(__name__)


def tracks_key(video: Path, run_dir: Path, faces: FacesOptions) -> str:
    """The digest RUN/tracks.key holds: of the video (or folder of images) and the tracking settings the tracks were
    found with."""
    source = folder_digest(video)[0] if video.is_dir() else DigestCache(run_dir / DIGESTS).file_digest(video)
    return digest_text(canonical_json({"video": source,
                                       "min_track_frames": faces.min_track_frames, "landmarks": faces.landmarks,
                                       "full_search_every": faces.full_search_every}))


def find_and_save_tracks(video: Path, run_dir: Path, faces: FacesOptions) -> FaceTracks:
    """Find the video's face tracks and save them, with their key, in the run folder (`videdit faces` too, so a
    run after it reuses them) -> the tracks as found (thumbnails included)."""
    found = find_face_tracks(video, landmarks=faces.landmarks, track_settings=TrackSettings(
        min_track_frames=faces.min_track_frames, full_search_every=faces.full_search_every))
    found.save(run_dir)
    records.save_tracks_key(run_dir, tracks_key(video, run_dir, faces))
    return found


def face_tracks(video: Path, run_dir: Path, faces: FacesOptions) -> FaceTracks:
    """The video's shots and face tracks, found once and reused while the video and the tracking settings
    are the same."""
    if records.tracks_key(run_dir) != tracks_key(video, run_dir, faces):
        find_and_save_tracks(video, run_dir, faces)
    return FaceTracks.load(run_dir)  # what later runs will read, so their cache keys agree


def chosen_tracks(video: Path, run_dir: Path, faces: FacesOptions) -> list:
    """The face tracks `[faces] select` asks for (long enough to edit); one line when there are none."""
    tracks = face_tracks(video, run_dir, faces)
    people = select_people(tracks, faces.select)
    chosen = tracks.editable(people)
    lengths = [t.n_frames for t in tracks.tracks if t.person in people]
    if not chosen and lengths and tracks.n_frames < tracks.min_track_frames:
        # A clip shorter than the minimum track: it is edited with --faces as without (the longest tracks).
        chosen = dataclasses.replace(tracks, min_track_frames=max(lengths)).editable(people)
        log.warning("the clip has %d frames, fewer than faces.min_track_frames = %d: tracks of %d frames are edited",
                    tracks.n_frames, tracks.min_track_frames, max(lengths))
    if not chosen:
        raise InputError(f"{video}: {', '.join(people)} {'has' if len(people) == 1 else 'have'} no track of at least "
                         f"{tracks.min_track_frames} frames; nothing to edit (see `videdit faces {video}`)")
    return chosen


def track_label(track) -> str:
    """The prefix of a track's stages in the progress lines ("t1/encode"): one counter across all tracks."""
    return f"{track.id}/"


class PlannedStage(NamedTuple):
    label: str  # what the progress lines call it ("encode", "t1/encode")
    stage: str
    folder: Path  # the folder holding the stage's own folder
    n_frames: int


class TrackStageTasks(Protocol):
    """Runs one stage of several face tracks side by side (the Ray engine: one task per track)."""

    def __call__(self, stage: str, jobs: list[tuple[Any, Path]]) -> dict[str, float | str]:
        """Fill each (track, work folder) with the track's `stage` -> {track id: seconds it took, or one line
        saying why it failed for good}; returns when every job has ended."""


# The stage whose tracks run side by side when a TrackStageTasks is given: tuning, the one serial stage that
# costs minutes to hours per track and needs nothing from the other tracks.
SIDE_BY_SIDE = "tune"


def side_by_side_stage(tasks: TrackStageTasks | None, chosen: list) -> str | None:
    """The stage whose tracks run side by side: SIDE_BY_SIDE when there are tasks to run them and tracks to share."""
    return SIDE_BY_SIDE if tasks is not None and len(chosen) > 1 else None


def track_stage_order(names: list[str], chosen: list, side_by_side: str | None) -> list[tuple[Any, str]]:
    """(track, stage) in the order a run goes through them: each track's stages in turn; with `side_by_side`,
    every track's stages before it, then that stage of all tracks together, then the stages after it."""
    if side_by_side not in names:
        return [(t, n) for t in chosen for n in names]
    cut = names.index(side_by_side)
    return ([(t, n) for t in chosen for n in names[:cut]] + [(t, side_by_side) for t in chosen]
            + [(t, n) for t in chosen for n in names[cut + 1:]])


def planned_stages(pipe: Any, run_dir: Path, chosen: list, last: str, n_frames: int,
                   side_by_side: str | None = None) -> list[PlannedStage]:
    """Every stage a run with face tracks goes through, in order: the tracks' (track_stage_order), then the
    one composite."""
    order = track_stage_order(_track_stage_names(pipe, last), chosen, side_by_side)
    planned = [PlannedStage(track_label(t) + n, n, run_dir / t.dir, t.end - t.start) for t, n in order]
    if STAGE_ORDER.index("composite") <= STAGE_ORDER.index(last):
        planned.append(PlannedStage("composite", "composite", run_dir, n_frames))
    return planned


def _track_stage_names(pipe: Any, last: str) -> list[str]:
    return [n for n in pipe.active_stages() if n != "composite" and STAGE_ORDER.index(n) <= STAGE_ORDER.index(last)]


def run_tracks(pipe: Any, video: Path, run_dir: Path, chosen: list, runner: StageRunner, last: str,
               say=print, tasks: TrackStageTasks | None = None) -> dict[str, str]:
    """Each chosen track through the stages up to `last` (composite excluded) in its own folder, then the one
    composite when `last` reaches it. pipe: the videdit.pipeline.Pipeline the stages run for; `runner` runs
    the composite in RUN/, and each track gets a runner like it in its folder. tasks: where the tracks' tuning
    runs side by side (SIDE_BY_SIDE); without, here, one track after another.
    Returns {"<track id>/<stage>" or "composite": cached | ran}."""
    video_frames = records.TracksRecord.load(run_dir).n_frames
    wirings = {t.id: StageWiring(pipe, video, run_dir / t.dir, track=t, video_frames=video_frames) for t in chosen}
    runners = {t.id: StageRunner(run_dir / t.dir, runner.log, force=runner.force, verify=runner.verify,
                                 warn=runner.warn, label=track_label(t)) for t in chosen}
    side_by_side = side_by_side_stage(tasks, chosen)
    order = track_stage_order(_track_stage_names(pipe, last), chosen, side_by_side)
    statuses, announced = {}, set()
    for track, name in order:
        if name == side_by_side:
            if track is chosen[0]:
                statuses.update(_side_by_side(name, chosen, wirings, runners, tasks, say))
            continue
        if track.id not in announced:
            announced.add(track.id)
            say(f"track {track.id}: {track.person}, frames {track.start}-{track.end - 1}")
        statuses[f"{track.id}/{name}"] = runners[track.id].run(getattr(wirings[track.id], f"stage_{name}")()).status
    if STAGE_ORDER.index("composite") <= STAGE_ORDER.index(last):
        statuses["composite"] = runner.run(tracks_composite_stage(pipe, video, run_dir, chosen)).status
    return statuses


def _side_by_side(name: str, chosen: list, wirings: dict, runners: dict, tasks: TrackStageTasks,
                  say) -> dict[str, str]:
    """Stage `name` of every track at once through `tasks`; the tracks that finished are completed (manifest,
    rename) before the first failure, if any, fails the run with one line naming its track."""
    statuses, jobs, stages = {}, [], {}
    for track in chosen:
        stage = getattr(wirings[track.id], f"stage_{name}")()
        started = runners[track.id].begin(stage)
        if isinstance(started, StageOutcome):
            statuses[f"{track.id}/{name}"] = started.status
        else:
            jobs.append((track, started))
            stages[track.id] = stage
    if not jobs:
        return statuses
    say(f"{name}: tracks {', '.join(t.id for t, _ in jobs)} side by side")
    ended = tasks(name, jobs)
    failures = []
    for track, work in jobs:
        outcome = ended.get(track.id)
        if isinstance(outcome, (int, float)) and not isinstance(outcome, bool):
            statuses[f"{track.id}/{name}"] = runners[track.id].finish(stages[track.id], work, float(outcome)).status
        else:
            failures.append(f"{track_label(track)}{name} ({track.person}, frames {track.start}-{track.end - 1}) "
                            f"failed: {outcome}")
    if failures:
        raise VideditError(failures[0] + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else "")
                           + "; finished tracks are kept, rerun to resume")
    return statuses
