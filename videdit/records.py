"""The run folder in code: one typed reader/writer for each file the stages and the run write.

Stages never open another stage's files by hand: they read and write through this module, with the names
of `videdit.layout`, so the run folder (a public format, docs/ARCHITECTURE.md) is described in one place.
numpy only: no torch here (video.json's VideoInfo comes from videdit.io). The runner's bookkeeping, the
lock and the log are read and written by videdit.runner, .runfolder and .runlog, their only users."""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from videdit import layout
from videdit.errors import InputError
from videdit.fileio import atomic_save, atomic_write_text

from videdit.layout import (  # noqa: F401  (the names are part of this module's interface)
    ALIGNED, CHECKPOINTS, GENERATOR, LATENTS, OFFSETS, PREVIEW, RECONSTRUCTION_KEY, RENDER_INFO, STAGE_ORDER, TRACKS,
    TRACKS_DIR, TRANSFORMS, UNALIGNED, VIDEO_INFO, frame_name, latents_name, stitched_generator_name, styles_name,
)


def frame_paths(folder: str | PathLike, count: int) -> list[Path]:
    """folder/000000.png ... for `count` frames; one InputError line when any is missing."""
    folder = Path(folder)
    paths = [folder / frame_name(i) for i in range(count)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{folder}: {len(missing)} of {count} frames missing (first: {missing[0]}); rerun the stage that writes it")
    return paths


def inverse_matrices(matrix: np.ndarray, dtype=np.float32) -> np.ndarray:
    """[N,3,3] inverses (what G.synthesis takes) of make_transform matrices, inverted in float64, as `dtype`."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 3 or matrix.shape[1:] != (3, 3):
        raise InputError(f"transforms must be [N,3,3] matrices, got {list(matrix.shape)}")
    return np.linalg.inv(matrix).astype(dtype)


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    return atomic_save(path, lambda tmp: np.savez(tmp, **arrays))


def save_crop_geometry(folder: Path, aligned_quads: np.ndarray, box_quads: np.ndarray) -> Path:
    """align.partial/crop_geometry.npz: the exact (float64) quads a sharded align's parts cut the crops with
    (transforms.npz keeps float32); removed when the parts are merged."""
    return _savez(Path(folder) / layout.ALIGN_GEOMETRY, {"aligned_quads": aligned_quads, "box_quads": box_quads})


def load_crop_geometry(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    data = _load_npz(Path(folder) / layout.ALIGN_GEOMETRY, "align's crop geometry is unreadable; rerun with --from align")
    return data["aligned_quads"], data["box_quads"]


def _load_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: {what} ({type(err).__name__})") from None


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{path}: not readable JSON ({type(err).__name__}); {what}") from None


# --------------------------------------------------------------------------------------------------
# Transforms


@dataclass
class TransformsRecord:
    """Per-frame Fourier-feature transforms: `matrix` = make_transform(translation, rotation_deg).

    face_found: frames where a face was detected (the others were filled in); all True when the file
    does not say (older runs, synthetic inputs).
    """

    matrix: np.ndarray | None = None  # f32 [N, 3, 3]
    face_found: np.ndarray | None = None  # bool [N]; filled with True on load when absent
    rotation_deg: np.ndarray | None = None  # f32 [N]
    translation: np.ndarray | None = None  # f32 [N, 2]

    _per_frame = ("matrix", "face_found", "rotation_deg", "translation", "landmarks")

    @property
    def n_frames(self) -> int:
        for name in self._per_frame:
            value = getattr(self, name, None)
            if value is not None:
                return len(value)
        return 0

    def inverse(self, dtype=np.float32) -> np.ndarray:
        """[N,3,3] inverses: what the synthesis network takes (float32 unless asked)."""
        return inverse_matrices(self.require("matrix").matrix, dtype)

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def save(self, path: str | PathLike) -> Path:
        return _savez(Path(path), self.arrays())

    @classmethod
    def load(cls, path: str | PathLike):
        path = Path(path)
        if path.is_dir():
            path = path / TRANSFORMS
        if not path.is_file():
            raise InputError(f"{path} is missing (run the stage that writes it first)")
        arrays = _load_npz(path, "not a readable transforms file; rerun that stage")
        per_frame = [k for k in cls._per_frame if k in arrays]
        if not per_frame:
            raise InputError(f"{path}: no per-frame arrays ({', '.join(cls._per_frame)}); rerun that stage")
        n = len(arrays[per_frame[0]])
        arrays.setdefault("face_found", np.ones(n, bool))
        arrays["face_found"] = np.asarray(arrays["face_found"], bool)
        if "crop_size" in arrays:
            arrays["crop_size"] = int(arrays["crop_size"])
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in arrays.items() if k in known}
        for f in fields(cls):
            values.setdefault(f.name, None)
        record = cls(**values)
        record.path = path
        for name, value in record.arrays().items():
            if name in ("crop_size", "box_quad", "shot_starts") or np.ndim(value) == 0:
                continue
            if len(value) != n:
                raise InputError(f"{path}: {name} has {len(value)} frames but {per_frame[0]} has {n}")
        return record

    def require(self, *names: str):
        """self, or one InputError line naming the arrays this file lacks."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            where = getattr(self, "path", "transforms record")
            raise InputError(f"{where}: lacks {', '.join(missing)} (made by an older videdit?); rerun that stage")
        return self


@dataclass
class AlignRecord(TransformsRecord):
    """align/transforms.npz: the transforms plus what align knows of each frame.

    landmarks f32 [N,68,2] (source-frame pixels), box_quads f32 [N,4,2] (each frame's fixed unaligned box:
    one per shot), box_quad f32 [4,2] (the first shot's box), aligned_quads f32 [N,4,2], crop_size,
    multi_face bool [N], pts int [N], time_s f64 [N], shot_starts int [S].
    """

    landmarks: np.ndarray | None = None
    box_quad: np.ndarray | None = None
    box_quads: np.ndarray | None = None
    aligned_quads: np.ndarray | None = None
    crop_size: int | None = None
    multi_face: np.ndarray | None = None
    pts: np.ndarray | None = None
    time_s: np.ndarray | None = None
    shot_starts: np.ndarray | None = None  # int [S]: first frame of each shot (0 first); absent = one shot

    def frame_boxes(self) -> np.ndarray:
        """float64 [N,4,2]: the unaligned box of every frame (files without box_quads: box_quad for all)."""
        if self.box_quads is not None:
            return np.asarray(self.box_quads, np.float64)
        if self.box_quad is None:
            raise InputError(f"{getattr(self, 'path', 'transforms record')}: lacks box_quad; rerun align")
        return np.broadcast_to(np.asarray(self.box_quad, np.float64), (self.n_frames, 4, 2)).copy()

    def segments(self) -> list[tuple[int, int]]:
        """Shots as half-open frame ranges tiling the video (one range when no shots were recorded)."""
        n = self.n_frames
        starts = [int(s) for s in (self.shot_starts if self.shot_starts is not None else [0])]
        return [(start, end) for start, end in zip(starts, starts[1:] + [n])]


# --------------------------------------------------------------------------------------------------
# Latents


def save_latents(path: str | PathLike, latents: np.ndarray) -> Path:
    latents = np.asarray(latents, dtype=np.float32)
    return atomic_save(Path(path), lambda tmp: np.save(tmp, latents))


def load_latents(path: str | PathLike, *, mmap: bool = False, num_frames: int | None = None) -> np.ndarray:
    """float32 [N, num_ws, w_dim] (memory-mapped when asked); one line when missing, unreadable or misshaped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} is missing (run the stage that writes it first)")
    try:
        latents = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable latents file ({type(err).__name__}); rerun that stage") from None
    if latents.ndim != 3 or latents.shape[0] == 0:
        raise InputError(f"{path}: latents must be [N, num_ws, w_dim] with N > 0, got {list(latents.shape)}")
    if num_frames is not None and latents.shape[0] != num_frames:
        raise InputError(f"{path}: {latents.shape[0]} frames of latents but {num_frames} transforms")
    return latents


def _keys(folder: str | PathLike, parse) -> list[str]:
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    return [key for key in map(parse, names) if key is not None]


def latents_keys(folder: str | PathLike) -> list[str]:
    """Keys of the latents_<key>.npy files of an edit or smooth folder, reconstruction first."""
    keys = _keys(folder, lambda name: None if name == LATENTS else layout.latents_key(name))  # not encode's
    return sorted(sorted(keys), key=lambda k: k != RECONSTRUCTION_KEY)


def styles_keys(folder: str | PathLike) -> list[str]:
    """Keys of the styles_<key>.safetensors files (StyleSpace edits) of an edit or smooth folder."""
    return sorted(_keys(folder, layout.styles_key))


def output_keys(folder: str | PathLike) -> list[str]:
    """Every output key of an edit or smooth folder (W+ latents and S edits), reconstruction first."""
    w_keys = latents_keys(folder)
    return w_keys + [k for k in styles_keys(folder) if k not in w_keys]


# --------------------------------------------------------------------------------------------------
# The small JSON records stages write about their run


class _JsonRecord:
    """A dataclass written as one JSON object (its fields in order) to FOLDER/FILE, atomically. `load` gives
    None when the file is absent (made by an older videdit, or the stage has not run) and ignores keys it
    does not know."""

    FILE: ClassVar[str]
    END: ClassVar[str] = ""  # after the JSON text

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def save(self, folder: str | PathLike) -> Path:
        return atomic_write_text(Path(folder) / self.FILE, json.dumps(self.to_json(), indent=1) + self.END)

    @classmethod
    def load(cls, folder: str | PathLike):
        path = Path(folder) / cls.FILE
        if not path.is_file():
            return None
        data = _read_json(path, "rerun the stage that writes it")
        if not isinstance(data, dict):
            raise InputError(f"{path}: not a JSON object; rerun the stage that writes it")
        missing = [f.name for f in fields(cls) if f.name not in data and f.default is f.default_factory is MISSING]
        if missing:
            raise InputError(f"{path}: lacks {', '.join(missing)}; rerun the stage that writes it")
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass
class AlignInfo(_JsonRecord):
    """align/align.json: how the faces were found (the landmark backend) and how many frames had one."""

    FILE: ClassVar[str] = layout.ALIGN_INFO
    END: ClassVar[str] = "\n"

    backend: str
    n_frames: int
    n_faces_found: int
    n_interpolated: int
    n_multi_face: int


@dataclass
class SmoothInfo(_JsonRecord):
    """smooth/smooth.json: the kernel, end rule and shots the smoothing used."""

    FILE: ClassVar[str] = layout.SMOOTH_INFO

    num_frames: int
    kernel: list[float]
    padding: str
    fine_layers_from: int
    keys: list[str]
    segments: list[list[int]] | None = None


@dataclass
class StitchInfo(_JsonRecord):
    """stitch/stitch.json: the keys stitched, their generators' file names and the per-step losses."""

    FILE: ClassVar[str] = layout.STITCH_INFO

    keys: list[str]
    settings: dict[str, Any]
    frames_tuned_on: int
    generators: dict[str, str]
    losses: dict[str, Any] = field(default_factory=dict)


@dataclass
class RenderInfo(_JsonRecord):
    """render/render.json: how the crop-level frames were made (composite and eval read it)."""

    FILE: ClassVar[str] = layout.RENDER_INFO

    num_frames: int = 0
    fps: str = ""
    resolution: int = 0
    expand: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # left, right, top, bottom
    feather: int = 0
    canvas_size: list[int] = field(default_factory=list)  # (width, height) of a rendered frame
    keys: list[str] = field(default_factory=list)
    weight_offsets: dict[str, Any] | None = None  # HyperStyle: per-frame weight offsets were applied
    side_by_side_columns: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, folder: str | PathLike) -> "RenderInfo | None":
        info = super().load(folder)
        if info is None:
            return None
        try:
            info.resolution, info.expand = int(info.resolution), [int(v) for v in info.expand]
        except (TypeError, ValueError):
            info.resolution = 0
        if len(info.expand) != 4 or info.resolution <= 0:
            raise InputError(f"{Path(folder) / cls.FILE} is not a render description; rerun render")
        return info


