"""`videdit faces`: the shots, tracks and people of a video."""
from __future__ import annotations

import json
from pathlib import Path

import click

from videdit.layout import PEOPLE_SHEET, TRACKS, run_folder_name
from videdit.settings import FacesOptions

def _known(tracks, choice: str) -> list[str]:
    """The people `choice` names that exist (for marking them on the contact sheet)."""
    from videdit.errors import InputError
    from videdit.face.tracks import select_people

    try:
        return select_people(tracks, choice)
    except InputError:
        return []


@click.command("faces")
@click.argument("video", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help=f"Folder for {TRACKS}, the track arrays and {PEOPLE_SHEET} (default: VIDEO.videdit/, the run folder).")
@click.option("--faces", "choice", default="main", show_default=True,
              help="Whom `videdit run --faces` would edit: main (the person in the most frames), all, or labels like p1,p3.")
@click.option("--min-track-frames", type=int, default=None, help="Shorter tracks pass through unedited [10].")
@click.option("--landmarks", type=click.Choice(["auto", "dlib", "face-alignment"]), default=FacesOptions.landmarks, show_default=True,
              help="Landmark model, as `run`'s (auto: face-alignment when its models are cached, else dlib).")
@click.option("--stand-ins", "stand_ins", is_flag=True,
              help="Offline, as the other verbs' --stand-ins: dlib's models only (they ship with pip; no checkpoint is needed).")
@click.option("--json", "as_json", is_flag=True, help=f"Print {TRACKS}'s content and the chosen people as JSON.")
def faces_cmd(video, out, choice, min_track_frames, landmarks, stand_ins, as_json):
    """List a video's shots and the people in it, with a contact sheet, to choose whom to edit."""
    if stand_ins:
        landmarks = "dlib"
        click.echo("videdit: stand-ins: none needed here; faces are found and told apart by dlib's models, which ship "
                   "with pip (landmarks set to dlib)", err=True)
    from videdit.face.tracks import contact_sheet, describe, select_people
    from videdit.fileio import atomic_write_bytes
    from videdit.io.png import encode_png
    from videdit.io.probe import probe_video
    from videdit.track_runs import find_and_save_tracks

    options = FacesOptions(landmarks=landmarks) if min_track_frames is None else \
        FacesOptions(landmarks=landmarks, min_track_frames=min_track_frames)
    probe_video(video)  # a missing or bad file is one line before any folder is made
    out = out if out is not None else video.with_name(run_folder_name(video.name))
    out.mkdir(parents=True, exist_ok=True)
    # the files first: a wrong --faces still leaves the list and the sheet to pick from; with their key, so a
    # `videdit run --faces` on this run folder with the same settings reuses them
    tracks = find_and_save_tracks(video, out, options)
    tracks_path = out / TRACKS
    sheet_path = atomic_write_bytes(out / PEOPLE_SHEET, encode_png(contact_sheet(tracks, _known(tracks, choice))))
    chosen = select_people(tracks, choice)
    if as_json:
        click.echo(json.dumps(dict(tracks.record().to_json(), chosen=chosen, tracks_json=str(tracks_path),
                                   contact_sheet=str(sheet_path)), indent=1))
        return
    click.echo(describe(tracks, chosen))
    click.echo(f"chosen ({choice}): {', '.join(chosen)}")
    click.echo(f"wrote {tracks_path} and {sheet_path}")
