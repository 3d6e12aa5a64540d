"""Shots and face tracks on clips built from the shipped photos, where every face's place is known.

Each clip test checks the shots, every track's frame range, the person labels (one person in two
shots, or after leaving and coming back, keeps one label) and the eye landmarks against where the
clip builder put the photo (the eyes found once on the still photo, moved by the known map).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from videdit.errors import InputError, NoFaceError
from videdit.face.landmarks import FaceDetection
from videdit.face.shots import Shot, ShotDetector, ShotSettings, detect_shots, shots_from_cuts
from videdit.face.tracks import FaceLinker, FaceTracks, TrackSettings, label_tracks, select_people, track_faces
from videdit.records import TrackEntry, TracksRecord
from videdit.synthetic import FacePlacement, ShotSpec, load_photo, make_scene_clip

SIZE = (320, 192)
FACE_PX = 88.0  # faces the HOG detector finds at full resolution (its window is 80 px)
BACKGROUND_A, BACKGROUND_B = (60, 70, 80), (110, 80, 60)


# ----------------------------------------------------------------------------------------------
# fixtures: the models once, and the eyes of each still photo


@pytest.fixture(scope="module")
def backend():
    from videdit.face.landmarks import DlibBackend

    return DlibBackend()


@pytest.fixture(scope="module")
def embedder():
    from videdit.face.identity import FaceEmbedder

    return FaceEmbedder()


@pytest.fixture(scope="module")
def photo_eyes(backend):
    """Eye centres (left, right) of each photo's face, in photo pixels, found on the still photo."""
    eyes = {}
    for name in ("astronaut", "grace_hopper"):
        faces = backend.find_faces(load_photo(name))
        face = max(faces, key=lambda f: f.size)
        eyes[name] = np.stack([face.landmarks[36:42].mean(axis=0), face.landmarks[42:48].mean(axis=0)])
    return eyes


def run_tracks(clip, backend, embedder, **settings) -> FaceTracks:
    settings.setdefault("min_track_frames", 3)
    return track_faces(clip.path, detect_shots(clip.path), backend, TrackSettings(**settings), embedder)


def assert_eyes_where_placed(tracks: FaceTracks, clip, photo_eyes, photo: str, track_id: str,
                             only_whole_faces: bool = False) -> float:
    """The track's eye centres in every frame it detected vs the photo's eyes mapped by the clip's
    known placement; returns the largest error in face sizes. only_whole_faces: skip frames where
    the face box is partly outside the frame (landmarks there are guesses)."""
    from videdit.synthetic import PHOTO_FACES

    track = tracks.track(track_id)
    worst = 0.0
    for row, frame in enumerate(track.frames):
        if not track.detected[row]:
            continue
        matrix = clip.photo_to_frame(int(frame), photo)
        assert matrix is not None, f"{track_id} has a face in frame {frame}, where {photo} is not shown"
        centre = matrix[:2, :2] @ PHOTO_FACES[photo][0] + matrix[:2, 2]
        half = matrix[0, 0] * PHOTO_FACES[photo][1] / 2
        if only_whole_faces and not (np.all(centre - half >= 0) and np.all(centre + half <= clip.size)):
            continue
        truth = photo_eyes[photo] @ matrix[:2, :2].T + matrix[:2, 2]
        found = np.stack([track.landmarks[row, 36:42].mean(axis=0), track.landmarks[row, 42:48].mean(axis=0)])
        worst = max(worst, float(np.linalg.norm(found - truth, axis=1).max()) / FACE_PX)
    assert worst < 0.06, f"{track_id}: eyes {worst:.3f} face sizes from where {photo} was placed"
    return worst


def ranges(tracks: FaceTracks) -> list[tuple[int, int, int]]:
    return [(t.shot, t.start, t.end) for t in tracks.tracks]


# ----------------------------------------------------------------------------------------------
# clips