@dataclass
class CompositeInfo(_JsonRecord):
    """composite/composite.json: counts, settings, the seam factor per key and whether the audio was copied."""

    FILE: ClassVar[str] = layout.COMPOSITE_INFO
    END: ClassVar[str] = "\n"

    n_frames: int
    n_composited: int
    size: list[int]
    resolution: int
    expand: list[int]
    keys: list[str]
    tracks: int
    seam_factor: dict[str, float | None]
    seam_frames: dict[str, int]
    settings: dict[str, Any]
    audio_copied: bool | None = None  # None: written by a videdit that did not record it


@dataclass
class TuneNotes:
    """tune/tune.json (PTI) or tune/tuner.json (the other tuners): what the tuner did (steps, losses, ...);
    its keys depend on the tuner."""

    values: dict[str, Any]
    file: str = layout.TUNER_INFO

    def save(self, folder: str | PathLike) -> Path:
        return atomic_write_text(Path(folder) / self.file, json.dumps(self.values))

    @classmethod
    def load(cls, folder: str | PathLike) -> "TuneNotes | None":
        for name in (layout.TUNE_INFO, layout.TUNER_INFO):
            if (Path(folder) / name).is_file():
                return cls(_read_json(Path(folder) / name, "rerun tune"), name)
        return None


