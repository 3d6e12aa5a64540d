"""The align stage: find one face in every frame, write aligned and unaligned crops and transforms.

Output (inside `out_dir`, the public run-folder format, see docs/ARCHITECTURE.md):

    transforms.npz   rotation_deg f[N], translation f[N,2], matrix f[N,3,3] (= make_transform(t, r)),
                     face_found bool[N], landmarks f[N,68,2] (source pixels, pixel-centre coordinates),
                     box_quads f[N,4,2] (the fixed box of each frame's shot: a cut is a wall, so each
                     shot has its own), box_quad f[4,2] (the first shot's), aligned_quads f[N,4,2], crop_size int,
                     pts int[N] and time_s f[N] (frame timestamps), multi_face bool[N] (several
                     faces seen; only known on frames searched whole: see full_search_every)
    aligned/000000.png ...    FFHQ-style aligned crops, aligned_size^2 RGB (the encoder's input size)
    unaligned/000000.png ...  crops of the fixed box of the frame's shot, crop_size^2 RGB
    preview.mp4               source frames (scaled down) with landmarks, eye line, quads drawn
    video.json                VideoInfo of the source
    align.json                the landmark backend used and the frame counts (found, filled in, several faces)

N is the number of frames decoded from the source, always. Frames where the face was not found keep
their place: their landmarks are interpolated from the nearest frames that have it (held at the
ends), crops and transforms follow from those, and face_found says which.

The video is decoded once where it can be: with the published fixed box ("first") and no quad
smoothing, a frame whose face was detected has final crops as soon as its shot's first face is known (the box), so they
are written during the landmark pass (threads cut and compress them while the next frames decode). Only
the frames left (no face detected, before their shot's first face, or every frame with box "cover" or
smooth_quads) are cut in a second pass, which converts no other frame and stops after the last of them.
Memory does not grow with the video's length. The preview then shows what was detected (frames without
a detection: the box only, with an orange border); in the two-pass case it shows the filled-in
landmarks in orange.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from videdit.face.alignment import (
    ENCODER_INPUTS,
    covering_box,
    encoder_crop,
    eye_centres,
    ffhq_quad,
    fill_missing,
    frame_transform,
    quad_to_crop,
    smooth_quads,
)
from videdit.face.landmarks import DEFAULT_BACKEND, N_LANDMARKS, FaceTracker, LandmarkBackend, make_backend, roll_deg
from videdit import progress, records
from videdit.errors import InputError, NoFaceError
from videdit.io.png import write_png
from videdit.io.probe import VideoInfo, probe_video
from videdit.io.reader import VideoReader
from videdit.io.writer import VideoWriter
from videdit.layout import ALIGN_GEOMETRY

log = logging.getLogger(__name__)

__all__ = ["AlignSettings", "AlignResult", "run_align", "probe_video"]

BOX_CHOICES = ("first", "cover")
QUAD_RULES = ("eyes", "ffhq")


@dataclass
class AlignSettings:
    """Settings of the align stage (the [align] section of a preset)."""

    crop_size: int = 1024  # side of the unaligned crops (the generator's resolution: tuning's targets)
    aligned_size: int = 256  # side of the aligned crops: the encoder's input (the pipeline sets encode.input_size)
    landmarks: str = DEFAULT_BACKEND  # auto | dlib | face-alignment (fan)
    device: str = "auto"  # where face-alignment runs (auto: CUDA when available); dlib is CPU only
    box: str = "first"  # fixed unaligned box: "first" (quad of the first frame with a face, as published)
    #                     or "cover" (turned like it, large enough to hold the face in every frame)
    smooth_quads: int = 0  # moving-average window over aligned quads, in frames (0 = off, as published)
    quad_rule: str = "eyes"  # "eyes" (video code: 2 * eye distance) or "ffhq" (data-set rule)
    encoder_input: str = "published"  # aligned crop: "published" (cut at 1024, then PIL's bilinear resize, as
    #                                   stylegan3-editing) or "direct" (cut at aligned_size): docs/deviations.md
    preview: bool = True  # write preview.mp4
    preview_height: int = 360  # preview frames are reduced by an integer factor to at most this height
    max_faces_warning: bool = True  # warn once when frames hold several faces
    full_search_every: int = 25  # frames; between these the face is searched near its last box only
    detect_max_side: int = 640  # faces are searched on a copy of the frame this large (longest side)
    image_folder_fps: str = "25"  # frame rate given to a folder of images
    png_compression: int = 1  # 0-9: PNG writing speed vs size (lossless either way)
    write_threads: int = 2  # crops are cut and PNG-encoded in these threads, overlapping the decoding
    detect_shots: bool = True  # find hard cuts (PySceneDetect) while reading: no smoothing or fill-in crosses one


@dataclass
class AlignResult:
    out_dir: Path
    transforms_path: Path
    aligned_dir: Path
    unaligned_dir: Path
    preview_path: Path | None
    video_json: Path
    n_frames: int
    n_faces_found: int  # frames where the followed face was detected
    n_interpolated: int  # frames filled in from their neighbours
    n_multi_face: int  # frames with more than one face
    backend_used: str
    box_quad: np.ndarray = field(repr=False)  # the first shot's box
    box_quads: np.ndarray = field(repr=False)  # [N,4,2]: every frame's (one box per shot)


@dataclass
class _Landmarks:
    """What the first pass over the video collects."""

    landmarks: np.ndarray  # [N, 68, 2], NaN where not found
    found: np.ndarray  # [N] bool
    multi_face: np.ndarray  # [N] bool
    pts: np.ndarray  # [N] int
    time_s: np.ndarray  # [N] float


def _detect_all(reader: VideoReader, backend, warn_multi: bool, full_search_every: int, shots=None,
                first_pass: "_FirstPassCrops | None" = None) -> _Landmarks:
    tracker = FaceTracker()
    roll = 0.0  # eye-line angle of the followed face in the last frame it was found
    landmarks, found, multi, pts, times = [], [], [], [], []
    warned = False
    for frame in progress.track(reader, reader.info.n_frames, "align: landmarks", "frame"):
        # Around the last box while the face is followed (fast); the whole frame once it is lost and
        # every full_search_every frames (to notice other faces: a better match, or a warning).
        if shots is not None:
            shots.add(frame.image)
        full = tracker.missed > 0 or full_search_every <= 1 or frame.index % full_search_every == 0
        near = None if full else tracker.last_box
        faces = backend.find_faces(frame.image, near=near, roll_deg=roll)
        if full and tracker.last_box is not None and abs(roll) > backend.upright_above_deg:
            # a strongly rolled face may be invisible to the whole-frame search: look upright near it too
            faces = _merge(faces, backend.faces_upright(frame.image, tracker.last_box, roll))
        chosen = tracker.choose(faces)
        points = np.asarray(chosen.landmarks, dtype=np.float64) if chosen is not None else None
        if points is not None:
            roll = roll_deg(points)
        multi.append(len(faces) > 1)
        if len(faces) > 1 and warn_multi and not warned:
            log.warning("frame %d has %d faces; following one person (the largest at the start, then the "
                        "nearest to its last position)", frame.index, len(faces))
            warned = True
        found.append(points is not None)
        landmarks.append(points if points is not None else np.full((N_LANDMARKS, 2), np.nan))
        pts.append(frame.pts)
        times.append(frame.time_s)
        if first_pass is not None:
            first_pass.add(frame, points, shots.shot_start if shots is not None else 0)
    if not found:
        raise InputError(f"{reader.path}: no frame could be decoded")
    return _Landmarks(np.asarray(landmarks, dtype=np.float64), np.asarray(found), np.asarray(multi),
                      np.asarray(pts, dtype=np.int64), np.asarray(times, dtype=np.float64))


def _merge(faces: list, more: list) -> list:
    """faces plus those of `more` whose centre is not inside a box of `faces` (the same face twice)."""
    merged = list(faces)
    for face in more:
        if not any(np.all(face.centre >= f.box[:2]) and np.all(face.centre <= f.box[2:]) for f in faces):
            merged.append(face)
    return merged


def _preview_reduction(info: VideoInfo, height: int) -> int:
    """Integer factor that brings the source down to at most `height` rows (PIL's fast box reduction)."""
    return max(1, -(-info.height // max(1, height)))


def _draw_preview(image: np.ndarray, reduction: int, landmarks: np.ndarray | None, aligned_quad: np.ndarray | None,
                  box_quad: np.ndarray | None, found: bool) -> np.ndarray:
    """The frame reduced, with the fixed box (blue), the aligned quad, the eye line and the landmarks (green:
    detected, orange: filled in). Without landmarks (no detection, first pass) only the box and an orange border."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(image)
    if reduction > 1:
        picture = picture.reduce(reduction)
    factors = np.full(2, 1.0 / reduction)

    def to_preview(points):
        return [tuple(p) for p in ((np.asarray(points) + 0.5) * factors - 0.5)]

    draw = ImageDraw.Draw(picture)
    point_colour = (40, 255, 40) if found else (255, 140, 0)  # orange: interpolated
    if box_quad is not None:
        draw.polygon(to_preview(box_quad), outline=(60, 120, 255))
    if landmarks is None:
        draw.rectangle((0, 0, picture.width - 1, picture.height - 1), outline=(255, 140, 0), width=3)
        return np.asarray(picture)
    draw.polygon(to_preview(aligned_quad), outline=point_colour)
    left, right = eye_centres(landmarks)
    draw.line(to_preview([left, right]), fill=(255, 40, 40), width=2)
    radius = max(1.0, 1.5 * factors[0] * 2)
    for x, y in to_preview(landmarks):
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=point_colour)
    return np.asarray(picture)


class _Preview:
    """preview.mp4, drawn and encoded in a worker thread of its own (in frame order), opened at the first
    frame (its size follows from the reduction)."""

    def __init__(self, path: Path, info: VideoInfo, height: int):
        from concurrent.futures import ThreadPoolExecutor

        self.path = path
        self._info = info
        self._reduction = _preview_reduction(info, height)
        self._writer = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="videdit-preview")
        self._pending = []

    def add(self, image: np.ndarray, pts: int, landmarks, aligned_quad, box_quad, found: bool) -> None:
        self._pending.append(self._pool.submit(self._write, image, pts, landmarks, aligned_quad, box_quad, found))
        while len(self._pending) > 4:
            self._pending.pop(0).result()  # re-raises the worker's error here

    def _write(self, image, pts, landmarks, aligned_quad, box_quad, found) -> None:
        drawn = _draw_preview(image, self._reduction, landmarks, aligned_quad, box_quad, found)
        if self._writer is None:
            self._writer = VideoWriter(self.path, self._info.fps, (drawn.shape[1], drawn.shape[0]),
                                       time_base=self._info.time_base, crf=28, preset="veryfast")
        self._writer.write(drawn, pts=int(pts))

    def close(self, discard: bool = False) -> None:
        try:
            for future in self._pending:
                if discard:
                    future.cancel()
                else:
                    future.result()
        finally:
            self._pool.shutdown(wait=True)
            if self._writer is not None:
                self._writer.close(discard=discard)
                self._writer = None


def _save_crop(cut, frame: np.ndarray, quad: np.ndarray, size: int, path: Path, compression: int) -> None:
    write_png(path, cut(frame, quad, size), level=int(compression))


class _CropWriter:
    """Cuts and saves crops in worker threads (PIL's warp and zlib release the GIL), with
    at most a few frames waiting so memory stays bounded."""

    def __init__(self, threads: int, compression: int):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="videdit-crops")
        self._pending = []
        self._limit = 4 * max(1, threads)
        self._compression = compression

    def submit(self, cut, frame: np.ndarray, quad: np.ndarray, size: int, path: Path) -> None:
        """Write cut(frame, quad, size) to path in a worker thread."""
        self._pending.append(self._pool.submit(_save_crop, cut, frame, quad, size, path, self._compression))
        while len(self._pending) > self._limit:
            self._pending.pop(0).result()  # re-raises a worker's error here

    def frame(self, image: np.ndarray, index: int, aligned_quad: np.ndarray, box_quad: np.ndarray,
              settings: "AlignSettings", out_dir: Path) -> None:
        """Both crops of one frame: the aligned one at the encoder's size, the fixed box's at crop_size."""
        name = records.frame_name(index)
        cut_aligned = partial(encoder_crop, encoder_input=settings.encoder_input)
        self.submit(cut_aligned, image, aligned_quad, int(settings.aligned_size), out_dir / records.ALIGNED / name)
        # The fixed box's crop (tuning's targets) by the fast warp: within one 8-bit step of PIL's, where the published
        # code's JPEG round trips move it by more (docs/deviations.md); the encoder's input keeps PIL's, as published.
        cut_unaligned = partial(quad_to_crop, fast_warp=True)
        self.submit(cut_unaligned, image, box_quad, int(settings.crop_size), out_dir / records.UNALIGNED / name)

    def close(self, wait_for_all: bool = True) -> None:
        try:
            if wait_for_all:
                for future in self._pending:
                    future.result()
        finally:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)


class _FirstPassCrops:
    """During the landmark pass: the crops of each frame that are final already (a detected face, once its
    shot's fixed box is known: the published "first" box is the shot's first detected quad), and the
    preview of what was detected. What it wrote is checked against the final geometry afterwards."""

    def __init__(self, out_dir: Path, settings: "AlignSettings", crops: _CropWriter | None, preview: _Preview | None):
        self._out_dir = out_dir
        self._settings = settings
        self._crops = crops  # None: the preview only (the crops are cut later, in parts)
        self._preview = preview
        self._shot_start = 0
        self._box: np.ndarray | None = None  # the box of the shot being read, once a face was seen in it
        self.written: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # frame -> (aligned quad, box) its crops used

    def add(self, frame, landmarks: np.ndarray | None, shot_start: int) -> None:
        if shot_start != self._shot_start:  # a cut: a new box from this shot's first face
            self._shot_start, self._box = shot_start, None
        quad = None
        if landmarks is not None:
            quad = ffhq_quad(landmarks, self._settings.quad_rule)
            if self._box is None:
                self._box = quad
            if self._crops is not None:
                self._crops.frame(frame.image, frame.index, quad, self._box, self._settings, self._out_dir)
                self.written[frame.index] = (quad, self._box)
        if self._preview is not None:
            self._preview.add(frame.image, frame.pts, landmarks, quad, self._box, landmarks is not None)

    def left_over(self, quads: np.ndarray, boxes: np.ndarray) -> list[int]:
        """Frames whose crops are still to be cut: not written, or cut with other quads or box than the final ones."""
        return [i for i in range(len(quads)) if i not in self.written
                or not (np.array_equal(self.written[i][0], quads[i]) and np.array_equal(self.written[i][1], boxes[i]))]


def shot_boxes(quads: np.ndarray, found: np.ndarray, segments: list[tuple[int, int]], rule: str) -> np.ndarray:
    """The fixed unaligned box of every frame [N,4,2]: one per shot (a cut is a wall), "first": the quad of
    the shot's first frame with a face (as published, per shot), "cover": turned like it and large enough
    for the face in all of the shot's frames. A shot without a face takes the box of the nearest shot
    that has one (its frames pass through unedited anyway)."""
    boxes = np.empty_like(quads)
    with_face = [(start, end) for start, end in segments if found[start:end].any()]
    if not with_face:
        raise ValueError("no shot has a face")
    for start, end in segments:
        # frames between this shot and that one; the earlier shot on a tie
        nearest = min(with_face, key=lambda seg: (max(start - seg[1], seg[0] - end, 0), seg[0] > start))
        lo, hi = nearest if not found[start:end].any() else (start, end)
        first = lo + int(np.flatnonzero(found[lo:hi])[0])
        boxes[start:end] = quads[first] if rule == "first" else covering_box(quads[lo:hi], quads[first])
    return boxes


@contextmanager
def _writers(settings: "AlignSettings", out_dir: Path, info: VideoInfo, preview: bool):
    """(crop writer, preview or None): both finished when the block ends, abandoned if it raises."""
    crops = _CropWriter(settings.write_threads, settings.png_compression)
    view = _Preview(out_dir / records.PREVIEW, info, settings.preview_height) if preview else None
    try:
        yield crops, view
        crops.close()
    except BaseException:
        crops.close(wait_for_all=False)
        if view is not None:
            view.close(discard=True)
        raise
    if view is not None:
        view.close()


def _prepare_crop_folders(out_dir: Path, clear: bool = True) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for folder in (out_dir / records.ALIGNED, out_dir / records.UNALIGNED):
        folder.mkdir(exist_ok=True)
        for stale in folder.glob("*.png") if clear else ():  # from an interrupted earlier run into the same folder
            stale.unlink()


@dataclass
class TrackInput:
    """A face track found beforehand (videdit.face.tracks): align only its frames [start, end) from these
    landmarks (source pixels, gaps already bridged), `detected` False where they were filled in."""

    start: int
    end: int
    landmarks: np.ndarray
    detected: np.ndarray


def run_align(source: Path, out_dir: Path, settings: AlignSettings | None = None, *,
              backend: LandmarkBackend | None = None, track: TrackInput | None = None,
              cut_crops: bool = True) -> AlignResult:
    """Run the align stage on a video file or an image folder, writing into out_dir.

    `backend` reuses an already built landmark backend (building dlib's takes seconds; a folder of
    videos or a test suite can share one); by default settings.landmarks picks it. With `track`, only
    that track's frames are aligned, from its landmarks (no detection): frame i of the output is source
    frame track.start + i, and the track lies in one shot. cut_crops False: everything but the crops (the
    landmark pass, the record, the preview) and the geometry the crops are cut with (ALIGN_GEOMETRY), for
    `cut_crops_part` to cut them in frame ranges (a sharded run; needs `shardable(settings)`).

    Raises InputError for unreadable input, NoFaceError when no frame has a face, MissingWeightsError
    when the chosen landmark model is absent.
    """
    settings = settings or AlignSettings()
    if settings.box not in BOX_CHOICES:
        raise InputError(f"unknown align box {settings.box!r}; choose one of {', '.join(BOX_CHOICES)}")
    for name in ("crop_size", "aligned_size"):
        if int(getattr(settings, name)) < 8:
            raise InputError(f"align {name} must be at least 8, got {getattr(settings, name)}")
    if settings.quad_rule not in QUAD_RULES:
        raise InputError(f"unknown align quad_rule {settings.quad_rule!r}; choose one of {', '.join(QUAD_RULES)}")
    if settings.encoder_input not in ENCODER_INPUTS:
        raise InputError(f"unknown align encoder_input {settings.encoder_input!r}; choose one of {', '.join(ENCODER_INPUTS)}")
    try:
        folder_fps = Fraction(str(settings.image_folder_fps))
        if folder_fps <= 0:
            raise ValueError
    except (ValueError, ZeroDivisionError):
        raise InputError(f"align image_folder_fps must be a positive number, got {settings.image_folder_fps!r}") from None
    source, out_dir = Path(source), Path(out_dir)
    reader = VideoReader(source, image_folder_fps=folder_fps)
    info = reader.info
    if backend is None and track is None:
        backend = make_backend(settings.landmarks, device=settings.device, detect_max_side=settings.detect_max_side)
    log.info("align: %s, landmarks by %s", source, backend.name if backend is not None else "the face track")

    if track is not None:
        return _align_track(reader, source, out_dir, settings, track)
    shot_detector = None
    if settings.detect_shots:
        from videdit.face.shots import ShotDetector

        shot_detector = ShotDetector(info.fps)
    # Pass 1: landmarks of the followed face, and the crops that are final already (see the module doc).
    # (Without crops, those already merged from parts stay: a merge cut off after removing the geometry.)
    _prepare_crop_folders(out_dir, clear=cut_crops)
    streaming = _streaming(settings)
    with _writers(settings, out_dir, info, preview=settings.preview and streaming) as (crops, preview):
        first_pass = _FirstPassCrops(out_dir, settings, crops if cut_crops else None, preview) if streaming else None
        found_landmarks = _detect_all(reader, backend, settings.max_faces_warning, settings.full_search_every,
                                      shot_detector, first_pass)
    n_frames = len(found_landmarks.found)
    segments = ([(s.start, s.end) for s in shot_detector.shots()] if shot_detector is not None else [(0, n_frames)])
    if not info.n_frames_is_estimate and n_frames < info.n_frames:
        log.warning("%s: %d frames decoded of the %d its header announces (truncated file?)", source, n_frames,
                    info.n_frames)
    found = found_landmarks.found
    if not found.any():
        raise NoFaceError(f"{source}: no face found in any of its {n_frames} frames")
    # Missing frames are filled from their own shot (a cut is a wall); a shot with no face at all from the
    # nearest found frames (its frames stay flagged and pass through unedited).
    landmarks = fill_missing(found_landmarks.landmarks, found)
    for start, end in segments:
        if found[start:end].any() and not found[start:end].all():
            landmarks[start:end] = fill_missing(found_landmarks.landmarks[start:end], found[start:end])

    return _write_alignment(reader, source, out_dir, settings, landmarks, found, found_landmarks.multi_face,
                            segments, backend.name, first_pass=first_pass,
                            timestamps=(found_landmarks.pts, found_landmarks.time_s), cut_crops=cut_crops)


def _streaming(settings: AlignSettings) -> bool:
    """Whether a frame's crops are final when its landmarks are found (the published fixed box, no smoothing):
    then they are cut in the landmark pass, and the preview drawn there."""
    return settings.box == "first" and settings.smooth_quads <= 1


def shardable(settings: AlignSettings) -> bool:
    """Whether the crops can be cut in frame ranges with the same bytes as in one run: not when the preview is
    drawn while cutting them (it is one H.264 stream)."""
    return _streaming(settings) or not settings.preview


def cut_crops_part(source: Path, work: Path, out_dir: Path, settings: AlignSettings, frames: tuple[int, int]) -> None:
    """The crops of frames [start, end) into out_dir/aligned/ and out_dir/unaligned/, from the geometry a
    `run_align(cut_crops=False)` left in `work`: the bytes the unsharded stage writes for them."""
    start, end = frames
    quads, boxes = records.load_crop_geometry(work)
    _prepare_crop_folders(out_dir)
    reader = VideoReader(source, image_folder_fps=Fraction(str(settings.image_folder_fps)))
    with _writers(settings, out_dir, reader.info, preview=False) as (crops, _):
        _cut_frames(reader, source, list(range(start, end)), 0, quads, boxes, settings, out_dir, crops, "align")


def landmark_pass_kept(work: Path) -> bool:
    """Whether `work` holds a finished `run_align(cut_crops=False)` (its record and the crops' geometry), which a
    sharded align resumes from instead of searching the video again."""
    return (work / ALIGN_GEOMETRY).is_file() and (work / records.TRANSFORMS).is_file()


def _cut_frames(reader: VideoReader, source: Path, wanted: list[int], first_frame: int, quads: np.ndarray,
                boxes: np.ndarray, settings: AlignSettings, out_dir: Path, crops: _CropWriter, desc: str,
                also: Callable[[Any, int], None] | None = None) -> list[tuple[int, float]]:
    """Read the source frames `wanted` and cut each one's crops (output frame i = source frame first_frame + i),
    `also(frame, i)` beside -> (pts, time_s) of each; one line when the source ends before the last of them.
    No bar when there is nothing to cut (a "0 frames" line says nothing)."""
    read: list[tuple[int, float]] = []
    for frame in progress.track(reader.frames(wanted), len(wanted), desc, "frame") if wanted else ():
        i = frame.index - first_frame
        read.append((frame.pts, frame.time_s))
        crops.frame(frame.image, i, quads[i], boxes[i], settings, out_dir)
        if also is not None:
            also(frame, i)
    if len(read) != len(wanted):
        raise InputError(f"{source}: {len(read)} frames on the second read where {len(wanted)} were expected")
    return read


def merge_align_parts(folders: list[Path], work: Path) -> None:
    """The parts' crops into the stage's aligned/ and unaligned/ (moved: same file system); the geometry they
    were cut with goes, so the stage's files are the unsharded stage's."""
    import os

    for folder in folders:
        for sub in (records.ALIGNED, records.UNALIGNED):
            for png in sorted((folder / sub).glob("*.png")):
                os.replace(png, work / sub / png.name)
    (work / ALIGN_GEOMETRY).unlink(missing_ok=True)


def _align_track(reader: VideoReader, source: Path, out_dir: Path, settings: AlignSettings, track: TrackInput) -> AlignResult:
    """Align one face track from its landmarks: no detection pass, its own fixed box, its frames only."""
    n_frames = int(track.end) - int(track.start)
    landmarks = np.asarray(track.landmarks, np.float64)
    found = np.asarray(track.detected, bool)
    if landmarks.shape != (n_frames, N_LANDMARKS, 2) or found.shape != (n_frames,) or n_frames < 1:
        raise InputError(f"face track {track.start}..{track.end}: landmarks {list(landmarks.shape)} do not match its frames")
    if not found.any():
        raise NoFaceError(f"{source}: the face track {track.start}..{track.end} has no detected frame")
    landmarks = fill_missing(landmarks, found)
    _prepare_crop_folders(out_dir)
    return _write_alignment(reader, source, out_dir, settings, landmarks, found, np.zeros(n_frames, bool),
                            [(0, n_frames)], "face track", first_frame=int(track.start))


def _write_alignment(reader: VideoReader, source: Path, out_dir: Path, settings: AlignSettings, landmarks: np.ndarray,
                     found: np.ndarray, multi_face: np.ndarray, segments: list[tuple[int, int]], backend_name: str,
                     first_frame: int = 0, first_pass: _FirstPassCrops | None = None,
                     timestamps: tuple[np.ndarray, np.ndarray] | None = None, cut_crops: bool = True) -> AlignResult:
    """From known landmarks: quads, the fixed box, transforms, the crops not cut yet (all of them without a
    first pass), the preview (unless the first pass drew it) and the record. Output frame i is source frame
    first_frame + i. `timestamps`: (pts, time_s) of the frames when a first pass has them."""
    info = reader.info
    n_frames = len(found)
    # Quads, the fixed box and the transforms, all from landmarks and geometry.
    quads = np.stack([ffhq_quad(lm, settings.quad_rule) for lm in landmarks])
    for start, end in segments:  # no smoothing window crosses a cut
        quads[start:end] = smooth_quads(quads[start:end], settings.smooth_quads)
    boxes = shot_boxes(quads, found, segments, settings.box)
    size = int(settings.crop_size)
    transforms = [frame_transform(landmarks[i], quads[i], boxes[i], size) for i in range(n_frames)]

    if not cut_crops:  # cut later in frame ranges (cut_crops_part), from this exact geometry
        records.save_crop_geometry(out_dir, quads, boxes)
    # Pass 2: the crops left (none when they are cut later, in parts), and the preview when no first pass drew it.
    if not cut_crops:
        left = []
    elif first_pass is None:
        left = list(range(n_frames))
    else:
        left = first_pass.left_over(quads, boxes)
    if first_pass is not None and left:
        log.info("align: %d of %d frames cut in a second pass (no face detected in them, or the box changed)",
                 len(left), n_frames)
    # The frames to read (the others are decoded, not converted, and reading stops after the last).
    wanted = [first_frame + i for i in left]
    with _writers(settings, out_dir, info, preview=settings.preview and first_pass is None) as (crops, preview):
        def draw(frame, i: int) -> None:
            preview.add(frame.image, frame.pts, landmarks[i], quads[i], boxes[i], bool(found[i]))

        read = _cut_frames(reader, source, wanted, first_frame, quads, boxes, settings, out_dir, crops,
                           "align: crops", draw if preview is not None else None)
    pts, times = timestamps if timestamps is not None else zip(*read)

    transforms_path = records.AlignRecord(
        rotation_deg=np.array([t.rotation_deg for t in transforms], dtype=np.float32),
        translation=np.stack([t.translation for t in transforms]).astype(np.float32),
        matrix=np.stack([t.matrix for t in transforms]).astype(np.float32),
        face_found=found.astype(bool),
        landmarks=landmarks.astype(np.float32),
        box_quad=boxes[0].astype(np.float32),
        box_quads=boxes.astype(np.float32),
        aligned_quads=quads.astype(np.float32),
        crop_size=np.int64(size),
        multi_face=np.asarray(multi_face, bool),
        pts=np.asarray(pts, np.int64),
        time_s=np.asarray(times, np.float64),
        shot_starts=np.array([start for start, _ in segments], dtype=np.int64),
    ).save(out_dir / records.TRANSFORMS)
    video_json = records.save_video_info(out_dir, info)
    n_found = int(found.sum())
    records.AlignInfo(backend=backend_name, n_frames=n_frames, n_faces_found=n_found, n_interpolated=n_frames - n_found,
                      n_multi_face=int(np.sum(multi_face))).save(out_dir)
    if n_found < n_frames:
        log.info("align: face missing in %d of %d frames; filled in from neighbours", n_frames - n_found, n_frames)
    return AlignResult(
        out_dir=out_dir, transforms_path=transforms_path, aligned_dir=out_dir / records.ALIGNED,
        unaligned_dir=out_dir / records.UNALIGNED, preview_path=out_dir / records.PREVIEW if settings.preview else None,
        video_json=video_json, n_frames=n_frames, n_faces_found=n_found,
        n_interpolated=n_frames - n_found, n_multi_face=int(np.sum(multi_face)),
        backend_used=backend_name, box_quad=boxes[0], box_quads=boxes,
    )