def test_two_people_side_by_side(tmp_path, backend, embedder, photo_eyes):
    clip = make_scene_clip(tmp_path / "two.mp4", [ShotSpec(8, (
        FacePlacement("astronaut", FACE_PX, (80, 96), drift_px=(1.5, 0)),
        FacePlacement("grace_hopper", FACE_PX, (240, 96), drift_px=(-1, 0.5))))], size=SIZE)
    tracks = run_tracks(clip, backend, embedder)
    assert tracks.shots == [Shot(0, 8)]
    assert ranges(tracks) == [(0, 0, 8), (0, 0, 8)]  # ordered left to right
    left, right = tracks.tracks
    assert left.detected.all() and right.detected.all()
    assert left.person != right.person
    assert_eyes_where_placed(tracks, clip, photo_eyes, "astronaut", left.id)
    assert_eyes_where_placed(tracks, clip, photo_eyes, "grace_hopper", right.id)
    assert select_people(tracks, "all") == ["p1", "p2"]
    # searching the whole frame only every 3rd frame (around the open tracks between) finds the same
    sparse = run_tracks(clip, backend, embedder, full_search_every=3)
    assert [(t.start, t.end, t.person) for t in sparse.tracks] == [(t.start, t.end, t.person) for t in tracks.tracks]
    np.testing.assert_allclose(sparse.tracks[0].landmarks, left.landmarks, atol=2.0)


def test_hard_cut_between_two_people_at_one_place(tmp_path, backend, embedder, photo_eyes):
    # Both faces at the same spot: only the cut keeps one track from running into the other person.
    clip = make_scene_clip(tmp_path / "cut.mp4", [
        ShotSpec(6, (FacePlacement("astronaut", FACE_PX, (160, 96)),), background=BACKGROUND_A),
        ShotSpec(7, (FacePlacement("grace_hopper", FACE_PX, (160, 96)),), background=BACKGROUND_B)], size=SIZE)
    tracks = run_tracks(clip, backend, embedder)
    assert [(s.start, s.end) for s in tracks.shots] == clip.shots == [(0, 6), (6, 13)]
    assert ranges(tracks) == [(0, 0, 6), (1, 6, 13)]
    first, second = tracks.tracks
    assert first.person != second.person
    assert second.person == "p1"  # present in 7 frames against 6
    assert select_people(tracks, "main") == ["p1"]
    assert_eyes_where_placed(tracks, clip, photo_eyes, "astronaut", first.id)
    assert_eyes_where_placed(tracks, clip, photo_eyes, "grace_hopper", second.id)


def test_person_leaving_and_coming_back_keeps_the_label(tmp_path, backend, embedder, photo_eyes):
    gap = 7  # frames away: longer than max_gap_frames, so the track ends and a new one starts
    clip = make_scene_clip(tmp_path / "leave.mp4", [ShotSpec(18, (
        FacePlacement("grace_hopper", FACE_PX, (250, 96)),
        FacePlacement("astronaut", FACE_PX, (70, 96), end=5, patch=1.6),
        FacePlacement("astronaut", FACE_PX, (95, 100), start=5 + gap, patch=1.6)))], size=SIZE)
    tracks = run_tracks(clip, backend, embedder, max_gap_frames=5)
    assert tracks.shots == [Shot(0, 18)]  # leaving is not a cut
    assert sorted(ranges(tracks)) == [(0, 0, 5), (0, 0, 18), (0, 12, 18)]
    away = [t for t in tracks.tracks if t.n_frames < 18]
    stays = [t for t in tracks.tracks if t.n_frames == 18][0]
    assert away[0].person == away[1].person != stays.person
    assert stays.person == "p1" and away[0].person == "p2"  # 18 frames present against 11
    people = {p.label: p for p in tracks.people()}
    assert people["p2"].frames == 11 and people["p2"].tracks == tuple(t.id for t in away)
    for track in away:
        assert_eyes_where_placed(tracks, clip, photo_eyes, "astronaut", track.id)
    assert_eyes_where_placed(tracks, clip, photo_eyes, "grace_hopper", stays.id)