def save_video_info(folder: str | PathLike, info) -> Path:
    """align/video.json: the source's videdit.io.VideoInfo (fps, time base, size, rotation, colour, audio)."""
    return atomic_write_text(Path(folder) / VIDEO_INFO, json.dumps(info.to_dict(), indent=2) + "\n")


def load_video_info(folder: str | PathLike):
    """The VideoInfo align recorded, or None when the folder has none."""
    from videdit.io import VideoInfo

    path = Path(folder) / VIDEO_INFO
    if not path.is_file():
        return None
    try:
        return VideoInfo.from_dict(_read_json(path, "rerun align"))
    except (TypeError, ValueError, ZeroDivisionError, KeyError) as err:
        raise InputError(f"{path}: not a video description ({type(err).__name__}); rerun align") from None


def save_metrics(folder: str | PathLike, text: str) -> Path:
    """RUN/eval/metrics.json (or eval/against_*/, eval/first_N/): `videdit eval`'s metrics as strict JSON text."""
    return atomic_write_text(Path(folder) / layout.METRICS, text)


def load_metrics(run_or_file: str | PathLike) -> dict:
    """The metrics `videdit eval` wrote for a run folder (or a metrics file); one line when absent or broken."""
    path = Path(run_or_file)
    if path.is_dir():
        path = path / layout.EVAL_DIR / layout.METRICS
    if not path.is_file():
        raise InputError(f"{path} not found; run `videdit eval {path.parent.parent}` first")
    return _read_json(path, "run `videdit eval` again")


