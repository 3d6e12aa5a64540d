"""Short face clips made from real photographs that installed packages ship, moved by a known camera path.

No face video ships anywhere offline, so the demo (and tests) build one: scikit-image's astronaut
portrait (Eileen Collins) or matplotlib's Grace Hopper photo, rotated and shifted frame by frame by
known amounts, with a tone as the audio track.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from videdit import records
from videdit.errors import VideditError


def astronaut() -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        raise VideditError("the demo photo comes from scikit-image: pip install scikit-image") from None
    return np.asarray(data.astronaut(), dtype=np.uint8)


def grace_hopper() -> np.ndarray:
    try:
        from matplotlib import cbook
    except ImportError:
        raise VideditError("this photo comes from matplotlib: pip install matplotlib") from None
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8)


@dataclass
class CameraPath:
    """Per-frame motion of the photo inside the frame: rotation (degrees, counter-clockwise as displayed)
    about `centre` (photo pixels) and a shift (frame pixels, x right, y down)."""

    rotation_deg: np.ndarray
    shift_px: np.ndarray  # [N, 2]
    centre: tuple[float, float]
    scale: float = 1.0

    @classmethod
    def gentle(cls, n_frames: int, centre: tuple[float, float], max_rotation: float = 6.0, max_shift: float = 12.0,
               scale: float = 1.0) -> "CameraPath":
        t = np.linspace(0.0, 1.0, n_frames)
        rot = max_rotation * np.sin(2 * math.pi * t)
        shift = np.stack([max_shift * np.sin(math.pi * t), 0.5 * max_shift * np.sin(2 * math.pi * t + 0.7)], axis=1)
        return cls(rot, shift, centre, scale)


@dataclass
class SyntheticClip:
    path: Path
    n_frames: int
    fps: Fraction
    size: tuple[int, int]
    camera: CameraPath
    has_audio: bool
    blank_frames: tuple[int, ...] = field(default_factory=tuple)


def place_photo(photo: np.ndarray, size: tuple[int, int], rotation_deg: float, shift_px: tuple[float, float],
                centre: tuple[float, float], scale: float = 1.0) -> np.ndarray:
    """Render the photo into a frame of `size` (W, H): the photo point `centre` lands at the frame centre
    plus `shift_px`, rotated counter-clockwise (as displayed) by `rotation_deg` and scaled by `scale`."""
    from PIL import Image

    w, h = size
    a = math.radians(rotation_deg)
    # Frame -> photo (inverse map, which PIL's AFFINE transform wants). Displayed CCW rotation with y down.
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    fx0, fy0 = w / 2 + shift_px[0], h / 2 + shift_px[1]
    # photo = R^-1 (frame - f0) + centre, with R = [[cos, sin], [-sin, cos]] for a CCW display rotation
    coeffs = (cos, -sin, centre[0] - cos * fx0 + sin * fy0, sin, cos, centre[1] - sin * fx0 - cos * fy0)
    img = Image.fromarray(photo).transform((w, h), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR,
                                           fillcolor=(40, 40, 40))
    return np.asarray(img, dtype=np.uint8)


def write_tone(path: Path, seconds: float, rate: int = 44100, freq: float = 440.0) -> Path:
    """An AAC audio file holding a tone: the audio track to be carried through the pipeline."""
    import av

    n = int(seconds * rate)
    t = np.arange(n) / rate
    samples = (0.2 * np.sin(2 * math.pi * freq * t)).astype(np.float32)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        chunk = 1024
        for start in range(0, n, chunk):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + chunk], format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def make_clip(path: str | Path, photo: np.ndarray | None = None, n_frames: int = 24, size: tuple[int, int] = (320, 256),
              fps: Fraction | int = 25, camera: CameraPath | None = None, face_centre: tuple[float, float] = (255.0, 110.0),
              scale: float = 1.0, audio: bool = True, blank_frames: tuple[int, ...] = ()) -> SyntheticClip:
    """Write an H.264 clip of the photo moving along `camera` (default: a gentle sway about the face)."""
    from videdit.io.writer import VideoWriter

    path = Path(path)
    photo = astronaut() if photo is None else photo
    fps = Fraction(fps)
    camera = camera or CameraPath.gentle(n_frames, face_centre, scale=scale)
    audio_path = None
    if audio:
        audio_path = write_tone(path.with_name(path.stem + ".tone.m4a"), seconds=n_frames / float(fps) + 0.2)
    try:
        with VideoWriter(path, fps=fps, size=size, audio_from=audio_path, crf=12) as writer:
            for i in range(n_frames):
                if i in blank_frames:
                    frame = np.full((size[1], size[0], 3), 40, np.uint8)
                else:
                    frame = place_photo(photo, size, float(camera.rotation_deg[i]), tuple(camera.shift_px[i]),
                                        camera.centre, camera.scale)
                writer.write(frame)
    finally:
        if audio_path is not None:
            audio_path.unlink(missing_ok=True)
    return SyntheticClip(path, n_frames, fps, size, camera, audio, tuple(blank_frames))


def write_tune_inputs(root: str | Path, G, n_frames: int, *, seed: int = 0, max_rotation_deg: float = 3.0,
                      max_shift: float = 0.03, face_centre: tuple[float, float] = (255.0, 110.0),
                      scale: float = 0.12):
    """What the tuning stages read, for a generator G and a known camera path (tests and benchmarks).

    root/align/unaligned/%06d.png: crops of the astronaut photo at G's resolution, rotated linearly from
    -max_rotation_deg to +max_rotation_deg and shifted from -max_shift to +max_shift image widths;
    root/align/transforms.npz: those transforms (make_transform matrices); root/latents.npy: G's latent
    of one random z (seeded) plus a little per-frame noise. Returns (align dir, latents path, matrices).
    """
    import torch
    from PIL import Image

    from videdit.networks.stylegan3 import make_transform

    root = Path(root)
    res = G.img_resolution
    align = records.RunFolder(root).align
    unaligned = align / records.UNALIGNED
    unaligned.mkdir(parents=True, exist_ok=True)
    rotation = np.linspace(-max_rotation_deg, max_rotation_deg, n_frames)
    translation = np.stack([np.linspace(-max_shift, max_shift, n_frames), np.zeros(n_frames)], axis=1)
    photo = astronaut()
    for i in range(n_frames):
        crop = place_photo(photo, (res, res), rotation[i], (translation[i, 0] * res, 0.0), face_centre, scale)
        Image.fromarray(crop).save(unaligned / records.frame_name(i), compress_level=1)
    matrix = np.stack([np.asarray(make_transform(tuple(translation[i]), rotation[i])) for i in range(n_frames)])
    records.TransformsRecord(rotation_deg=rotation, translation=translation, matrix=matrix,
                             face_found=np.ones(n_frames, bool)).save(align / records.TRANSFORMS)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim, generator=gen), None)
        ws = ws.repeat(n_frames, 1, 1) + 0.05 * torch.randn(n_frames, G.num_ws, G.w_dim, generator=gen)
    latents = records.save_latents(root / records.LATENTS, ws.numpy())
    return align, latents, matrix


# ----------------------------------------------------------------------------------------------
# Clips with several people and cuts (shots and face tracks): every face placed by a known map.

# Where the face is in each photo (pixel-centre coordinates): dlib's face box centre and side.
PHOTO_FACES = {"astronaut": ((222.5, 126.5), 87.0), "grace_hopper": ((268.5, 244.5), 215.0)}


def load_photo(name: str) -> np.ndarray:
    """One of the shipped portraits by name: "astronaut" or "grace_hopper"."""
    if name == "astronaut":
        return astronaut()
    if name == "grace_hopper":
        return grace_hopper()
    raise VideditError(f"unknown photo {name!r}; choose one of {', '.join(PHOTO_FACES)}")


@dataclass(frozen=True)
class FacePlacement:
    """One person in one shot: a square patch of `photo` around its face (`patch` face sizes wide),
    scaled so the face is `face_px` pixels, its face centre at `centre + t * drift_px` (frame pixels)
    in frame t of the shot, shown in the shot's frames [start, end) (end None: to the shot's end)."""

    photo: str
    face_px: float
    centre: tuple[float, float]
    drift_px: tuple[float, float] = (0.0, 0.0)
    start: int = 0
    end: int | None = None
    patch: float = 2.0


@dataclass(frozen=True)
class ShotSpec:
    """One shot: its length, the people in it, and its flat background colour."""

    n_frames: int
    faces: tuple[FacePlacement, ...] = ()
    background: tuple[int, int, int] = (60, 70, 80)


@dataclass
class SceneClip:
    """A clip written by make_scene_clip and what is in it.

    shots: [(start, end)] half-open frame ranges of the video. placements: per frame, (photo name,
    3x3 map from photo pixel-centre coordinates to frame pixel-centre coordinates) for every face shown.
    """

    path: Path
    size: tuple[int, int]
    fps: Fraction
    shots: list[tuple[int, int]]
    placements: list[list[tuple[str, np.ndarray]]]

    @property
    def n_frames(self) -> int:
        return len(self.placements)

    def photo_to_frame(self, frame: int, photo: str) -> np.ndarray | None:
        """Where `photo` is in `frame` (None when it is not shown there)."""
        for name, matrix in self.placements[frame]:
            if name == photo:
                return matrix
        return None

    def frames_with(self, photo: str) -> np.ndarray:
        """Indices of the frames that show `photo`."""
        return np.array([i for i in range(self.n_frames) if self.photo_to_frame(i, photo) is not None], dtype=int)


def _photo_patch(photo: np.ndarray, name: str, patch: float) -> tuple[np.ndarray, np.ndarray]:
    """The square of `patch` face sizes around the photo's face (outside the photo: black), and its
    top-left corner in photo pixels."""
    from PIL import Image

    (cx, cy), face = PHOTO_FACES[name]
    half = patch * face / 2
    corner = np.array([round(cx - half), round(cy - half)], dtype=np.float64)
    side = int(round(2 * half))
    box = (int(corner[0]), int(corner[1]), int(corner[0]) + side, int(corner[1]) + side)
    return np.asarray(Image.fromarray(photo).crop(box)), corner


def _paste_mapped(canvas: np.ndarray, image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """canvas with `image` drawn where `matrix` (image pixel-centre -> canvas pixel-centre) puts it."""
    from PIL import Image

    size = (canvas.shape[1], canvas.shape[0])
    # PIL maps output -> input in pixel-corner coordinates: conjugate by the half-pixel shift.
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    inverse = (shift @ np.linalg.inv(matrix) @ np.linalg.inv(shift))[:2].reshape(-1)

    def warp(picture: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(picture).transform(size, Image.Transform.AFFINE, tuple(inverse),
                                                             resample=Image.Resampling.BILINEAR, fillcolor=0))

    moved = warp(image).astype(np.float64)
    mask = warp(np.full(image.shape[:2], 255, np.uint8)).astype(np.float64)[..., None] / 255
    return np.rint(canvas * (1 - mask) + moved * mask).astype(np.uint8)


def make_scene_clip(path: str | Path, shots: list[ShotSpec], size: tuple[int, int] = (256, 192),
                    fps: Fraction | int = 25, crf: int = 12) -> SceneClip:
    """Write an H.264 clip of shots (hard cuts between them) of people from the shipped photos.

    Each person is a patch of its photo scaled and moved (no rotation) to a known place, so the truth
    of every face in every frame is known exactly: SceneClip.placements.
    """
    from videdit.io.writer import VideoWriter

    if not shots or any(shot.n_frames < 1 for shot in shots):
        raise VideditError("a scene clip needs at least one shot, each of at least one frame")
    path = Path(path)
    width, height = int(size[0]), int(size[1])
    photos = {name: load_photo(name) for name in sorted({f.photo for shot in shots for f in shot.faces})}
    patches = {}
    placements: list[list[tuple[str, np.ndarray]]] = []
    ranges = []
    with VideoWriter(path, fps=Fraction(fps), size=(width, height), crf=crf) as writer:
        for shot in shots:
            ranges.append((len(placements), len(placements) + shot.n_frames))
            for t in range(shot.n_frames):
                frame = np.empty((height, width, 3), np.uint8)
                frame[:] = shot.background
                shown = []
                for face in shot.faces:
                    if not face.start <= t < (shot.n_frames if face.end is None else face.end):
                        continue
                    key = (face.photo, face.patch)
                    if key not in patches:
                        patches[key] = _photo_patch(photos[face.photo], face.photo, face.patch)
                    patch, corner = patches[key]
                    (cx, cy), face_size = PHOTO_FACES[face.photo]
                    scale = face.face_px / face_size
                    target = np.asarray(face.centre, np.float64) + t * np.asarray(face.drift_px, np.float64)
                    photo_to_frame = np.array([[scale, 0, target[0] - scale * cx],
                                               [0, scale, target[1] - scale * cy], [0, 0, 1.0]])
                    patch_to_photo = np.array([[1, 0, corner[0]], [0, 1, corner[1]], [0, 0, 1.0]])
                    frame = _paste_mapped(frame, patch, photo_to_frame @ patch_to_photo)
                    shown.append((face.photo, photo_to_frame))
                writer.write(frame)
                placements.append(shown)
    return SceneClip(path, (width, height), Fraction(fps), ranges, placements)