def test_person_walking_out_of_frame_and_back_keeps_the_label(tmp_path, backend, embedder, photo_eyes):
    # the astronaut slides out to the left (12 px a frame), is away, and slides back in
    clip = make_scene_clip(tmp_path / "walk.mp4", [ShotSpec(30, (
        FacePlacement("grace_hopper", FACE_PX, (250, 96)),
        FacePlacement("astronaut", FACE_PX, (120, 96), drift_px=(-12, 0), end=15, patch=1.6),
        FacePlacement("astronaut", FACE_PX, (-276, 96), drift_px=(12, 0), start=18, patch=1.6)))], size=SIZE)
    tracks = run_tracks(clip, backend, embedder, max_gap_frames=5)
    assert tracks.shots == [Shot(0, 30)]  # a steady walk is not a cut
    stays = [t for t in tracks.tracks if t.n_frames == 30]
    away = sorted((t for t in tracks.tracks if t.n_frames < 30), key=lambda t: t.start)
    assert len(stays) == 1 and len(away) == 2
    # whole in frames 0-6 (centre 120 - 12 t, half a face 44 px), gone from frame 14 on;
    # back in part from frame 20, whole from frame 27
    assert away[0].start == 0 and 7 <= away[0].end <= 14
    assert 20 <= away[1].start <= 27 and away[1].end == 30
    assert away[0].person == away[1].person != stays[0].person
    for track in away:
        assert_eyes_where_placed(tracks, clip, photo_eyes, "astronaut", track.id, only_whole_faces=True)
    assert_eyes_where_placed(tracks, clip, photo_eyes, "grace_hopper", stays[0].id)


def test_one_person_across_a_cut_is_one_person(tmp_path, backend, embedder, photo_eyes):
    clip = make_scene_clip(tmp_path / "one.mp4", [
        ShotSpec(6, (FacePlacement("astronaut", FACE_PX, (90, 96), drift_px=(1, 0)),), background=BACKGROUND_A),
        ShotSpec(6, (FacePlacement("astronaut", 1.2 * FACE_PX, (200, 100)),), background=BACKGROUND_B)], size=SIZE)
    tracks = run_tracks(clip, backend, embedder)
    assert [(s.start, s.end) for s in tracks.shots] == [(0, 6), (6, 12)]
    assert ranges(tracks) == [(0, 0, 6), (1, 6, 12)]
    assert {t.person for t in tracks.tracks} == {"p1"}
    assert [p.frames for p in tracks.people()] == [12]
    for track in tracks.tracks:
        assert_eyes_where_placed(tracks, clip, photo_eyes, "astronaut", track.id)