def save_settings_text(run_dir: str | PathLike, text: str) -> Path:
    """RUN/settings.toml, rewritten only when it changes (a rerun with the same settings leaves it alone)."""
    path = Path(run_dir) / layout.SETTINGS
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)
    return path


# --------------------------------------------------------------------------------------------------
# Shots and face tracks


@dataclass(frozen=True)
class TrackEntry:
    """One face track in tracks.json: frames [start, end) of shot number `shot`, person label `person`
    ("p1", "p2", ...), its files in RUN/`dir` (relative to the run folder)."""

    id: str
    person: str
    shot: int
    start: int
    end: int
    dir: str

    @property
    def n_frames(self) -> int:
        return self.end - self.start


def _int_field(entry: dict, key: str, where: str) -> int:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}: {key} must be an integer, got {value!r}")
    return value


@dataclass
class TracksRecord:
    """RUN/tracks.json: the video's shots and face tracks.

    {"shots": [{"start": int, "end": int}, ...],
     "tracks": [{"id": str, "person": str, "shot": int, "start": int, "end": int, "dir": str}, ...]}

    Frame ranges are half-open; the shots tile [0, N) in order; every track lies inside its shot;
    `dir` is relative to the run folder. Other keys are kept in `extra` (written back as they are).
    """

    shots: list[tuple[int, int]]
    tracks: list[TrackEntry] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return self.shots[-1][1] if self.shots else 0

    def people(self) -> list[str]:
        """Person labels in order (p1, p2, ..., by number)."""
        return sorted({t.person for t in self.tracks}, key=lambda p: (len(p), p))

    def validate(self, where: str = TRACKS) -> "TracksRecord":
        """self, or one InputError line saying what is wrong."""
        if not self.shots:
            raise InputError(f"{where}: no shots")
        position = 0
        for number, (start, end) in enumerate(self.shots):
            if start != position or end <= start:
                raise InputError(f"{where}: shot {number} is [{start}, {end}); shots must tile the video from "
                                 f"frame 0 in order, each at least one frame (expected a start of {position})")
            position = end
        seen = set()
        for track in self.tracks:
            if not track.id or track.id in seen:
                raise InputError(f"{where}: track id {track.id!r} is empty or used twice")
            seen.add(track.id)
            if not (track.person.startswith("p") and track.person[1:].isdigit()):
                raise InputError(f"{where}: track {track.id}: person {track.person!r} is not a label like p1")
            if not 0 <= track.shot < len(self.shots):
                raise InputError(f"{where}: track {track.id}: shot {track.shot} does not exist "
                                 f"({len(self.shots)} shots)")
            shot_start, shot_end = self.shots[track.shot]
            if not shot_start <= track.start < track.end <= shot_end:
                raise InputError(f"{where}: track {track.id}: frames [{track.start}, {track.end}) are not inside "
                                 f"its shot [{shot_start}, {shot_end})")
            folder = Path(track.dir)
            if folder.is_absolute() or ".." in folder.parts or not track.dir:
                raise InputError(f"{where}: track {track.id}: dir {track.dir!r} must be a folder inside the run folder")
        return self

    def to_json(self) -> dict[str, Any]:
        return dict(self.extra, shots=[{"start": int(s), "end": int(e)} for s, e in self.shots],
                    tracks=[asdict(t) for t in self.tracks])

    def save(self, run_dir: str | PathLike) -> Path:
        """Write RUN/tracks.json atomically (after validating)."""
        path = Path(run_dir) / TRACKS
        self.validate(str(path))
        return atomic_write_text(path, json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | PathLike) -> "TracksRecord":
        """Read RUN/tracks.json (a run folder or the file); one InputError line when missing or malformed."""
        path = Path(path)
        if path.is_dir():
            path = path / TRACKS
        if not path.is_file():
            raise InputError(f"{path} is missing (run `videdit faces` or the pipeline first)")
        data = _read_json(path, "rerun `videdit faces`")
        if not isinstance(data, dict) or not isinstance(data.get("shots"), list) \
                or not isinstance(data.get("tracks", []), list):
            raise InputError(f"{path}: needs a \"shots\" list and a \"tracks\" list")
        shots = []
        for number, entry in enumerate(data["shots"]):
            if not isinstance(entry, dict):
                raise InputError(f"{path}: shot {number} is not an object with start and end")
            where = f"{path}: shot {number}"
            shots.append((_int_field(entry, "start", where), _int_field(entry, "end", where)))
        tracks = []
        for number, entry in enumerate(data.get("tracks", [])):
            where = f"{path}: track {number}"
            if not isinstance(entry, dict):
                raise InputError(f"{where} is not an object")
            for key in ("id", "person", "dir"):
                if not isinstance(entry.get(key), str):
                    raise InputError(f"{where}: {key} must be a string, got {entry.get(key)!r}")
            tracks.append(TrackEntry(id=entry["id"], person=entry["person"], dir=entry["dir"],
                                     shot=_int_field(entry, "shot", where), start=_int_field(entry, "start", where),
                                     end=_int_field(entry, "end", where)))
        extra = {k: v for k, v in data.items() if k not in ("shots", "tracks")}
        return cls(shots=shots, tracks=tracks, extra=extra).validate(str(path))


