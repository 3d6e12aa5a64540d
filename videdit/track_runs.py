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
from typing import Any, NamedTuple

from videdit import records
from videdit.errors import InputError
from videdit.face.tracks import FaceTracks, TrackSettings, find_face_tracks, select_people
from videdit.layout import DIGESTS, STAGE_ORDER
from videdit.runner import DigestCache, StageRunner, canonical_json, digest_text
from videdit.settings import FacesOptions
from videdit.wiring import StageWiring, tracks_composite_stage

log = logging.getLogger(__name__)


def face_tracks(video: Path, run_dir: Path, faces: FacesOptions) -> FaceTracks:
    """The video's shots and face tracks, found once and reused while the video and the tracking settings
    are the same."""
    key = digest_text(canonical_json({"video": DigestCache(run_dir / DIGESTS).file_digest(video),
                                      "min_track_frames": faces.min_track_frames, "landmarks": faces.landmarks,
                                      "full_search_every": faces.full_search_every}))
    if records.tracks_key(run_dir) == key:
        return FaceTracks.load(run_dir)
    found = find_face_tracks(video, landmarks=faces.landmarks, track_settings=TrackSettings(
        min_track_frames=faces.min_track_frames, full_search_every=faces.full_search_every))
    found.save(run_dir)
    records.save_tracks_key(run_dir, key)
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


def planned_stages(pipe: Any, run_dir: Path, chosen: list, last: str, n_frames: int) -> list[PlannedStage]:
    """Every stage a run with face tracks goes through, in order: each track's, then the one composite."""
    names = _track_stage_names(pipe, last)
    planned = [PlannedStage(track_label(t) + n, n, run_dir / t.dir, t.end - t.start) for t in chosen for n in names]
    if STAGE_ORDER.index("composite") <= STAGE_ORDER.index(last):
        planned.append(PlannedStage("composite", "composite", run_dir, n_frames))
    return planned


def _track_stage_names(pipe: Any, last: str) -> list[str]:
    return [n for n in pipe.active_stages() if n != "composite" and STAGE_ORDER.index(n) <= STAGE_ORDER.index(last)]


def run_tracks(pipe: Any, video: Path, run_dir: Path, chosen: list, runner: StageRunner, last: str,
               say=print) -> dict[str, str]:
    """Each chosen track through the stages up to `last` (composite excluded) in its own folder, then the one
    composite when `last` reaches it. pipe: the videdit.pipeline.Pipeline the stages run for; `runner` runs
    the composite in RUN/, and each track gets a runner like it in its folder.
    Returns {"<track id>/<stage>" or "composite": cached | ran}."""
    names = _track_stage_names(pipe, last)
    statuses = {}
    video_frames = records.TracksRecord.load(run_dir).n_frames
    for track in chosen:
        track_dir = run_dir / track.dir
        say(f"track {track.id}: {track.person}, frames {track.start}-{track.end - 1}")
        wiring = StageWiring(pipe, video, track_dir, track=track, video_frames=video_frames)
        track_runner = StageRunner(track_dir, runner.log, force=runner.force, verify=runner.verify, warn=runner.warn,
                                   label=track_label(track))
        for name in names:
            statuses[f"{track.id}/{name}"] = track_runner.run(getattr(wiring, f"stage_{name}")()).status
    if STAGE_ORDER.index("composite") <= STAGE_ORDER.index(last):
        statuses["composite"] = runner.run(tracks_composite_stage(pipe, video, run_dir, chosen)).status
    return statuses