def test_one_frame_shot(tmp_path, backend, embedder, photo_eyes):
    clip = make_scene_clip(tmp_path / "flash.mp4", [
        ShotSpec(4, (FacePlacement("astronaut", FACE_PX, (160, 96)),), background=BACKGROUND_A),
        ShotSpec(1, (FacePlacement("grace_hopper", FACE_PX, (160, 96)),), background=BACKGROUND_B),
        ShotSpec(4, (FacePlacement("astronaut", 1.15 * FACE_PX, (120, 100)),), background=BACKGROUND_A)], size=SIZE)
    tracks = run_tracks(clip, backend, embedder, min_track_frames=3)
    assert [(s.start, s.end) for s in tracks.shots] == [(0, 4), (4, 5), (5, 9)]
    assert ranges(tracks) == [(0, 0, 4), (1, 4, 5), (2, 5, 9)]
    flash = tracks.tracks[1]
    assert tracks.tracks[0].person == tracks.tracks[2].person == "p1" and flash.person == "p2"
    assert [t.id for t in tracks.editable()] == [tracks.tracks[0].id, tracks.tracks[2].id]  # 1 frame: unedited
    assert tracks.editable(["p2"]) == []
    assert_eyes_where_placed(tracks, clip, photo_eyes, "grace_hopper", flash.id)
    # the same video gives the same tracks, byte for byte
    again = run_tracks(clip, backend, embedder, min_track_frames=3)
    tracks.save(tmp_path / "a")
    again.save(tmp_path / "b")
    for name in ["tracks.json"] + [f"{t.dir}/track.npz" for t in tracks.tracks]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    loaded = FaceTracks.load(tmp_path / "a")
    assert ranges(loaded) == ranges(tracks) and [t.person for t in loaded.tracks] == [t.person for t in tracks.tracks]
    np.testing.assert_allclose(loaded.tracks[0].landmarks, tracks.tracks[0].landmarks, atol=1e-3)
    (tmp_path / "a" / tracks.tracks[1].dir / "track.npz").unlink()
    with pytest.raises(InputError, match="t2/track.npz: missing or unreadable"):
        FaceTracks.load(tmp_path / "a")
    # the shots are what the smoothing takes as segments: nothing is smoothed across a cut
    from videdit.face.shots import shot_segments
    from videdit.temporal import SmoothSettings, smooth_latents

    steps = np.repeat(np.arange(3.0), [4, 1, 4])[:, None, None] * np.ones((1, 2, 3))
    smoothed = smooth_latents(steps, SmoothSettings(), segments=shot_segments(tracks.shots))
    np.testing.assert_allclose(smoothed, steps)  # constant inside each shot: unchanged


def test_no_face_in_any_shot_is_one_error(tmp_path, backend, embedder):
    clip = make_scene_clip(tmp_path / "empty.mp4", [ShotSpec(3, background=BACKGROUND_A),
                                                    ShotSpec(2, background=BACKGROUND_B)], size=(128, 96))
    with pytest.raises(NoFaceError, match="no face found in any of its 2 shots"):
        run_tracks(clip, backend, embedder)


# ----------------------------------------------------------------------------------------------
# the command line


def videdit(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "videdit", *map(str, args)], capture_output=True, text=True, env=env)


def test_faces_command_lists_people_and_rejects_unknown_ones(tmp_path):
    clip = make_scene_clip(tmp_path / "two.mp4", [ShotSpec(4, (
        FacePlacement("astronaut", FACE_PX, (80, 96)), FacePlacement("grace_hopper", FACE_PX, (240, 96))))],
        size=SIZE)
    out = videdit("faces", clip.path, "--out", tmp_path / "run", "--faces", "p9", "--min-track-frames", "2")
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode != 0 and len(lines) == 1, out.stderr
    assert "p9" in lines[0] and "p1 (4 frames)" in lines[0] and "p2 (4 frames)" in lines[0]
    # the list to choose from is written all the same
    record = TracksRecord.load(tmp_path / "run")
    assert record.shots == [(0, 4)] and record.people() == ["p1", "p2"]
    from PIL import Image

    sheet = Image.open(tmp_path / "run" / "people.png")
    assert sheet.width > 2 * 100 and sheet.height > 100

    out = videdit("faces", clip.path, "--out", tmp_path / "run", "--faces", "all", "--json", "--min-track-frames", "2")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["chosen"] == ["p1", "p2"] and [t["start"] for t in data["tracks"]] == [0, 0]
    # saved with their key: a run on this folder with the same tracking settings reuses them instead of searching again
    from videdit import records
    from videdit.settings import FacesOptions
    from videdit.track_runs import tracks_key

    same = FacesOptions(select="all", min_track_frames=2)
    assert records.tracks_key(tmp_path / "run") == tracks_key(clip.path, tmp_path / "run", same)
    assert records.tracks_key(tmp_path / "run") != tracks_key(clip.path, tmp_path / "run", FacesOptions(select="all"))