def save_tracks_key(run_dir: str | PathLike, key: str) -> Path:
    """RUN/tracks.key: the digest of the video and settings RUN/tracks.json was found with."""
    return atomic_write_text(Path(run_dir) / layout.TRACKS_KEY, key)


def tracks_key(run_dir: str | PathLike) -> str | None:
    """What save_tracks_key wrote, or None when tracks.json or tracks.key is missing."""
    run_dir = Path(run_dir)
    path = run_dir / layout.TRACKS_KEY
    return path.read_text() if path.is_file() and (run_dir / TRACKS).is_file() else None


def save_track_arrays(run_dir: str | PathLike, entry: TrackEntry, arrays: dict[str, np.ndarray]) -> Path:
    """RUN/<track dir>/track.npz: a track's per-frame arrays (frames first)."""
    return _savez(Path(run_dir) / entry.dir / layout.TRACK_ARRAYS, arrays)


def load_track_arrays(run_dir: str | PathLike, entry: TrackEntry) -> dict[str, np.ndarray]:
    """What save_track_arrays wrote; one InputError line when missing, unreadable or not of the track's frames."""
    path = Path(run_dir) / entry.dir / layout.TRACK_ARRAYS
    arrays = _load_npz(path, "missing or unreadable; rerun `videdit faces`")
    frames = arrays.get("frames")
    if frames is None or len(frames) != entry.n_frames or int(frames[0]) != entry.start:
        raise InputError(f"{path}: its frames do not match track {entry.id} [{entry.start}, {entry.end}) "
                         f"of {TRACKS}; rerun `videdit faces`")
    return arrays


