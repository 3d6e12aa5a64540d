"""The run folder in code: every stage output's file name and one typed reader/writer for each.

Stages never open another stage's files by hand: they read and write through this module, so the run
folder (a public format, see docs/ARCHITECTURE.md) is described in one place. numpy only: no torch here.

    RUN/
      settings.toml, log.txt
      align/      transforms.npz (AlignRecord), aligned/%06d.png, unaligned/%06d.png, video.json, preview.mp4
      encode/     latents.npy                                   float32 [N, num_ws, w_dim]
      tune/       generator.safetensors, offsets.safetensors (HyperStyle), checkpoints/
      edit/       latents_<key>.npy (+ <file>.stylespace.json)
      smooth/     latents_<key>.npy, transforms.npz (TransformsRecord)
      stitch/     generator.safetensors (optional stage: STIT stitching tuning)
      render/     <key>/%06d.png, <key>.mp4, render.json (RenderInfo)
      composite/  <key>.mp4
      tracks.json (TracksRecord: shots and face tracks), tracks/<id>/ (one folder per face track)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from videdit.errors import InputError
from videdit.fileio import atomic_save, atomic_write_text

from videdit.layout import (  # noqa: F401  (the names are part of this module's interface)
    ALIGNED,
    CHECKPOINTS,
    GENERATOR,
    LATENTS,
    OFFSETS,
    PREVIEW,
    RECONSTRUCTION_KEY,
    RENDER_INFO,
    STAGE_ORDER,
    STYLESPACE_SUFFIX,
    TRACKS,
    TRACKS_DIR,
    TRANSFORMS,
    UNALIGNED,
    VIDEO_INFO,
    frame_name,
    latents_name,
    stitched_generator_name,
    styles_name,
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
        try:
            with np.load(path) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: not a readable transforms file ({type(err).__name__}); rerun that stage") from None
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


def latents_keys(folder: str | PathLike) -> list[str]:
    """Keys of the latents_<key>.npy files of an edit or smooth folder, reconstruction first."""
    keys = sorted(p.name[len("latents_"):-len(".npy")] for p in Path(folder).glob("latents_*.npy"))
    return sorted(keys, key=lambda k: k != RECONSTRUCTION_KEY)


def styles_keys(folder: str | PathLike) -> list[str]:
    """Keys of the styles_<key>.safetensors files (StyleSpace edits) of an edit or smooth folder."""
    return sorted(p.name[len("styles_"):-len(".safetensors")] for p in Path(folder).glob("styles_*.safetensors"))


def output_keys(folder: str | PathLike) -> list[str]:
    """Every output key of an edit or smooth folder (W+ latents and S edits), reconstruction first."""
    return latents_keys(folder) + [k for k in styles_keys(folder) if k not in latents_keys(folder)]


def stylespace_sidecar(latents_path: str | PathLike) -> Path:
    return Path(str(latents_path) + STYLESPACE_SUFFIX)


# --------------------------------------------------------------------------------------------------
# Render layout


@dataclass
class RenderInfo:
    """render/render.json: how the crop-level frames were made (composite and eval read it)."""

    resolution: int
    expand: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # left, right, top, bottom
    keys: list[str] = field(default_factory=list)
    num_frames: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # everything else render records

    def save(self, folder: str | PathLike) -> Path:
        data = dict(self.extra, resolution=self.resolution, expand=list(self.expand), keys=list(self.keys),
                    num_frames=self.num_frames)
        return atomic_write_text(Path(folder) / RENDER_INFO, json.dumps(data, indent=1))

    @classmethod
    def load(cls, folder: str | PathLike) -> "RenderInfo | None":
        path = Path(folder) / RENDER_INFO
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        known = {"resolution", "expand", "keys", "num_frames"}
        return cls(resolution=int(data.get("resolution", 0)), expand=list(data.get("expand", [0, 0, 0, 0])),
                   keys=list(data.get("keys", [])), num_frames=int(data.get("num_frames", 0)),
                   extra={k: v for k, v in data.items() if k not in known})


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

    def validate(self, where: str = "tracks.json") -> "TracksRecord":
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
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"{path}: not readable JSON ({type(err).__name__}); rerun `videdit faces`") from None
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


# --------------------------------------------------------------------------------------------------
# The run folder


class RunFolder:
    """Paths of one run folder's stage outputs. Pure path arithmetic plus the typed readers above."""

    def __init__(self, root: str | PathLike):
        self.root = Path(root)

    def stage(self, name: str) -> Path:
        if name not in STAGE_ORDER:
            raise ValueError(f"unknown stage {name!r}")
        return self.root / name

    # align
    @property
    def align(self) -> Path:
        return self.root / "align"

    def align_record(self) -> AlignRecord:
        return AlignRecord.load(self.align / TRANSFORMS)

    @property
    def aligned_frames(self) -> Path:
        return self.align / ALIGNED

    @property
    def unaligned_frames(self) -> Path:
        return self.align / UNALIGNED

    @property
    def video_info(self) -> Path:
        return self.align / VIDEO_INFO

    # encode
    @property
    def latents(self) -> Path:
        return self.root / "encode" / LATENTS

    # tune
    @property
    def generator(self) -> Path:
        return self.root / "tune" / GENERATOR

    @property
    def offsets(self) -> Path:
        return self.root / "tune" / OFFSETS

    # edit / smooth
    def edited_latents(self, key: str) -> Path:
        return self.root / "edit" / latents_name(key)

    def smoothed_latents(self, key: str) -> Path:
        return self.root / "smooth" / latents_name(key)

    @property
    def smoothed_transforms(self) -> Path:
        return self.root / "smooth" / TRANSFORMS

    # stitch / render / composite
    def stitched_generator(self, key: str) -> Path:
        """The stitch stage's generator for one W+ key."""
        return self.root / "stitch" / stitched_generator_name(key)

    @property
    def render(self) -> Path:
        return self.root / "render"

    def composite_video(self, key: str) -> Path:
        return self.root / "composite" / f"{key}.mp4"

    # shots and face tracks
    @property
    def tracks_json(self) -> Path:
        return self.root / TRACKS

    def tracks_record(self) -> TracksRecord:
        return TracksRecord.load(self.root / TRACKS)


@dataclass
class VideoResult:
    """What happened to one video: the record `Pipeline.run` returns and the engines collect."""

    input: Path
    run_dir: Path
    status: str = "ok"  # ok | failed
    error: str | None = None
    frames: int | None = None
    seconds: float = 0.0
    outputs: list[Path] = field(default_factory=list)
    stages: dict[str, str] = field(default_factory=dict)  # stage -> cached | ran

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["input"], d["run_dir"] = str(self.input), str(self.run_dir)
        d["outputs"] = [str(p) for p in self.outputs]
        return d


def record_json(obj: Any) -> str:
    """JSON of a dataclass record (paths as strings), for the small *.json files stages write."""
    data = asdict(obj) if hasattr(obj, "__dataclass_fields__") else obj
    return json.dumps(data, indent=1, default=str)