def test_faces_command_on_a_video_without_faces_is_one_line(tmp_path):
    clip = make_scene_clip(tmp_path / "empty.mp4", [ShotSpec(3)], size=(128, 96))
    out = videdit("faces", clip.path, "--out", tmp_path / "run")
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode != 0 and len(lines) == 1 and "no face" in lines[0], out.stderr
    assert "Traceback" not in out.stderr


# ----------------------------------------------------------------------------------------------
# shots on frames fed directly


def _flat(colour, noise_seed=None, size=(96, 64)) -> np.ndarray:
    image = np.empty((size[1], size[0], 3), np.uint8)
    image[:] = colour
    if noise_seed is not None:  # a little sensor noise: consecutive frames are never identical
        rng = np.random.default_rng(noise_seed)
        image = np.clip(image + rng.integers(-3, 4, image.shape), 0, 255).astype(np.uint8)
    return image


def _textured(seed: int, size=(96, 64)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return np.kron(small, np.ones((8, 8, 1), np.uint8))


def test_shot_detector_finds_cuts_and_one_frame_shots():
    a, b, c = _textured(1), _textured(2), _textured(3)
    detector = ShotDetector(25, ShotSettings())
    for image in [a] * 5 + [b] + [c] * 4:
        detector.add(image)
    assert detector.shots() == [Shot(0, 5), Shot(5, 6), Shot(6, 10)]
    merged = ShotDetector(25, ShotSettings(min_shot_frames=3))
    for image in [a] * 5 + [b] + [c] * 4:
        merged.add(image)
    assert merged.shots() == [Shot(0, 5), Shot(5, 10)]  # the 1-frame shot folds into the next


def test_dissolve_is_a_boundary_only_when_asked():
    a, b = _textured(1).astype(np.float64), _textured(2).astype(np.float64)
    fade = 10
    frames = [a] * 8 + [a + (b - a) * (i + 1) / (fade + 1) for i in range(fade)] + [b] * 8
    frames = [np.rint(f).astype(np.uint8) for f in frames]
    plain = ShotDetector(25, ShotSettings())
    with_dissolves = ShotDetector(25, ShotSettings(dissolve_frames=fade))
    for image in frames:
        plain.add(image)
        with_dissolves.add(image)
    assert plain.shots() == [Shot(0, len(frames))]  # each step is small: no hard cut
    shots = with_dissolves.shots()
    assert len(shots) == 2 and 8 <= shots[1].start <= 8 + fade  # inside the fade
    # a still shot with noise is not a dissolve
    still = ShotDetector(25, ShotSettings(dissolve_frames=fade))
    for seed in range(30):
        still.add(_flat((90, 100, 110), noise_seed=seed))
    assert still.shots() == [Shot(0, 30)]


def test_shots_from_cuts():
    assert shots_from_cuts([], 1) == [Shot(0, 1)]
    assert shots_from_cuts([3, 3, 0, 9, 12], 10) == [Shot(0, 3), Shot(3, 9), Shot(9, 10)]
    assert shots_from_cuts([1, 2, 6], 8, min_shot_frames=3) == [Shot(0, 6), Shot(6, 8)]
    with pytest.raises(InputError):
        shots_from_cuts([], 0)


# ----------------------------------------------------------------------------------------------
# linking, on detections made up here (no detector involved)


def _face(x: float, y: float = 50.0, size: float = 40.0, score: float = 1.0) -> FaceDetection:
    """A face box of `size` centred at (x, y) with landmarks spread over it (a fixed pattern)."""
    pattern = np.stack([np.linspace(-0.4, 0.4, 68), np.sin(np.arange(68))* 0.3], axis=1)
    return FaceDetection(box=np.array([x - size / 2, y - size / 2, x + size / 2, y + size / 2]), score=score,
                         landmarks=pattern * size + [x, y])


def _link(frames: list[list[FaceDetection]], shots: list[Shot], **settings) -> list:
    linker = FaceLinker(TrackSettings(**settings))
    image = np.zeros((100, 400, 3), np.uint8)
    for index, faces in enumerate(frames):
        shot = [n for n, s in enumerate(shots) if index in s][0]
        linker.add(index, image, faces, shot=shot)
    return linker.finish()


def test_short_gaps_are_bridged_and_flagged_long_ones_end_the_track():
    frames = [[_face(100 + 2 * i)] for i in range(12)]
    frames[3] = frames[4] = []  # 2 frames missing: bridged
    for i in range(7, 11):  # 4 frames missing: a new track
        frames[i] = []
    tracks = _link(frames, [Shot(0, 12)], max_gap_frames=3)
    assert [(t.start, t.end) for t in tracks] == [(0, 7), (11, 12)]
    bridged = tracks[0]
    assert bridged.detected.tolist() == [True, True, True, False, False, True, True]
    # filled frames lie on the line between their neighbours
    np.testing.assert_allclose(bridged.landmarks[3:5, 0, 0], frames[2][0].landmarks[0, 0] + [2, 4])
    assert bridged.scores[3] == 0 and bridged.scores[2] == 1


def test_no_track_or_bridge_crosses_a_shot_boundary():
    frames = [[_face(100)] for _ in range(8)]
    frames[3] = []  # a gap right before the cut: not filled across it
    tracks = _link(frames, [Shot(0, 4), Shot(4, 8)], max_gap_frames=5)
    assert [(t.shot, t.start, t.end) for t in tracks] == [(0, 0, 3), (1, 4, 8)]


def test_two_faces_keep_their_tracks_when_they_pass_close():
    # two faces moving towards each other; the gate and the landmark cost keep them apart
    frames = [[_face(100 + 8 * i), _face(300 - 8 * i, size=44)] for i in range(10)]
    tracks = _link(frames, [Shot(0, 10)])
    assert len(tracks) == 2
    starts = sorted(float(t.landmarks[0, :, 0].mean()) for t in tracks)
    assert np.isclose(starts[0], 100, atol=1) and np.isclose(starts[1], 300, atol=1)
    for track in tracks:
        steps = np.diff(track.landmarks[:, :, 0].mean(axis=1))
        assert np.allclose(np.abs(steps), 8, atol=1e-6)  # never jumps to the other face


def test_people_are_labelled_by_frames_present_and_never_merged_when_seen_together():
    # embeddings set by hand: the clustering and labelling, not the network, is under test here
    frames = [[_face(100), _face(300)] for _ in range(6)] + [[_face(200)] for _ in range(3)]
    tracks = _link(frames, [Shot(0, 6), Shot(6, 9)])
    tracks[0].embedding = np.zeros(128)  # left face of shot 0
    tracks[1].embedding = np.full(128, 0.001)  # right face: as close as can be, but seen together
    tracks[2].embedding = np.full(128, 0.0005)  # shot 1
    labelled = label_tracks(tracks)
    assert labelled[0].person != labelled[1].person
    assert labelled[2].person in (labelled[0].person, labelled[1].person)
    # p1 is whoever is present in the most frames: the one that shot 1's track joined
    assert labelled[2].person == "p1"


# ----------------------------------------------------------------------------------------------
# tracks.json and choosing people


def _record() -> TracksRecord:
    return TracksRecord(shots=[(0, 5), (5, 9)], tracks=[
        TrackEntry("t1", "p2", 0, 0, 5, "tracks/t1"), TrackEntry("t2", "p1", 0, 1, 5, "tracks/t2"),
        TrackEntry("t3", "p1", 1, 5, 9, "tracks/t3")])


def test_tracks_record_round_trip_and_one_line_errors(tmp_path):
    record = _record()
    path = record.save(tmp_path)
    assert TracksRecord.load(tmp_path) == record
    data = json.loads(path.read_text())
    assert data["shots"][1] == {"start": 5, "end": 9}
    assert data["tracks"][0] == {"id": "t1", "person": "p2", "shot": 0, "start": 0, "end": 5, "dir": "tracks/t1"}

    def broken(change, match):
        bad = json.loads(path.read_text())
        change(bad)
        (tmp_path / "bad").mkdir(exist_ok=True)
        (tmp_path / "bad" / "tracks.json").write_text(json.dumps(bad))
        with pytest.raises(InputError, match=match) as error:
            TracksRecord.load(tmp_path / "bad")
        assert "\n" not in str(error.value)

    broken(lambda d: d["shots"].__setitem__(1, {"start": 6, "end": 9}), "shot 1")
    broken(lambda d: d["tracks"][2].__setitem__("end", 10), "not inside its shot")
    broken(lambda d: d["tracks"][1].__setitem__("id", "t1"), "used twice")
    broken(lambda d: d["tracks"][1].__setitem__("dir", "../elsewhere"), "inside the run folder")
    broken(lambda d: d["tracks"][0].__setitem__("start", "0"), "must be an integer")
    broken(lambda d: d.pop("shots"), "needs a \"shots\" list")
    (tmp_path / "bad" / "tracks.json").write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        TracksRecord.load(tmp_path / "bad")
    with pytest.raises(InputError, match="missing"):
        TracksRecord.load(tmp_path / "nowhere")


def test_select_people():
    record = _record()
    assert select_people(record, "main") == ["p1"]  # 8 frames against 5
    assert select_people(record, "all") == ["p1", "p2"]
    assert select_people(record, "p2, p1") == ["p1", "p2"]
    with pytest.raises(InputError) as error:
        select_people(record, "p1,p9")
    assert str(error.value) == "no person p9; the people there are p1 (8 frames), p2 (5 frames) (or use main, all)"
    with pytest.raises(NoFaceError):
        select_people(TracksRecord(shots=[(0, 3)]), "main")


def test_bad_settings_are_one_line():
    with pytest.raises(InputError, match="^tracks.min_track_frames must be at least 1, got 0$"):
        TrackSettings(min_track_frames=0).check()
    with pytest.raises(InputError, match="max_gap_frames"):
        TrackSettings(max_gap_frames=-1).check()
    with pytest.raises(InputError, match="min_shot_frames"):
        ShotDetector(25, ShotSettings(min_shot_frames=0))


def test_faces_and_run_share_one_landmarks_default():
    """`videdit faces`, [faces] and `run`'s align all default to auto (FAN when its models are cached, else dlib)."""
    import inspect

    from videdit.cli.faces import faces_cmd
    from videdit.face.landmarks import DEFAULT_BACKEND
    from videdit.face.tracks import find_face_tracks
    from videdit.settings import FacesOptions
    from videdit.stages.align import AlignSettings

    cli_default = next(p.default for p in faces_cmd.params if p.name == "landmarks")
    assert DEFAULT_BACKEND == "auto"
    assert (cli_default, FacesOptions().landmarks, AlignSettings().landmarks,
            inspect.signature(find_face_tracks).parameters["landmarks"].default) == (DEFAULT_BACKEND,) * 4


def test_tracks_key_of_an_image_folder_follows_its_content(tmp_path):
    """A folder of frames (`run frames/ --faces`, the preview's key frames) is keyed by its files' content."""
    from PIL import Image

    from videdit.settings import FacesOptions
    from videdit.track_runs import tracks_key

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        Image.new("RGB", (16, 16), (10 * i, 0, 0)).save(frames / f"{i:06d}.png")
    run = tmp_path / "run"
    run.mkdir()
    first = tracks_key(frames, run, FacesOptions(select="all"))
    assert first == tracks_key(frames, run, FacesOptions(select="all"))
    Image.new("RGB", (16, 16), (0, 99, 0)).save(frames / "000001.png")
    assert tracks_key(frames, run, FacesOptions(select="all")) != first