# --------------------------------------------------------------------------------------------------
# The run folder


class RunFolder:
    """Paths of one run folder's files (pure path arithmetic over videdit.layout's names)."""

    def __init__(self, root: str | PathLike):
        self.root = Path(root)

    def stage(self, name: str) -> Path:
        if name not in STAGE_ORDER:
            raise ValueError(f"unknown stage {name!r}")
        return self.root / name

    @property
    def align(self) -> Path:
        return self.stage("align")

    @property
    def unaligned_frames(self) -> Path:
        return self.align / UNALIGNED

    @property
    def latents(self) -> Path:
        return self.stage("encode") / LATENTS

    def smoothed_latents(self, key: str) -> Path:
        return self.stage("smooth") / latents_name(key)

    @property
    def smoothed_transforms(self) -> Path:
        return self.stage("smooth") / TRANSFORMS

    @property
    def render(self) -> Path:
        return self.stage("render")

    def composite_video(self, key: str, codec: str = "auto") -> Path:
        return self.stage("composite") / layout.composite_video_name(key, layout.output_suffix(codec))

    def published_video(self, video_stem: str, key: str, codec: str = "auto") -> Path:
        """RUN/<video stem>.<key>.mp4 (.mkv for FFV1): a final full-frame video."""
        return self.root / layout.published_name(video_stem, key, layout.output_suffix(codec))
