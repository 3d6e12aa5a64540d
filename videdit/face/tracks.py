"""Face tracks: every face in every frame, linked over time within a shot, labelled by person.

    shots = detect_shots("talk.mp4")
    tracks = track_faces("talk.mp4", shots, make_backend("dlib"))
    tracks.people()                         # [Person("p1", frames=120, tracks=["t1", "t3"]), ...]
    chosen = select_people(tracks, "main")  # ["p1"]; "all"; "p1,p3"
    for track in tracks.editable(chosen):   # the tracks to align/encode/tune/render, one by one
        track.frames, track.landmarks       # absolute frame indices [n], landmarks [n, 68, 2]
    tracks.save(run_dir)                    # RUN/tracks.json + RUN/tracks/<id>/track.npz

How:
  * every frame is searched whole for faces (on a downscaled copy, as the align stage does), and
    each face gets its 68 landmarks on the full-resolution frame;
  * within a shot, faces are linked to the open tracks by an optimal assignment whose cost is the
    mean landmark distance in face sizes, gated by the box centres' distance (a gate that widens
    with each missed frame) and by size; a face no track takes starts a new track;
  * a track missing for up to `max_gap_frames` frames and found again is bridged: the frames in
    between get linearly interpolated landmarks and boxes, flagged `detected = False`; a longer
    absence ends the track. No track, gap or bridge crosses a shot boundary;
  * each track's identity is the mean dlib descriptor of its detections every `embed_every`
    frames; tracks are clustered into people (tracks seen in the same frame are never the same
    person), labelled p1, p2, ... by the number of frames they are present (p1: the most);
  * tracks shorter than `min_track_frames` (and frames with no track) pass through unedited:
    `FaceTracks.editable()` leaves them out.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np

from videdit.errors import InputError, NoFaceError
from videdit.face.identity import SAME_PERSON_DISTANCE, FaceEmbedder, cluster_people
from videdit.face.landmarks import DEFAULT_BACKEND, FaceDetection, LandmarkBackend, make_backend
from videdit.face.shots import Shot, ShotSettings, check_shots, detect_shots
from videdit.records import TrackEntry, TracksRecord, load_track_arrays, save_track_arrays

log = logging.getLogger(__name__)



@dataclass
class TrackSettings:
    """How faces are linked into tracks and people (the [tracks] section a preset may carry)."""

    min_track_frames: int = 10  # shorter tracks pass through unedited
    max_gap_frames: int = 5  # a face missed for at most this many frames of a shot is bridged (filled, flagged)
    gate: float = 1.0  # centre distance allowed one frame after the last sighting, in face sizes
    gate_growth: float = 0.5  # added to the gate per missed frame
    max_size_ratio: float = 1.5  # a face this much larger or smaller than the track's last is someone else
    embed_every: int = 10  # identity: every k-th detection of a track is embedded (k doubles, see below) ...
    max_embeddings: int = 6  # ... and when more than this many are kept, every other is dropped and k doubled
    same_person_distance: float = SAME_PERSON_DISTANCE  # tracks whose mean descriptors are closer are one person
    thumbnail_px: int = 112  # side of the per-track thumbnail (the contact sheet)
    full_search_every: int = 1  # 1: every frame searched whole; k > 1: between whole-frame searches every k
    #                             frames of a shot, only around the open tracks (faster; a face entering is
    #                             found up to k - 1 frames late, and those frames pass through unedited)

    def check(self) -> "TrackSettings":
        lowest = {"min_track_frames": 1, "embed_every": 1, "max_embeddings": 1, "full_search_every": 1,
                  "max_gap_frames": 0}
        for name, least in lowest.items():
            if getattr(self, name) < least:
                raise InputError(f"tracks.{name} must be at least {least}, got {getattr(self, name)}")
        return self


@dataclass
class FaceTrack:
    """One person's face through consecutive frames [start, end) of one shot.

    Per-frame arrays have end - start rows; `detected` is False where the face was not found and the
    row was interpolated from the neighbouring detections (a bridged gap).
    """

    shot: int
    start: int
    detected: np.ndarray  # bool [n]
    landmarks: np.ndarray  # float64 [n, 68, 2], full-frame pixel-centre coordinates
    boxes: np.ndarray  # float64 [n, 4] x0, y0, x1, y1
    scores: np.ndarray  # float64 [n], the detector's score (0 where bridged)
    embedding: np.ndarray | None = None  # float64 [128], mean descriptor (None: none could be computed)
    id: str = ""
    person: str = ""
    thumbnail: np.ndarray | None = field(default=None, repr=False)  # uint8 [s, s, 3]

    @property
    def n_frames(self) -> int:
        return len(self.detected)

    @property
    def end(self) -> int:
        return self.start + self.n_frames

    @property
    def frames(self) -> np.ndarray:
        """Absolute frame indices [n]."""
        return np.arange(self.start, self.end)

    @property
    def dir(self) -> str:
        from videdit.layout import TRACKS_DIR

        return f"{TRACKS_DIR}/{self.id}"

    def entry(self) -> TrackEntry:
        return TrackEntry(id=self.id, person=self.person, shot=self.shot, start=self.start, end=self.end, dir=self.dir)


@dataclass(frozen=True)
class Person:
    """One person: label, frames present (union of their tracks), their tracks, and the frames in
    tracks long enough to edit."""

    label: str
    frames: int
    tracks: tuple[str, ...]
    editable_frames: int


@dataclass
class FaceTracks:
    """All face tracks of a video, with its shots. Tracks are ordered by (shot, start, left edge)."""

    shots: list[Shot]
    tracks: list[FaceTrack]
    n_frames: int
    min_track_frames: int = 1

    def record(self) -> TracksRecord:
        return TracksRecord(shots=[(s.start, s.end) for s in self.shots], tracks=[t.entry() for t in self.tracks],
                            extra={"min_track_frames": self.min_track_frames})

    def people(self) -> list[Person]:
        return people_of(self.record(), self.min_track_frames)

    def track(self, track_id: str) -> FaceTrack:
        for track in self.tracks:
            if track.id == track_id:
                return track
        raise InputError(f"no track {track_id!r}; the tracks are {', '.join(t.id for t in self.tracks)}")

    def editable(self, people: Sequence[str] | None = None) -> list[FaceTrack]:
        """Tracks to edit: at least min_track_frames long, of the given people (None: everyone)."""
        wanted = None if people is None else set(people)
        return [t for t in self.tracks if t.n_frames >= self.min_track_frames
                and (wanted is None or t.person in wanted)]

    def save(self, run_dir: str | PathLike) -> Path:
        """RUN/tracks.json and RUN/tracks/<id>/track.npz (per-frame arrays), each written atomically."""
        for track in self.tracks:
            arrays = dict(frames=track.frames.astype(np.int64), detected=track.detected,
                          landmarks=track.landmarks.astype(np.float32), boxes=track.boxes.astype(np.float32),
                          scores=track.scores.astype(np.float32))
            if track.embedding is not None:
                arrays["embedding"] = track.embedding.astype(np.float32)
            save_track_arrays(run_dir, track.entry(), arrays)
        return self.record().save(run_dir)

    @classmethod
    def load(cls, run_dir: str | PathLike) -> "FaceTracks":
        """What save wrote (thumbnails are not kept); one InputError line when a file is missing or off."""
        run_dir = Path(run_dir)
        record = TracksRecord.load(run_dir)
        tracks = []
        for entry in record.tracks:
            arrays = load_track_arrays(run_dir, entry)
            tracks.append(FaceTrack(shot=entry.shot, start=entry.start, detected=arrays["detected"].astype(bool),
                                    landmarks=arrays["landmarks"].astype(np.float64),
                                    boxes=arrays["boxes"].astype(np.float64),
                                    scores=arrays["scores"].astype(np.float64),
                                    embedding=arrays["embedding"].astype(np.float64) if "embedding" in arrays else None,
                                    id=entry.id, person=entry.person))
        shots = [Shot(s, e) for s, e in record.shots]
        return cls(shots=shots, tracks=tracks, n_frames=record.n_frames,
                   min_track_frames=int(record.extra.get("min_track_frames", 1)))


# ----------------------------------------------------------------------------------------------
# people in a record (tracks.json alone is enough to list and choose them)


def _label_number(label: str) -> int:
    return int(label[1:]) if label[1:].isdigit() else 0


def people_of(record: TracksRecord, min_track_frames: int = 1) -> list[Person]:
    """Every person of a tracks record, p1 first."""
    frames: dict[str, set[int]] = {}
    editable: dict[str, set[int]] = {}
    tracks: dict[str, list[str]] = {}
    for entry in record.tracks:
        covered = range(entry.start, entry.end)
        frames.setdefault(entry.person, set()).update(covered)
        editable.setdefault(entry.person, set())
        if entry.n_frames >= min_track_frames:
            editable[entry.person].update(covered)
        tracks.setdefault(entry.person, []).append(entry.id)
    return [Person(label, len(frames[label]), tuple(tracks[label]), len(editable[label]))
            for label in sorted(frames, key=_label_number)]


def select_people(tracks: "FaceTracks | TracksRecord", choice: str = "main") -> list[str]:
    """Person labels chosen by `choice`: "main" (the person present in the most frames, p1), "all",
    or a comma list such as "p1,p3". One InputError line naming the people there are when a label
    does not exist, and NoFaceError when there is nobody."""
    record = tracks.record() if isinstance(tracks, FaceTracks) else tracks
    people = people_of(record)
    if not people:
        raise NoFaceError("no face in any shot: there is nobody to choose")
    labels = [p.label for p in people]
    choice = (choice or "main").strip().lower()
    if choice == "main":
        return [max(people, key=lambda p: (p.frames, -_label_number(p.label))).label]
    if choice == "all":
        return labels
    wanted = [part.strip() for part in choice.split(",") if part.strip()]
    unknown = [label for label in wanted if label not in labels]
    if unknown or not wanted:
        there = ", ".join(f"{p.label} ({p.frames} frames)" for p in people)
        what = f"no person {', '.join(unknown)}" if unknown else f"no person named in {choice!r}"
        raise InputError(f"{what}; the people there are {there} (or use main, all)")
    return sorted(set(wanted), key=_label_number)


# ----------------------------------------------------------------------------------------------
# linking


@dataclass
class _OpenTrack:
    """A track being built: its sightings so far."""

    shot: int
    frames: list[int] = field(default_factory=list)
    faces: list[FaceDetection] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    embed_stride: int = 1
    thumbnail: np.ndarray | None = None
    thumbnail_score: float = -np.inf

    @property
    def last(self) -> FaceDetection:
        return self.faces[-1]


def _thumbnail(image: np.ndarray, face: FaceDetection, side: int) -> np.ndarray:
    """A square crop 1.6 face sizes wide around the face, `side` pixels."""
    from PIL import Image

    half = 0.8 * face.size
    cx, cy = face.centre
    box = tuple(int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
    return np.asarray(Image.fromarray(image).crop(box).resize((side, side), Image.Resampling.BILINEAR))


def _interpolate(rows: list[np.ndarray], frames: list[int]) -> np.ndarray:
    """Rows at every frame from frames[0] to frames[-1], linear between the given ones."""
    values = np.stack(rows).reshape(len(rows), -1)
    wanted = np.arange(frames[0], frames[-1] + 1)
    filled = np.stack([np.interp(wanted, frames, values[:, k]) for k in range(values.shape[1])], axis=1)
    return filled.reshape((len(wanted),) + rows[0].shape)


class FaceLinker:
    """Links the faces of frames fed in order into tracks (for a stage that already decodes).

    >>> linker = FaceLinker(settings, embedder)
    >>> for frame in frames: linker.add(frame.index, frame.image, faces, shot=number_of_its_shot)
    >>> tracks = linker.finish()   # FaceTrack list, not yet labelled (see label_tracks)
    """

    def __init__(self, settings: TrackSettings | None = None, embedder: FaceEmbedder | None = None):
        self.settings = (settings or TrackSettings()).check()
        self.embedder = embedder
        self._open: list[_OpenTrack] = []
        self._done: list[FaceTrack] = []
        self._shot: int | None = None
        self._frame = -1

    def _cost(self, track: _OpenTrack, face: FaceDetection, frame: int) -> float:
        """Mean landmark distance in face sizes, or inf outside the gates."""
        last = track.last
        size = last.size
        missed = frame - track.frames[-1] - 1
        allowed = (self.settings.gate + self.settings.gate_growth * missed) * size
        ratio = face.size / size
        if np.linalg.norm(face.centre - last.centre) > allowed or not (
                1 / self.settings.max_size_ratio <= ratio <= self.settings.max_size_ratio):
            return np.inf
        return float(np.linalg.norm(face.landmarks - last.landmarks, axis=1).mean() / size)

    def add(self, frame: int, image: np.ndarray, faces: Sequence[FaceDetection], shot: int) -> None:
        """The faces found in `frame` (of shot number `shot`); frames must come in increasing order."""
        from scipy.optimize import linear_sum_assignment

        if frame <= self._frame:
            raise ValueError(f"frames must come in order: {frame} after {self._frame}")
        if shot != self._shot:  # a wall: every open track ends here
            self._close_all()
            self._shot = shot
        self._frame = frame
        # drop the tracks missing for longer than a bridge may be
        keep = []
        for track in self._open:
            if frame - track.frames[-1] - 1 > self.settings.max_gap_frames:
                self._close(track)
            else:
                keep.append(track)
        self._open = keep
        # deterministic face order: left to right, then top to bottom
        faces = sorted(faces, key=lambda f: (float(f.box[0]), float(f.box[1])))
        taken: dict[int, int] = {}
        if self._open and faces:
            cost = np.array([[self._cost(t, f, frame) for f in faces] for t in self._open])
            finite = np.where(np.isfinite(cost), cost, 1e9)
            rows, cols = linear_sum_assignment(finite)
            taken = {int(c): int(r) for r, c in zip(rows, cols) if np.isfinite(cost[r, c])}
        for index, face in enumerate(faces):
            if index in taken:
                track = self._open[taken[index]]
            else:
                track = _OpenTrack(shot=shot, embed_stride=self.settings.embed_every)
                self._open.append(track)
            track.frames.append(frame)
            track.faces.append(face)
            if (len(track.frames) - 1) % track.embed_stride == 0:
                self._sample(track, image, face)

    def open_boxes(self) -> list[np.ndarray]:
        """Last boxes of the tracks still open (where to look in the next frame)."""
        return [track.last.box for track in self._open]

    def _sample(self, track: _OpenTrack, image: np.ndarray, face: FaceDetection) -> None:
        """An identity sample of the track, and its thumbnail if this is its most confident sample.

        Samples are taken every embed_stride detections; when too many are kept, every other one is
        dropped and the stride doubled: a few samples spread evenly over a track of any length, at
        O(max_embeddings * log(length)) embeddings (dlib's ResNet is the costly part)."""
        if self.embedder is not None:
            track.embeddings.append(self.embedder.embed(image, face.box, face.landmarks))
            if len(track.embeddings) > self.settings.max_embeddings:
                track.embeddings = track.embeddings[::2]
                track.embed_stride *= 2
        if face.score > track.thumbnail_score:
            track.thumbnail = _thumbnail(image, face, self.settings.thumbnail_px)
            track.thumbnail_score = face.score

    def _close(self, track: _OpenTrack) -> None:
        frames = track.frames
        detected = np.zeros(frames[-1] - frames[0] + 1, dtype=bool)
        detected[np.asarray(frames) - frames[0]] = True
        self._done.append(FaceTrack(
            shot=track.shot, start=frames[0], detected=detected,
            landmarks=_interpolate([f.landmarks for f in track.faces], frames),
            boxes=_interpolate([np.asarray(f.box, np.float64) for f in track.faces], frames),
            scores=np.where(detected, _interpolate([np.array(f.score) for f in track.faces], frames), 0.0),
            embedding=np.mean(track.embeddings, axis=0) if track.embeddings else None,
            thumbnail=track.thumbnail))

    def _close_all(self) -> None:
        for track in self._open:
            self._close(track)
        self._open = []

    def finish(self) -> list[FaceTrack]:
        """Every track, ordered by (shot, start, left edge), ids t1, t2, ... (persons not yet set)."""
        self._close_all()
        tracks = sorted(self._done, key=lambda t: (t.shot, t.start, float(t.boxes[0, 0]), float(t.boxes[0, 1])))
        for number, track in enumerate(tracks, 1):
            track.id = f"t{number}"
        return tracks


def label_tracks(tracks: list[FaceTrack], same_person_distance: float = SAME_PERSON_DISTANCE) -> list[FaceTrack]:
    """Set each track's person: p1 is present in the most frames, then p2, ...; ties go to whoever
    appears first. Tracks without an embedding are people of their own."""
    with_embedding = [i for i, t in enumerate(tracks) if t.embedding is not None]
    overlapping = set()
    for a, i in enumerate(with_embedding):
        for b, j in enumerate(with_embedding[a + 1:], a + 1):
            if tracks[i].start < tracks[j].end and tracks[j].start < tracks[i].end:
                overlapping.add((a, b))
    clusters = cluster_people([tracks[i].embedding for i in with_embedding], overlapping, same_person_distance)
    group_of = {i: c for i, c in zip(with_embedding, clusters)}
    n_groups = max(clusters, default=-1) + 1
    for i in range(len(tracks)):
        if i not in group_of:
            group_of[i] = n_groups
            n_groups += 1
    frames: dict[int, set[int]] = {}
    for i, track in enumerate(tracks):
        frames.setdefault(group_of[i], set()).update(range(track.start, track.end))
    order = sorted(frames, key=lambda g: (-len(frames[g]), min(frames[g]), g))
    label = {group: f"p{number}" for number, group in enumerate(order, 1)}
    for i, track in enumerate(tracks):
        track.person = label[group_of[i]]
    return tracks


def _faces_near(backend: LandmarkBackend, image: np.ndarray, boxes: Sequence[np.ndarray]) -> list[FaceDetection]:
    """Faces found around each box (the backend searches the whole frame when one is lost there),
    each face once: one whose centre lies in a face already found is the same face."""
    found: list[FaceDetection] = []
    for box in boxes:
        for face in backend.find_faces(image, near=box):
            if not any(np.all(face.centre >= f.box[:2]) and np.all(face.centre <= f.box[2:]) for f in found):
                found.append(face)
    return found


def track_faces(video, shots: Sequence[Shot], backend: LandmarkBackend, settings: TrackSettings | None = None,
                embedder: FaceEmbedder | None = None, *, require_face: bool = True) -> FaceTracks:
    """Every face of a video (path or VideoReader) in tracks within `shots`, labelled by person.

    embedder: the identity model (default: dlib's face-recognition ResNet). require_face: raise
    NoFaceError (one line) when no frame of any shot holds a face.
    """
    from videdit.io.reader import VideoReader

    settings = (settings or TrackSettings()).check()
    reader = video if isinstance(video, VideoReader) else VideoReader(Path(video))
    shots = check_shots(shots)
    embedder = embedder if embedder is not None else FaceEmbedder()
    linker = FaceLinker(settings, embedder)
    number = 0
    count = 0
    for frame in reader:
        if frame.index >= shots[-1].end:
            raise InputError(f"{reader.path}: frame {frame.index} is beyond the shots [0, {shots[-1].end}); "
                             "were they found on another video?")
        while frame.index >= shots[number].end:
            number += 1
        boxes = linker.open_boxes() if frame.index > shots[number].start else []
        if boxes and (frame.index - shots[number].start) % settings.full_search_every:
            faces = _faces_near(backend, frame.image, boxes)
        else:
            faces = backend.find_faces(frame.image)
        linker.add(frame.index, frame.image, faces, shot=number)
        count += 1
    check_shots(shots, count)
    tracks = label_tracks(linker.finish(), settings.same_person_distance)
    if require_face and not tracks:
        raise NoFaceError(f"{reader.path}: no face found in any of its {len(shots)} shots ({count} frames)")
    result = FaceTracks(shots=list(shots), tracks=tracks, n_frames=count, min_track_frames=settings.min_track_frames)
    log.info("%s: %d tracks of %d people in %d shots", reader.path, len(tracks), len(result.people()), len(shots))
    return result


def find_face_tracks(video, *, landmarks: str = DEFAULT_BACKEND, shot_settings: ShotSettings | None = None,
                     track_settings: TrackSettings | None = None, backend: LandmarkBackend | None = None,
                     detect_max_side: int = 640) -> FaceTracks:
    """Shots, then face tracks and people, of a video file or image folder (two decoding passes).

    landmarks: the backend name (make_backend) when `backend` is not given.
    """
    track_settings = (track_settings or TrackSettings()).check()  # bad settings: before the long passes
    shots = detect_shots(video, shot_settings)
    backend = backend if backend is not None else make_backend(landmarks, detect_max_side=detect_max_side)
    return track_faces(video, shots, backend, track_settings)


# ----------------------------------------------------------------------------------------------
# showing them


def describe(tracks: FaceTracks, chosen: Sequence[str] = ()) -> str:
    """Shots and people as text (what `videdit faces` prints); chosen people are starred."""
    lines = [f"{len(tracks.shots)} shots, {tracks.n_frames} frames"]
    for number, shot in enumerate(tracks.shots):
        lines.append(f"  shot {number}: frames {shot.start}-{shot.end - 1} ({shot.n_frames})")
    people = tracks.people()
    lines.append(f"{len(people)} people (tracks under {tracks.min_track_frames} frames pass through unedited)")
    for person in people:
        parts = []
        for track_id in person.tracks:
            track = tracks.track(track_id)
            short = "" if track.n_frames >= tracks.min_track_frames else ", too short"
            parts.append(f"{track.id} shot {track.shot} frames {track.start}-{track.end - 1}{short}")
        mark = "*" if person.label in chosen else " "
        lines.append(f" {mark}{person.label}: {person.frames} frames present, {person.editable_frames} editable; "
                     + "; ".join(parts))
    return "\n".join(lines)


def contact_sheet(tracks: FaceTracks, chosen: Sequence[str] = ()) -> np.ndarray:
    """One labelled thumbnail per person (from their longest track), side by side: uint8 HxWx3.
    Chosen people get a green frame."""
    from PIL import Image, ImageDraw

    side = max((t.thumbnail.shape[0] for t in tracks.tracks if t.thumbnail is not None), default=112)
    people = tracks.people()
    caption = 28
    sheet = Image.new("RGB", (max(1, len(people)) * (side + 8) + 8, side + caption + 12), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for column, person in enumerate(people):
        members = [tracks.track(i) for i in person.tracks]
        best = max(members, key=lambda t: (t.thumbnail is not None, t.n_frames, -t.start))
        x = 8 + column * (side + 8)
        if best.thumbnail is not None:
            sheet.paste(Image.fromarray(best.thumbnail).resize((side, side)), (x, 8))
        colour = (60, 220, 60) if person.label in chosen else (200, 200, 200)
        draw.rectangle((x - 2, 6, x + side + 1, 9 + side), outline=colour, width=2)
        draw.text((x + 2, side + 12), f"{person.label}  {person.frames} fr", fill=colour)
    return np.asarray(sheet)
